//! Access review campaigns: preview, start (by hand or by the schedule),
//! the reviewers' queues and decisions, reassignment, reminders and
//! escalations, and the close with its non-response defaults (held by the
//! mass-change guard when it would revoke too much). The rules live in
//! [`idgov_domain::review`].

use crate::App;
use crate::access::{OrgMap, is_staff, person};
use crate::error::AppError;
use crate::intake::Batch;
use chrono::{DateTime, Duration, Utc};
use idgov_authz::{Access, Role};
use idgov_domain::access::SECURITY_POOL;
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::grant::{GrantChange, RevokeReason};
use idgov_domain::guard::{self, HeldKind};
use idgov_domain::identity::Status;
use idgov_domain::policy::{CampaignDef, Policy, ReviewerStrategy};
use idgov_domain::review::{
    self, Campaign, CampaignState, CloseProgress, Context, Decided, ItemState, ReviewItem,
    Reviewer, Stage, Verdict,
};
use idgov_store::{ItemFilter, ScopedGrant, WriteTx};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Items read (or written) per step of close, report and export.
const PAGE: i64 = 1000;

/// People whose grants are read per step of generation (a preview's
/// page; a generation's first step).
const PEOPLE_PAGE: i64 = 200;

/// Bounds of a generation's step, in people; within them a step takes as
/// many as hold the writer for about [`crate::policy::STEP_TARGET`]
/// ([`crate::steps::StepSize`]).
pub const GENERATION_STEP_MIN: u64 = 10;
pub const GENERATION_STEP_MAX: u64 = 2_000;

/// Bounds of a close's step, in items given their default (it starts at
/// [`PAGE`]).
pub const CLOSE_STEP_MIN: u64 = 50;
pub const CLOSE_STEP_MAX: u64 = 4_000;

/// What one step of a generation did.
enum Step {
    /// Wrote a page, holding the writer this long; more follow.
    Wrote(std::time::Duration),
    /// Another replica wrote from this cursor on: read again from there.
    Moved(String),
    /// The campaign is open (or was already past starting).
    Finished(Box<Campaign>),
}

/// A page of a generation, read and planned outside the writer.
#[derive(Default)]
struct Ahead {
    /// The audit head before the page was read.
    read_at: i64,
    /// The grants in scope.
    page: Vec<ScopedGrant>,
    /// The items they become, as of `read_at`.
    items: Vec<ReviewItem>,
    /// The last person of the page; `None`: nobody is left.
    last: Option<String>,
    /// The people the page was asked for (fewer only at the end).
    asked: u64,
}

/// What every page of one generation is planned against.
#[derive(Clone, Copy)]
struct PlanAgainst<'a> {
    /// The campaign.
    id: &'a str,
    def: &'a CampaignDef,
    /// The entitlements in its scope.
    ents: &'a [String],
    peers: &'a Peers,
    /// Whether any item was ever decided (asked once per generation).
    decided_ever: bool,
}

/// People kept for reviewer routing across the pages of one generation.
const ORG_CACHE: usize = 50_000;

/// Active people per (department, title), and holders per (department,
/// title, entitlement).
type Peers = (
    HashMap<(String, String), i64>,
    HashMap<(String, String, String), i64>,
);

/// What a campaign would hold, without writing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub definition_id: String,
    pub items: u64,
    pub people: u64,
    pub by_level: BTreeMap<String, u64>,
    /// Reviewers with the most items first.
    pub by_reviewer: Vec<(String, u64)>,
}

/// One decision of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDecision {
    pub item_id: String,
    pub verdict: Verdict,
    pub justification: String,
}

/// What became of one decision of a batch.
#[derive(Debug)]
pub struct ItemOutcome {
    pub item_id: String,
    pub result: Result<ReviewItem, AppError>,
}

/// How a close ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseOutcome {
    pub campaign: Campaign,
    pub defaulted: u64,
    pub revoked: u64,
    pub superseded: u64,
    /// The close was held by the guard: nothing applied.
    pub held_change_id: Option<String>,
    pub guard: Option<guard::Verdict>,
}

/// A campaign report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub campaign_id: String,
    pub items: u64,
    pub decided: u64,
    pub by_state: BTreeMap<String, u64>,
    pub reviewers: Vec<ReviewerReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReviewerReport {
    pub reviewer: String,
    pub items: u64,
    pub open: u64,
    pub certified: u64,
    pub revoked: u64,
    /// Share of their decisions that certified (1.0: approved everything).
    pub approve_rate: f64,
    /// Median seconds between two of their decisions.
    pub median_seconds_per_decision: Option<f64>,
    /// Decisions made within a second of the previous one (bulk).
    pub bulk_decisions: u64,
    /// Decisions on items whose context the web app never showed the
    /// reviewer before they decided (e.g. decided in bulk through the API).
    pub decided_without_opening: u64,
}

/// What the staged close of a held campaign keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StagedClose {
    pub campaign_id: String,
}

impl App {
    fn campaign_def(&self, id: &str) -> Result<CampaignDef, AppError> {
        self.policy()
            .policy
            .campaigns
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .policy()
                    .policy
                    .campaigns
                    .iter()
                    .map(|c| c.id.clone())
                    .collect();
                AppError::not_found(format!(
                    "the policy defines no campaign {}; defined: {}",
                    idgov_domain::error::echo(id),
                    if known.is_empty() {
                        "none (add [[campaigns]] to the policy)".into()
                    } else {
                        known.join(", ")
                    }
                ))
            })
    }

    /// Managers and availability of the people around `start`, read in
    /// batches level by level.
    pub(crate) async fn org_of(
        &self,
        tx: &mut WriteTx,
        start: Vec<String>,
    ) -> Result<OrgMap, AppError> {
        let mut org = OrgMap(HashMap::new());
        self.org_into(tx, &mut org, start).await?;
        Ok(org)
    }

    /// Adds the people around `start` to `org` (those not there yet).
    async fn org_into(
        &self,
        tx: &mut WriteTx,
        org: &mut OrgMap,
        start: Vec<String>,
    ) -> Result<(), AppError> {
        let known = &mut org.0;
        let mut frontier: Vec<String> = start;
        for _ in 0..32 {
            frontier.sort();
            frontier.dedup();
            frontier.retain(|id| !known.contains_key(id));
            if frontier.is_empty() {
                break;
            }
            let people = tx.people_by_ids(&frontier).await?;
            let mut next = Vec::new();
            for p in people {
                if let Some(m) = p.attrs.manager_id.clone() {
                    next.push(m);
                }
                known.insert(p.employee_id.clone(), p);
            }
            frontier = next;
        }
        Ok(())
    }

    /// The items a page of grants becomes.
    #[allow(clippy::too_many_arguments)]
    async fn plan_items(
        &self,
        tx: &mut WriteTx,
        def: &CampaignDef,
        mover: bool,
        campaign_id: &str,
        page: &[ScopedGrant],
        peers: &Peers,
        org: &mut OrgMap,
        decided_ever: Option<bool>,
    ) -> Result<Vec<ReviewItem>, AppError> {
        let policy = self.policy();
        let pol = &policy.policy;
        // The people a review may route to (the holders themselves are
        // never their own reviewers and need not be read).
        let mut start: Vec<String> = page.iter().filter_map(|g| g.manager_id.clone()).collect();
        start.extend(
            page.iter()
                .filter_map(|g| pol.entitlements.get(&g.grant.entitlement_id))
                .map(|e| e.owner.clone()),
        );
        start.extend(pol.fallback_reviewer.clone());
        // The people above repeat from page to page (managers, owners): the
        // cache keeps them, bounded.
        if org.0.len() > ORG_CACHE {
            org.0.clear();
        }
        self.org_into(tx, org, start).await?;
        let org = &*org;
        let ids: Vec<String> = page.iter().map(|g| g.grant.id.clone()).collect();
        // A store where nothing was ever decided has no last decisions
        // (`decided_ever`: known to the caller, e.g. a generation asks once).
        let decided_ever = match decided_ever {
            Some(d) => d,
            None => tx.any_decided_item().await?,
        };
        let last = if decided_ever {
            tx.last_reviews(&ids).await?
        } else {
            HashMap::new()
        };
        let mut items = Vec::with_capacity(page.len());
        for g in page {
            let Some(ent) = pol.entitlements.get(&g.grant.entitlement_id) else {
                continue;
            };
            let class = ent.classification;
            let strategy = if mover {
                ReviewerStrategy::Manager
            } else {
                def.strategy_for(class)
            };
            let stage = match strategy {
                ReviewerStrategy::Owner => Stage::Owner,
                _ => Stage::Manager,
            };
            let (reviewer, note) = review::resolve_reviewer(
                stage,
                &g.grant.employee_id,
                g.manager_id.as_deref(),
                &ent.owner,
                &g.grant.approvers,
                None,
                pol.fallback_reviewer.as_deref(),
                org,
            );
            let key = (g.department.clone(), g.title.clone());
            let total = (peers.0.get(&key).copied().unwrap_or(1) - 1).max(0);
            let holding = (peers
                .1
                .get(&(g.department.clone(), g.title.clone(), ent.id.clone()))
                .copied()
                .unwrap_or(1)
                - 1)
            .max(0);
            let last_review = last.get(&g.grant.id).copied();
            let (recommendation, reason) = review::recommend(&Context {
                source: g.grant.source,
                source_ref: &g.grant.source_ref,
                review_pending: g.grant.review_pending,
                approvers: &g.grant.approvers,
                last_decision: last_review.map(|l| l.0),
                peers_holding: holding,
                peers_total: total,
                classification: class,
            });
            items.push(ReviewItem {
                id: format!("rvi-{}", uuid::Uuid::now_v7().simple()),
                campaign_id: campaign_id.to_string(),
                grant_id: g.grant.id.clone(),
                employee_id: g.grant.employee_id.clone(),
                entitlement_id: ent.id.clone(),
                classification: class,
                source: g.grant.source,
                source_ref: g.grant.source_ref.clone(),
                granted_at: g.grant.granted_at,
                approvers: g.grant.approvers.clone(),
                last_decision: last_review.map(|l| l.0),
                last_reviewed_at: last_review.map(|l| l.1),
                peers_holding: holding,
                peers_total: total,
                recommendation,
                reason,
                strategy,
                stage,
                reviewer,
                note,
                state: ItemState::Open,
                decided_by: None,
                decided_at: None,
                justification: String::new(),
                first_stage_by: None,
                version: 0,
            });
        }
        Ok(items)
    }

    /// What starting `definition_id` now would create; nothing is written.
    pub async fn preview_campaign(&self, definition_id: &str) -> Result<Preview, AppError> {
        let def = self.campaign_def(definition_id)?;
        let policy = self.policy();
        let ents: Vec<String> = def
            .entitlements(&policy.policy)
            .iter()
            .map(|e| e.id.clone())
            .collect();
        // One read-only transaction: a consistent count that never holds
        // the writer; nothing is written.
        let mut tx = self.store.begin_read().await?;
        let peers = tx.peer_counts(&ents).await?;
        let mut org = OrgMap(HashMap::new());
        let mut out = Preview {
            definition_id: def.id.clone(),
            ..Preview::default()
        };
        let mut people = BTreeSet::new();
        let mut reviewers: HashMap<String, u64> = HashMap::new();
        let mut after = String::new();
        loop {
            let (page, last) = tx.grants_in_scope(&ents, &after, PEOPLE_PAGE).await?;
            let Some(last) = last else { break };
            after = last;
            let page = in_scope(&policy.policy, &def, page);
            for i in self
                .plan_items(&mut tx, &def, false, "", &page, &peers, &mut org, None)
                .await?
            {
                out.items += 1;
                people.insert(i.employee_id.clone());
                *out.by_level
                    .entry(i.classification.to_string())
                    .or_default() += 1;
                *reviewers.entry(i.reviewer).or_default() += 1;
            }
        }
        tx.rollback().await?;
        out.people = people.len() as u64;
        let mut by: Vec<(String, u64)> = reviewers.into_iter().collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        by.truncate(50);
        out.by_reviewer = by;
        Ok(out)
    }

    /// Starts a campaign of `definition_id` by hand; refused while one of
    /// the same definition is open (its items would be reviewed twice).
    pub async fn start_campaign(
        &self,
        definition_id: &str,
        actor: &str,
    ) -> Result<Campaign, AppError> {
        self.campaign_def(definition_id)?;
        if let Some(open) = self.store.open_campaign_of(definition_id).await? {
            return Err(AppError::precondition(format!(
                "campaign {} of {definition_id} is {} until {}; close it first (idgov campaign close {})",
                open.id, open.state, open.due_at, open.id
            )));
        }
        let id = format!("cmp-{}", uuid::Uuid::now_v7().simple());
        self.start_campaign_with_id(definition_id, &id, actor)
            .await?
            .ok_or_else(|| AppError::precondition("a campaign with this id exists"))
    }

    /// Starts a campaign under `id`; None when a campaign with that id
    /// exists already (another replica started it: exactly once). The items
    /// are generated a page of people per transaction, so HR events (a
    /// leaver) never wait for more than one page.
    pub(crate) async fn start_campaign_with_id(
        &self,
        definition_id: &str,
        id: &str,
        actor: &str,
    ) -> Result<Option<Campaign>, AppError> {
        let def = self.campaign_def(definition_id)?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let policy = self.policy_for(&mut tx);
        let campaign = Campaign {
            id: id.to_string(),
            definition_id: def.id.clone(),
            name: if def.name.is_empty() {
                def.id.clone()
            } else {
                def.name.clone()
            },
            definition: def.clone(),
            policy_version: policy.version,
            state: CampaignState::Starting,
            started_at: now,
            started_by: actor.to_string(),
            due_at: now + Duration::days(i64::from(def.duration_days)),
            closed_at: None,
            reminded_at: None,
            escalated_at: None,
            mover: false,
            items: 0,
            held_change_id: None,
            generated_after: Some(String::new()),
            closing: None,
        };
        if !tx.insert_campaign(&campaign).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit(now).await?;
        Ok(Some(self.generate(id).await?))
    }

    /// Generates the items of a starting campaign from where it stopped,
    /// one page of people per transaction; resumable after a restart and
    /// safe with another replica doing the same (each page reads the
    /// campaign's cursor under its lock). Returns the campaign once open.
    pub(crate) async fn generate(&self, id: &str) -> Result<Campaign, AppError> {
        let first = self.campaign(id).await?;
        let def = first.definition.clone();
        let policy = self.policy();
        let ents: Vec<String> = def
            .entitlements(&policy.policy)
            .iter()
            .map(|e| e.id.clone())
            .collect();
        self.store.refresh_statistics().await;
        let mut rtx = self.store.begin_read().await?;
        let peers = rtx.peer_counts(&ents).await?;
        // Asked once: the items a generation writes are undecided, and a
        // decision elsewhere while it runs is as if made after it.
        let decided_ever = rtx.any_decided_item().await?;
        rtx.rollback().await?;
        // Each step writes one page of people while the next page is read
        // and planned beside it (outside the writer, on the read path). A
        // page planned ahead is written as planned when nothing changed
        // since it was read (the audit head has not moved); otherwise it is
        // planned again inside the writer from what is true now. It is
        // thrown away if another replica moved the cursor.
        //
        // A step takes as many people as hold the writer for about the
        // step target; the page read beside a write is sized by the steps
        // before it.
        let mut size = crate::steps::StepSize::new(
            PEOPLE_PAGE as u64,
            GENERATION_STEP_MIN,
            GENERATION_STEP_MAX,
            self.step_target(),
        );
        let plan = PlanAgainst {
            id,
            def: &def,
            ents: &ents,
            peers: &peers,
            decided_ever,
        };
        let mut org = (0i64, OrgMap(HashMap::new()));
        let mut after = first.generated_after.clone().unwrap_or_default();
        let mut ahead = self.plan_ahead(&plan, &after, &mut org, size.get()).await?;
        let mut pages = 1u64;
        loop {
            if pages.is_multiple_of(crate::policy::STATISTICS_EVERY * 5) {
                self.store.refresh_statistics().await;
            }
            pages += 1;
            let Ahead {
                read_at,
                page,
                items: planned,
                last,
                asked,
            } = ahead;
            // The write steps of this run (of this process, after a
            // resume), this one included: the `campaign.started` event
            // records them.
            let steps = pages - 1;
            let write = async {
                let now = self.now();
                let mut tx = self.store.begin().await?;
                // The writer is held from here (a wait for it is not counted).
                let began = std::time::Instant::now();
                let Some(mut c) = tx.campaign_for_update(id).await? else {
                    return Err(AppError::not_found(format!("campaign {id} is gone")));
                };
                if c.state != CampaignState::Starting {
                    tx.rollback().await?;
                    return Ok(Step::Finished(Box::new(c)));
                }
                let cursor = c.generated_after.clone().unwrap_or_default();
                if cursor != after {
                    tx.rollback().await?;
                    return Ok(Step::Moved(cursor));
                }
                let done = last.is_none();
                match &last {
                    Some(last) => {
                        // Every change appends to the audit chain: when its
                        // head has not moved since the page was read, the
                        // plan still holds (every grant read is active,
                        // every reviewer as read). (A change committed after
                        // this check is like one committed after the page
                        // is written: its items are superseded or moved.)
                        let items = if self.store.audit_head().await?.0 == read_at {
                            planned
                        } else {
                            let ids: Vec<String> =
                                page.iter().map(|g| g.grant.id.clone()).collect();
                            let live = tx.active_grant_ids(&ids).await?;
                            let page: Vec<ScopedGrant> = page
                                .into_iter()
                                .filter(|g| live.contains(&g.grant.id))
                                .collect();
                            let mut fresh = OrgMap(HashMap::new());
                            self.plan_items(
                                &mut tx,
                                &def,
                                false,
                                id,
                                &page,
                                &peers,
                                &mut fresh,
                                Some(decided_ever),
                            )
                            .await?
                        };
                        tx.insert_items(&items).await?;
                        c.items += items.len() as i64;
                        c.generated_after = Some(last.clone());
                    }
                    None => {
                        // A reviewer who left while the pages were written
                        // (their leaver transaction did not see the items
                        // still being written) hands them on now.
                        let departed: Vec<(String, Option<String>, String)> = tx
                            .departed_reviewers(id)
                            .await?
                            .into_iter()
                            .map(|(who, manager)| (who, manager, "system:idgov".to_string()))
                            .collect();
                        items_after_leavers(
                            &mut tx,
                            &departed,
                            policy.policy.fallback_reviewer.as_deref(),
                        )
                        .await?;
                        c.state = CampaignState::Open;
                        c.generated_after = None;
                        tx.audit(AuditEntry::new(
                            &c.started_by,
                            Action::CampaignStarted,
                            Target::Campaign(id.to_string()),
                            json!({
                                "definition": def, "policy_version": c.policy_version, "items": c.items,
                                "due_at": c.due_at, "steps": steps,
                            }),
                        ));
                    }
                }
                tx.update_campaign(&c).await?;
                tx.commit(now).await?;
                Ok(if done {
                    Step::Finished(Box::new(c))
                } else {
                    Step::Wrote(began.elapsed())
                })
            };
            let next_size = size.get();
            let read_next = async {
                match &last {
                    Some(l) => Some(self.plan_ahead(&plan, l, &mut org, next_size).await),
                    None => None,
                }
            };
            let (step, next) = tokio::join!(write, read_next);
            match step? {
                Step::Finished(c) => {
                    if c.state == CampaignState::Open {
                        tracing::info!(campaign = id, items = c.items, "campaign started");
                    }
                    return Ok(*c);
                }
                Step::Wrote(took) => {
                    // The page was asked for beside the step before, at
                    // the size then.
                    size.record_asked(asked, asked, took);
                    after = last.unwrap_or_default();
                    ahead = match next {
                        Some(n) => n?,
                        None => Ahead::default(),
                    };
                    self.between_steps("the campaign's generation", None)
                        .await?;
                }
                Step::Moved(cursor) => {
                    after = cursor;
                    ahead = self.plan_ahead(&plan, &after, &mut org, size.get()).await?;
                }
            }
        }
    }

    /// The audit head, then the page of grants in scope after `after` and
    /// the items it becomes: read and planned outside the writer, with the
    /// position that tells whether anything changed since. `org` caches
    /// the people around the pages, valid while the audit head stays where
    /// it says; a move empties it.
    async fn plan_ahead(
        &self,
        plan: &PlanAgainst<'_>,
        after: &str,
        org: &mut (i64, OrgMap),
        people: u64,
    ) -> Result<Ahead, AppError> {
        let PlanAgainst {
            id,
            def,
            ents,
            peers,
            decided_ever,
        } = *plan;
        let read_at = self.store.audit_head().await?.0;
        if org.0 != read_at {
            org.1.0.clear();
            org.0 = read_at;
        }
        let asked = i64::try_from(people).unwrap_or(PEOPLE_PAGE);
        let (page, last) = self.store.grants_in_scope(ents, after, asked).await?;
        let page = in_scope(&self.policy().policy, def, page);
        let items = if page.is_empty() {
            Vec::new()
        } else {
            let mut rtx = self.store.begin_read().await?;
            let items = self
                .plan_items(
                    &mut rtx,
                    def,
                    false,
                    id,
                    &page,
                    peers,
                    &mut org.1,
                    Some(decided_ever),
                )
                .await?;
            rtx.rollback().await?;
            items
        };
        Ok(Ahead {
            read_at,
            page,
            items,
            last,
            asked: people,
        })
    }

    pub async fn campaign(&self, id: &str) -> Result<Campaign, AppError> {
        self.store.get_campaign(id).await?.ok_or_else(|| {
            AppError::not_found(format!(
                "there is no campaign {}",
                idgov_domain::error::echo(id)
            ))
        })
    }

    pub async fn campaigns(
        &self,
        open_only: bool,
        before: &str,
        limit: i64,
    ) -> Result<Vec<Campaign>, AppError> {
        Ok(self.store.list_campaigns(open_only, before, limit).await?)
    }

    /// Review items: a reviewer's own queue (`mine`), or, for staff
    /// readers, any campaign's items.
    #[allow(clippy::too_many_arguments)]
    pub async fn review_items(
        &self,
        access: &Access,
        mine: bool,
        campaign_id: Option<String>,
        state: Option<ItemState>,
        employee_id: Option<String>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ReviewItem>, AppError> {
        let reader = is_staff(
            access,
            &[Role::ItAdmin, Role::SecurityOfficer, Role::Auditor],
        );
        let mut filter = ItemFilter {
            campaign_id,
            state,
            employee_id,
            ..ItemFilter::default()
        };
        if mine || !reader {
            // A reviewer's queue holds what they can decide now.
            filter.ready_only = true;
            let me = person(access)?.to_string();
            filter.reviewers = vec![me];
            if access.caller.roles.contains(&Role::SecurityOfficer) {
                filter.reviewers.push(SECURITY_POOL.to_string());
            }
        }
        Ok(self.store.list_items(&filter, after, limit).await?)
    }

    /// One review item, if the caller may see it: staff readers see any;
    /// a reviewer the items assigned to them (a security officer also the
    /// security pool's). Anyone else learns nothing: unknown and not yours
    /// look the same.
    pub async fn review_item(&self, access: &Access, id: &str) -> Result<ReviewItem, AppError> {
        let hidden = || AppError::PermissionDenied(idgov_authz::out_of_reach(access).reason);
        let reader = is_staff(
            access,
            &[Role::ItAdmin, Role::SecurityOfficer, Role::Auditor],
        );
        if id.is_empty() || id.len() > 64 {
            return Err(hidden());
        }
        let item = self.store.get_item(id).await?;
        match item {
            Some(i) if reader => Ok(i),
            None if reader => Err(AppError::not_found(format!(
                "there is no review item {}",
                idgov_domain::error::echo(id)
            ))),
            Some(i) => {
                let me = person(access)?;
                let pool = access.caller.roles.contains(&Role::SecurityOfficer)
                    && i.reviewer == SECURITY_POOL;
                if i.reviewer == me || pool {
                    Ok(i)
                } else {
                    Err(hidden())
                }
            }
            None => Err(hidden()),
        }
    }

    /// Records that the web app showed these items' context to their
    /// reviewer (for the "decided without opening" indicator).
    pub async fn items_shown(&self, ids: &[String]) -> Result<(), AppError> {
        Ok(self.store.mark_items_shown(ids, self.now()).await?)
    }

    /// Decides many items in one call; each is checked on its own and the
    /// valid ones are applied together (revocations reach the outbox in
    /// the same transaction).
    pub async fn decide_items(
        &self,
        access: &Access,
        decisions: Vec<ItemDecision>,
    ) -> Result<Vec<ItemOutcome>, AppError> {
        let me = person(access)?.to_string();
        if decisions.is_empty() {
            return Err(AppError::invalid("decisions", "give at least one decision"));
        }
        if decisions.len() > 1000 {
            return Err(AppError::invalid(
                "decisions",
                "at most 1,000 decisions per call",
            ));
        }
        let person = self.store.get_identity(&me).await?;
        if person.as_ref().map(|p| p.status) != Some(Status::Active) {
            return Err(AppError::PermissionDenied(format!(
                "{me} is not an active person; only active people review access"
            )));
        }
        let who = Reviewer {
            employee_id: me.clone(),
            security_officer: access.caller.roles.contains(&Role::SecurityOfficer),
        };
        let actor = access.caller.actor();
        let (who, actor, decisions) = (&who, &actor, &decisions);
        // One transaction for every decision; the server's own concurrency
        // (a deadlock with a close taking the same rows, a busy writer) is
        // retried here, so the caller never resends for it.
        let (outcomes, queued) = self
            .retrying(|| async move { self.decide_items_once(who, actor, decisions).await })
            .await?;
        if queued > 0 {
            self.wake_provisioning();
        }
        Ok(outcomes)
    }

    /// [`Self::decide_items`] in one transaction: the outcome of each
    /// decision, and how many directory operations it queued. A decision
    /// refused by the rules is an outcome of its own; a store error ends
    /// the whole call (on PostgreSQL the transaction can run nothing more
    /// after one: going on made every later statement fail with "current
    /// transaction is aborted", which hid the error and could not be
    /// retried).
    async fn decide_items_once(
        &self,
        who: &Reviewer,
        actor: &str,
        decisions: &[ItemDecision],
    ) -> Result<(Vec<ItemOutcome>, usize), AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let policy = self.policy_for(&mut tx);
        let mut outcomes = Vec::with_capacity(decisions.len());
        let mut revoke: Vec<ReviewItem> = Vec::new();
        let mut cleared: Vec<String> = Vec::new();
        let mut next_stage: Vec<ReviewItem> = Vec::new();
        for d in decisions {
            let result = async {
                let missing = || {
                    AppError::not_found(format!(
                        "there is no review item {}",
                        idgov_domain::error::echo(&d.item_id)
                    ))
                };
                // The campaign is locked before its item, in the order a
                // close takes them (a decision that took the item first
                // and a close step that took the campaign first waited on
                // each other until PostgreSQL broke the deadlock). An
                // item's campaign never changes, so it is read unlocked.
                let campaign_id = match self.store.get_item(&d.item_id).await? {
                    Some(seen) => seen.campaign_id,
                    None => return Err(missing()),
                };
                let open = tx.campaign_for_update(&campaign_id).await?;
                let Some(mut item) = tx.item_for_update(&d.item_id).await? else {
                    return Err(missing());
                };
                if open.as_ref().map(|c| c.state) != Some(CampaignState::Open) {
                    return Err(AppError::precondition(format!(
                        "campaign {} is closed",
                        item.campaign_id
                    )));
                }
                let outcome = review::decide(&mut item, who, d.verdict, &d.justification, now)?;
                if !tx.update_item(&mut item).await? {
                    return Err(AppError::precondition(
                        "this item was decided meanwhile; read it again",
                    ));
                }
                let (action, detail) = match outcome {
                    Decided::NextStage => (Action::ReviewStageCertified, json!({"next": "owner"})),
                    Decided::Certified => (Action::ReviewCertified, json!({})),
                    Decided::Revoked => (Action::ReviewRevoked, json!({})),
                };
                let mut detail = detail;
                detail["campaign"] = json!(item.campaign_id);
                detail["grant"] = json!(item.grant_id);
                detail["employee"] = json!(item.employee_id);
                detail["entitlement"] = json!(item.entitlement_id);
                detail["justification"] = json!(item.justification);
                tx.audit(AuditEntry::new(
                    actor,
                    action,
                    Target::ReviewItem(item.id.clone()),
                    detail,
                ));
                match outcome {
                    Decided::Revoked => revoke.push(item.clone()),
                    Decided::Certified => cleared.push(item.grant_id.clone()),
                    Decided::NextStage => next_stage.push(item.clone()),
                }
                Ok(item)
            }
            .await;
            let result = match result {
                // The transaction may be unusable: fail the whole call.
                Err(e) if e.is_store() => return Err(e),
                r => r,
            };
            outcomes.push(ItemOutcome {
                item_id: d.item_id.clone(),
                result,
            });
        }
        // The owner stage of two-stage items.
        if !next_stage.is_empty() {
            let pol = &policy.policy;
            let mut start: Vec<String> = next_stage
                .iter()
                .filter_map(|i| {
                    pol.entitlements
                        .get(&i.entitlement_id)
                        .map(|e| e.owner.clone())
                })
                .collect();
            start.extend(pol.fallback_reviewer.clone());
            let org = self.org_of(&mut tx, start).await?;
            for mut item in next_stage {
                let owner = pol
                    .entitlements
                    .get(&item.entitlement_id)
                    .map(|e| e.owner.clone())
                    .unwrap_or_default();
                let (reviewer, note) = review::resolve_reviewer(
                    Stage::Owner,
                    &item.employee_id,
                    None,
                    &owner,
                    &item.approvers,
                    item.first_stage_by.as_deref(),
                    pol.fallback_reviewer.as_deref(),
                    &org,
                );
                item.reviewer = reviewer;
                item.note = note;
                if !tx.update_item(&mut item).await? {
                    return Err(AppError::precondition(
                        "an item changed meanwhile; try again",
                    ));
                }
                if let Some(o) = outcomes.iter_mut().find(|o| o.item_id == item.id) {
                    o.result = Ok(item);
                }
            }
        }
        tx.clear_review_pending(&cleared).await?;
        let queued = self
            .revoke_reviewed(&mut tx, &policy, &revoke, actor, now)
            .await?;
        tx.commit(now).await?;
        Ok((outcomes, queued))
    }

    /// Revokes the grants of `items` (reason `review`) through the intake
    /// batch: directory operations go to the outbox in `tx`.
    async fn revoke_reviewed(
        &self,
        tx: &mut WriteTx,
        policy: &std::sync::Arc<crate::ActivePolicy>,
        items: &[ReviewItem],
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, AppError> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut people: Vec<String> = items.iter().map(|i| i.employee_id.clone()).collect();
        people.sort();
        people.dedup();
        let mut batch = Batch::for_people(
            tx,
            policy.clone(),
            now,
            &people,
            self.provisioning(),
            self.creates_accounts(),
        )
        .await?;
        for i in items {
            let (_, grants) = batch.current(&i.employee_id);
            if !grants.iter().any(|g| g.id == i.grant_id && g.is_active()) {
                continue;
            }
            let change = GrantChange::Revoke {
                grant_id: i.grant_id.clone(),
                entitlement_id: i.entitlement_id.clone(),
                reason: RevokeReason::Review,
            };
            let cause = format!("review: campaign {}", i.campaign_id);
            batch.stage_grant_changes(tx, &i.employee_id, &[change], &cause, actor);
        }
        batch.flush(tx).await
    }

    /// Reassigns an open item to another reviewer, with a reason; never to
    /// the person whose access it is.
    pub async fn reassign_item(
        &self,
        access: &Access,
        item_id: &str,
        to: &str,
        reason: &str,
    ) -> Result<ReviewItem, AppError> {
        let to = to.trim();
        idgov_domain::identity::validate_employee_id(to).map_err(|e| AppError::invalid("to", e))?;
        let actor = access.caller.actor();
        let admin = is_staff(access, &[Role::ItAdmin, Role::SecurityOfficer]);
        let caller = access.caller.employee_id.clone().unwrap_or_default();
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let Some(mut item) = tx.item_for_update(item_id).await? else {
            return Err(AppError::not_found(format!(
                "there is no review item {}",
                idgov_domain::error::echo(item_id)
            )));
        };
        if !admin && item.reviewer != caller {
            return Err(AppError::PermissionDenied(
                "only the item's reviewer (or an it-admin or security officer) reassigns it".into(),
            ));
        }
        review::check_reassign(&item, to, reason)?;
        match tx.people_by_ids(&[to.to_string()]).await?.first() {
            Some(p) if p.status == Status::Active => {}
            _ => {
                return Err(AppError::precondition(format!(
                    "{to} is not an active person"
                )));
            }
        }
        let from = std::mem::replace(&mut item.reviewer, to.to_string());
        item.note = format!("reassigned by {actor} from {from}: {}", reason.trim());
        if !tx.update_item(&mut item).await? {
            return Err(AppError::precondition(
                "this item changed meanwhile; read it again",
            ));
        }
        tx.audit(AuditEntry::new(
            &actor,
            Action::ReviewReassigned,
            Target::ReviewItem(item.id.clone()),
            json!({"campaign": item.campaign_id, "employee": item.employee_id, "from": from, "to": to, "reason": reason.trim()}),
        ));
        tx.commit(now).await?;
        Ok(item)
    }

    /// Closes a campaign: items whose grant ended are superseded, the
    /// unanswered take their level's default. A close that would revoke
    /// more people's access than the guard allows is held.
    ///
    /// The close is bulk work in bounded steps: the campaign turns
    /// `closing` first (decisions are refused from then on), the guard
    /// counts what the defaults would revoke, and the unanswered take
    /// their default a page per transaction with the campaign's progress
    /// recorded in each, so HR intake goes on meanwhile and a close cut
    /// short is carried on by the scheduler (or by closing again).
    pub async fn close_campaign(&self, id: &str, actor: &str) -> Result<CloseOutcome, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let Some(mut c) = tx.campaign_for_update(id).await? else {
            return Err(AppError::not_found(format!(
                "there is no campaign {}",
                idgov_domain::error::echo(id)
            )));
        };
        match c.state {
            CampaignState::Open => {}
            CampaignState::Closing => {
                drop(tx);
                return self.finish_close(id).await;
            }
            other => {
                return Err(AppError::precondition(format!("campaign {id} is {other}")));
            }
        }
        let superseded = supersede(&mut tx, id, actor).await?;
        c.state = CampaignState::Closing;
        c.closing = Some(CloseProgress {
            revoke: true,
            actor: actor.to_string(),
            superseded,
            ..CloseProgress::default()
        });
        tx.update_campaign(&c).await?;
        tx.commit(now).await?;
        self.finish_close(id).await
    }

    /// Carries a closing campaign to its end (see [`App::close_campaign`]):
    /// the guard first if it has not decided yet, then the defaults a page
    /// per transaction. Safe to run twice at once (each step reads the
    /// progress under the campaign's lock) and after a crash.
    pub async fn finish_close(&self, id: &str) -> Result<CloseOutcome, AppError> {
        let c = self.campaign(id).await?;
        let mut guard_verdict = None;
        if c.state == CampaignState::Closing && !c.closing.as_ref().is_some_and(|p| p.guarded) {
            let (verdict, held) = self.guard_close(&c).await?;
            guard_verdict = Some(verdict);
            if let Some(out) = held {
                return Ok(out);
            }
        }
        let mut size = crate::steps::StepSize::new(
            PAGE as u64,
            CLOSE_STEP_MIN,
            CLOSE_STEP_MAX,
            self.step_target(),
        );
        loop {
            let take = i64::try_from(size.get()).unwrap_or(PAGE);
            let (closed, items, took) = self
                .retrying(|| async move {
                    let now = self.now();
                    let mut tx = self.store.begin().await?;
                    // The writer is held from here (a wait for it is not counted).
                    let began = std::time::Instant::now();
                    let Some(mut c) = tx.campaign_for_update(id).await? else {
                        return Err(AppError::not_found("the campaign is gone"));
                    };
                    if c.state != CampaignState::Closing {
                        return Ok((Some(c), 0, began.elapsed()));
                    }
                    let (done, items) = self.close_step(&mut tx, &mut c, now, take).await?;
                    tx.update_campaign(&c).await?;
                    tx.commit(now).await?;
                    Ok((done.then_some(c), items, began.elapsed()))
                })
                .await?;
            size.record(items, took);
            let Some(c) = closed else {
                self.between_steps("the campaign's close", None).await?;
                continue;
            };
            self.wake_provisioning();
            let p = c.closing.clone().unwrap_or_default();
            return Ok(CloseOutcome {
                held_change_id: c
                    .held_change_id
                    .clone()
                    .filter(|_| c.state == CampaignState::Held),
                campaign: c,
                defaulted: p.defaulted,
                revoked: p.revoked,
                superseded: p.superseded,
                guard: guard_verdict,
            });
        }
    }

    /// The guard's decision on a closing campaign: how many people's
    /// access its defaults would revoke, counted on a read snapshot
    /// (decisions are refused while closing; a leaver only shrinks the
    /// count). Held: the campaign turns `held` with its held change.
    async fn guard_close(
        &self,
        c: &Campaign,
    ) -> Result<(guard::Verdict, Option<CloseOutcome>), AppError> {
        let policy = self.policy();
        let mut affected: BTreeSet<String> = BTreeSet::new();
        {
            let mut rtx = self.store.begin_read().await?;
            let mut after = String::new();
            loop {
                let page = rtx.open_items(&c.id, &after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.id.clone();
                for i in &page {
                    if review::unanswered(&policy.policy, i, c.mover, &policy.policy.protected)
                        == ItemState::Revoked
                    {
                        affected.insert(i.employee_id.clone());
                    }
                }
            }
        }
        let active = self.store.count_identities(Status::Active).await? as u64;
        let verdict = guard::evaluate(active, affected.len() as u64, &policy.policy.guard);
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let Some(mut c) = tx.campaign_for_update(&c.id).await? else {
            return Err(AppError::not_found("the campaign is gone"));
        };
        let mut p = c.closing.clone().unwrap_or_default();
        if c.state != CampaignState::Closing || p.guarded {
            // Someone else decided meanwhile.
            return Ok((verdict, None));
        }
        if verdict.tripped && !c.mover {
            let summary = format!(
                "closing campaign {} would revoke access of {} people by default",
                c.id,
                affected.len()
            );
            let actor = closing_actor(&p);
            let held_id = crate::held::hold(
                &mut tx,
                uuid::Uuid::now_v7().to_string(),
                HeldKind::CampaignClose,
                summary,
                verdict,
                json!(StagedClose {
                    campaign_id: c.id.clone()
                }),
                Action::CampaignCloseHeld,
                json!({"campaign": c.id, "people": affected.len()}),
                &actor,
                now,
            )
            .await?;
            c.state = CampaignState::Held;
            c.held_change_id = Some(held_id.clone());
            tx.update_campaign(&c).await?;
            tx.commit(now).await?;
            return Ok((
                verdict,
                Some(CloseOutcome {
                    superseded: p.superseded,
                    campaign: c,
                    defaulted: 0,
                    revoked: 0,
                    held_change_id: Some(held_id),
                    guard: Some(verdict),
                }),
            ));
        }
        p.guarded = true;
        c.closing = Some(p);
        tx.update_campaign(&c).await?;
        tx.commit(now).await?;
        Ok((verdict, None))
    }

    /// Turns a held close into a closing campaign in `tx` (released: the
    /// defaults apply; discarded: the unanswered are kept, flagged); the
    /// caller runs [`App::finish_close`] once `tx` is committed.
    pub(crate) async fn resume_held_close(
        &self,
        tx: &mut WriteTx,
        c: &mut Campaign,
        revoke: bool,
        actor: &str,
    ) -> Result<(), AppError> {
        let mut p = c.closing.clone().unwrap_or_default();
        p.revoke = revoke;
        p.actor = actor.to_string();
        p.guarded = true;
        c.state = CampaignState::Closing;
        c.closing = Some(p);
        tx.update_campaign(c).await?;
        Ok(())
    }

    /// One step of a close, in `tx`: the next page of open items takes its
    /// default; with none left, the campaign closes. Returns true when it
    /// closed. `c` carries the progress.
    async fn close_step(
        &self,
        tx: &mut WriteTx,
        c: &mut Campaign,
        now: DateTime<Utc>,
        take: i64,
    ) -> Result<(bool, u64), AppError> {
        let policy = self.policy_for(tx);
        let mut p = c.closing.clone().unwrap_or_default();
        let actor = closing_actor(&p);
        // Every item of a page leaves the open set and none comes back
        // (decisions are refused while closing): go on after the last one.
        // (Reading from the start again walks the index entries of every
        // item already defaulted.)
        let page = tx.open_items(&c.id, &p.after, take).await?;
        let items = page.len() as u64;
        let Some(last) = page.last() else {
            p.superseded += supersede(tx, &c.id, &actor).await?;
            c.state = CampaignState::Closed;
            c.closed_at = Some(now);
            tx.audit(AuditEntry::new(
                &actor,
                Action::CampaignClosed,
                Target::Campaign(c.id.clone()),
                json!({"defaulted": p.defaulted, "revoked_by_default": p.revoked, "revocations_applied": p.revoke}),
            ));
            c.closing = Some(p);
            return Ok((true, 0));
        };
        p.after = last.id.clone();
        p.steps += 1;
        let mut to_revoke = Vec::new();
        let mut by_state: BTreeMap<ItemState, Vec<String>> = BTreeMap::new();
        for mut i in page {
            let mut state =
                review::unanswered(&policy.policy, &i, c.mover, &policy.policy.protected);
            if state == ItemState::Revoked && !p.revoke {
                state = ItemState::Flagged;
            }
            i.state = state;
            i.decided_by = Some(review::BY_DEFAULT.into());
            i.decided_at = Some(now);
            by_state.entry(state).or_default().push(i.id.clone());
            tx.audit(AuditEntry::new(
                &actor,
                Action::ReviewDefaulted,
                Target::ReviewItem(i.id.clone()),
                json!({"campaign": c.id, "grant": i.grant_id, "employee": i.employee_id,
                       "entitlement": i.entitlement_id, "outcome": state}),
            ));
            p.defaulted += 1;
            if state == ItemState::Revoked {
                p.revoked += 1;
                to_revoke.push(i);
            }
        }
        // One statement per outcome. An item superseded meanwhile (a
        // leaver committed between the read and here) fails the step,
        // which is retried.
        for (state, ids) in &by_state {
            let n = tx.default_items(ids, *state, now).await?;
            if n != ids.len() as u64 {
                return Err(AppError::Store(idgov_store::StoreError::Conflict(
                    "a review item changed during the close".into(),
                )));
            }
        }
        self.revoke_reviewed(tx, &policy, &to_revoke, &actor, now)
            .await?;
        c.closing = Some(p);
        Ok((false, items))
    }

    /// Completion and decisions per reviewer, with rubber-stamp indicators.
    pub async fn campaign_report(&self, id: &str) -> Result<Report, AppError> {
        let c = self.campaign(id).await?;
        let mut report = Report {
            campaign_id: c.id.clone(),
            ..Report::default()
        };
        let mut per: BTreeMap<String, (ReviewerReport, Vec<DateTime<Utc>>)> = BTreeMap::new();
        let mut after = String::new();
        loop {
            let page = self.store.decided_items(id, &after, PAGE).await?;
            let Some(last) = page.last() else { break };
            let unopened: std::collections::HashSet<String> = self
                .store
                .decided_unopened(id, &after, &last.id)
                .await?
                .into_iter()
                .collect();
            after = last.id.clone();
            for i in page {
                report.items += 1;
                *report.by_state.entry(i.state.to_string()).or_default() += 1;
                let human = i
                    .decided_by
                    .as_deref()
                    .is_some_and(|d| !d.starts_with("system:"));
                if i.state != ItemState::Open && human {
                    report.decided += 1;
                }
                let who = if human && i.state != ItemState::Open {
                    i.decided_by.clone().unwrap_or_default()
                } else {
                    i.reviewer.clone()
                };
                let e = per.entry(who.clone()).or_insert_with(|| {
                    (
                        ReviewerReport {
                            reviewer: who.clone(),
                            ..ReviewerReport::default()
                        },
                        Vec::new(),
                    )
                });
                e.0.items += 1;
                match i.state {
                    ItemState::Open => e.0.open += 1,
                    ItemState::Certified if human => e.0.certified += 1,
                    ItemState::Revoked if human => e.0.revoked += 1,
                    _ => {}
                }
                if human && let Some(t) = i.decided_at {
                    e.1.push(t);
                    if unopened.contains(&i.id) {
                        e.0.decided_without_opening += 1;
                    }
                }
            }
        }
        for (_, (mut r, mut times)) in per {
            let decided = r.certified + r.revoked;
            r.approve_rate = if decided > 0 {
                r.certified as f64 / decided as f64
            } else {
                0.0
            };
            times.sort();
            let mut gaps: Vec<f64> = times
                .windows(2)
                .map(|w| (w[1] - w[0]).num_milliseconds() as f64 / 1000.0)
                .collect();
            r.bulk_decisions = gaps.iter().filter(|g| **g < 1.0).count() as u64;
            gaps.sort_by(|a, b| a.total_cmp(b));
            r.median_seconds_per_decision = gaps.get(gaps.len() / 2).copied();
            report.reviewers.push(r);
        }
        Ok(report)
    }

    /// The scheduler's part: start due campaigns (exactly once per period,
    /// whichever replica gets there first), record reminders and
    /// escalations, and close campaigns past their due time.
    pub async fn run_campaign_schedule(&self) -> Result<(), AppError> {
        let now = self.now();
        let policy = self.policy();
        for def in &policy.policy.campaigns {
            let Some(months) = def.every_months(&policy.policy) else {
                continue;
            };
            // The first automatic campaign comes one period after the
            // definition appeared; then one period after the last start.
            let last = match self.store.last_campaign_start(&def.id).await? {
                Some(t) => t,
                None => self.store.definition_first_seen(&def.id, now).await?,
            };
            if !review::next_due(Some(last), months, now)
                || self.store.open_campaign_of(&def.id).await?.is_some()
            {
                continue;
            }
            // The period's id: a second replica's insert finds it taken.
            let period = now.format("%Y%m%d");
            let id = format!("cmp-{}-{period}", def.id);
            if let Some(c) = self
                .start_campaign_with_id(&def.id, &id, "system:scheduler")
                .await?
            {
                tracing::info!(campaign = c.id, "scheduled campaign started");
            }
        }
        self.start_mover_reviews().await?;
        let mut tx = self.store.begin().await?;
        let open = tx.open_campaigns().await?;
        tx.rollback().await?;
        for c in open {
            if c.state == CampaignState::Starting {
                // A start interrupted (a restart): carry on where it stopped.
                if let Err(e) = self.generate(&c.id).await {
                    tracing::warn!(campaign = c.id, error = %e, "resuming a campaign's generation failed");
                }
                continue;
            }
            if c.state == CampaignState::Closing {
                // A close cut short (or under way elsewhere: each step
                // takes the campaign's lock and its recorded progress).
                if let Err(e) = self.finish_close(&c.id).await {
                    tracing::warn!(campaign = c.id, error = %e, "resuming a campaign's close failed");
                }
                continue;
            }
            if c.due_at <= now {
                match self.close_campaign(&c.id, "system:scheduler").await {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => {}
                    Err(e) => {
                        tracing::warn!(campaign = c.id, error = %e, "closing a due campaign failed")
                    }
                }
                continue;
            }
            self.notify_reviewers(&c, now).await?;
        }
        Ok(())
    }

    /// Grants marked for review (a mover's kept grants, access imported
    /// from the directory) become a micro-campaign per reviewer (the
    /// holder's manager), due in 7 days, unanswered items revoked. One per
    /// reviewer and day: a second replica finds it taken.
    pub async fn start_mover_reviews(&self) -> Result<u64, AppError> {
        let now = self.now();
        let mut started = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let policy = self.policy_for(&mut tx);
            let marked = tx.mover_review_grants(PAGE).await?;
            if marked.is_empty() {
                tx.rollback().await?;
                return Ok(started);
            }
            let def = CampaignDef {
                id: "mover-review".into(),
                name: "Mover review".into(),
                levels: vec![],
                systems: vec![],
                kinds: vec![],
                departments: vec![],
                reviewers: Some(ReviewerStrategy::Manager),
                duration_days: 7,
                remind_after_days: 3,
                escalate_after_days: 5,
                scheduled: false,
            };
            let peers = tx
                .peer_counts(
                    &marked
                        .iter()
                        .map(|g| g.grant.entitlement_id.clone())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>(),
                )
                .await?;
            let mut org = OrgMap(HashMap::new());
            let items = self
                .plan_items(&mut tx, &def, true, "", &marked, &peers, &mut org, None)
                .await?;
            let mut by_reviewer: BTreeMap<String, Vec<ReviewItem>> = BTreeMap::new();
            for i in items {
                by_reviewer.entry(i.reviewer.clone()).or_default().push(i);
            }
            let mut created = 0;
            for (reviewer, mut items) in by_reviewer {
                let id = format!(
                    "mvr-{}-{}",
                    reviewer.trim_start_matches('@'),
                    now.format("%Y%m%d%H%M%S")
                );
                let c = Campaign {
                    id: id.clone(),
                    definition_id: def.id.clone(),
                    name: format!("Mover review for {reviewer}"),
                    definition: def.clone(),
                    policy_version: policy.version,
                    state: CampaignState::Open,
                    started_at: now,
                    started_by: "system:scheduler".into(),
                    due_at: now + Duration::days(7),
                    closed_at: None,
                    reminded_at: None,
                    escalated_at: None,
                    mover: true,
                    items: items.len() as i64,
                    held_change_id: None,
                    generated_after: None,
                    closing: None,
                };
                if !tx.insert_campaign(&c).await? {
                    continue;
                }
                for i in &mut items {
                    i.campaign_id = id.clone();
                }
                tx.insert_items(&items).await?;
                tx.audit(AuditEntry::new(
                    "system:scheduler",
                    Action::CampaignStarted,
                    Target::Campaign(id.clone()),
                    json!({"definition": def, "policy_version": policy.version, "items": items.len(),
                           "mover": true, "reviewer": reviewer, "due_at": c.due_at}),
                ));
                created += 1;
            }
            tx.commit(now).await?;
            if created == 0 {
                // Everything marked is taken by another replica's campaigns.
                return Ok(started);
            }
            started += created;
        }
    }

    /// Records the reminder and the escalation of a campaign once each,
    /// with the reviewers who still have open items (security-relevant
    /// notifications, visible in the audit log).
    async fn notify_reviewers(&self, c: &Campaign, now: DateTime<Utc>) -> Result<(), AppError> {
        let remind = c.started_at + Duration::days(i64::from(c.definition.remind_after_days));
        let escalate = c.started_at + Duration::days(i64::from(c.definition.escalate_after_days));
        let due_reminder = c.reminded_at.is_none() && now >= remind;
        let due_escalation = c.escalated_at.is_none() && now >= escalate;
        if !due_reminder && !due_escalation {
            return Ok(());
        }
        let counts = self.store.campaign_counts(&c.id).await?;
        let open: Vec<(String, i64)> = counts
            .iter()
            .filter_map(|r| r.by_state.get("open").map(|n| (r.reviewer.clone(), *n)))
            .collect();
        let mut tx = self.store.begin().await?;
        let Some(mut fresh) = tx.campaign_for_update(&c.id).await? else {
            return Ok(());
        };
        if due_reminder && fresh.reminded_at.is_none() {
            fresh.reminded_at = Some(now);
            tx.audit(
                AuditEntry::new(
                    "system:scheduler",
                    Action::CampaignReminder,
                    Target::Campaign(c.id.clone()),
                    json!({"due_at": c.due_at, "reviewers": open}),
                )
                .security(),
            );
        }
        if due_escalation && fresh.escalated_at.is_none() {
            fresh.escalated_at = Some(now);
            let mut org = HashMap::new();
            for p in tx
                .people_by_ids(&open.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>())
                .await?
            {
                org.insert(p.employee_id.clone(), p.attrs.manager_id.clone());
            }
            let to: Vec<serde_json::Value> = open
                .iter()
                .map(|(r, n)| json!({"reviewer": r, "open": n, "manager": org.get(r).cloned().flatten()}))
                .collect();
            tx.audit(
                AuditEntry::new(
                    "system:scheduler",
                    Action::CampaignEscalation,
                    Target::Campaign(c.id.clone()),
                    json!({"due_at": c.due_at, "escalated": to}),
                )
                .security(),
            );
        }
        tx.update_campaign(&fresh).await?;
        tx.commit(now).await?;
        Ok(())
    }
}

impl App {
    /// Sends a campaign's evidence, line by line (JSON), into `out`: the
    /// manifest, the campaign, the policy in force at its start, the audit
    /// chain from its start to the head now, and every item. Memory stays
    /// bounded: everything is read a page at a time.
    pub async fn export_evidence(
        &self,
        id: &str,
        out: tokio::sync::mpsc::Sender<Result<String, AppError>>,
    ) -> Result<(), AppError> {
        use idgov_domain::evidence::{CONTROLS, FORMAT, Line, Manifest};
        let c = self.campaign(id).await?;
        let started = self
            .store
            .list_audit_events(
                &idgov_store::AuditFilter {
                    action: "campaign.started".into(),
                    target: format!("campaign:{id}"),
                    ..Default::default()
                },
                0,
                1,
            )
            .await?;
        let Some(first) = started.first() else {
            return Err(AppError::precondition(format!(
                "the audit event that started campaign {id} is missing"
            )));
        };
        let (head_seq, head_hash) = self.store.audit_head().await?;
        let items = self
            .store
            .campaign_counts(id)
            .await?
            .iter()
            .map(|r| r.by_state.values().sum::<i64>())
            .sum::<i64>();
        let send = |line: Line| {
            let out = out.clone();
            async move {
                let text =
                    serde_json::to_string(&line).map_err(|e| AppError::Unavailable(e.to_string()));
                out.send(text)
                    .await
                    .map_err(|_| AppError::Unavailable("the reader went away".into()))
            }
        };
        send(Line::Manifest(Manifest {
            format: FORMAT.into(),
            campaign_id: c.id.clone(),
            generated_at: self.now().to_rfc3339(),
            policy_version: c.policy_version,
            controls: CONTROLS.iter().map(|s| s.to_string()).collect(),
            items: items as u64,
            audit_events: (head_seq - first.seq + 1).max(0) as u64,
            first_seq: first.seq,
            head_seq,
            head_hash: head_hash.clone(),
        }))
        .await?;
        send(Line::Campaign(Box::new(c.clone()))).await?;
        if let Some(p) = self.store.policy_at(c.policy_version).await? {
            send(Line::Policy {
                version: p.version,
                sha256: p.sha256,
                document: p.document,
            })
            .await?;
        }
        let mut after = first.seq - 1;
        while after < head_seq {
            let page = self
                .store
                .list_audit_events(
                    &idgov_store::AuditFilter::default(),
                    after,
                    PAGE.min(head_seq - after),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page {
                send(Line::Audit(r)).await?;
            }
        }
        let mut after = String::new();
        loop {
            let page = self.store.decided_items(id, &after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for i in page {
                send(Line::Item(Box::new(i))).await?;
            }
        }
        Ok(())
    }
}

/// Closes as superseded the open items of `campaign_id` whose grant ended,
/// each with its audit event.
/// The grants of `page` whose entitlement the definition covers.
fn in_scope(policy: &Policy, def: &CampaignDef, page: Vec<ScopedGrant>) -> Vec<ScopedGrant> {
    page.into_iter()
        .filter(|g| {
            policy
                .entitlements
                .get(&g.grant.entitlement_id)
                .is_some_and(|e| def.covers(e, &g.department))
        })
        .collect()
}

/// Who a close acts as: who started it (the scheduler when unknown).
fn closing_actor(p: &CloseProgress) -> String {
    if p.actor.is_empty() {
        crate::SYSTEM_SCHEDULER.to_string()
    } else {
        p.actor.clone()
    }
}

async fn supersede(tx: &mut WriteTx, campaign_id: &str, actor: &str) -> Result<u64, AppError> {
    let gone = tx.supersede_ended(campaign_id).await?;
    for (id, grant, employee) in &gone {
        tx.audit(AuditEntry::new(
            actor,
            Action::ReviewSuperseded,
            Target::ReviewItem(id.clone()),
            json!({"campaign": campaign_id, "grant": grant, "employee": employee,
                   "reason": "the grant ended during the campaign"}),
        ));
    }
    Ok(gone.len() as u64)
}

/// Closes as superseded the open review items of grants revoked in this
/// transaction (a leaver, a mover, a policy change), each with its audit
/// event: a reviewer never decides access that is already gone.
pub(crate) async fn items_of_revoked_grants(
    tx: &mut WriteTx,
    grant_ids: &[String],
) -> Result<(), AppError> {
    if grant_ids.is_empty() {
        return Ok(());
    }
    tx.hold_generations().await?;
    for (id, campaign, grant, employee) in tx.supersede_grants(grant_ids).await? {
        tx.audit(AuditEntry::new(
            "system:idgov",
            Action::ReviewSuperseded,
            Target::ReviewItem(id),
            json!({"campaign": campaign, "grant": grant, "employee": employee,
                   "reason": "the grant ended during the campaign"}),
        ));
    }
    Ok(())
}

/// Moves the open items of people who left to their manager (or the
/// fallback reviewer, or any security officer), in the leavers'
/// transaction; the audit says so.
pub(crate) async fn items_after_leavers(
    tx: &mut WriteTx,
    leavers: &[(String, Option<String>, String)],
    fallback: Option<&str>,
) -> Result<(), AppError> {
    if !leavers.is_empty() {
        tx.hold_generations().await?;
    }
    for (id, manager, actor) in leavers {
        loop {
            let items = tx.open_items_of_reviewer(id, 500).await?;
            if items.is_empty() {
                break;
            }
            for mut item in items {
                let to = match manager {
                    Some(m) if *m != item.employee_id => m.clone(),
                    _ => match fallback {
                        Some(f) if f != item.employee_id => f.to_string(),
                        _ => SECURITY_POOL.to_string(),
                    },
                };
                item.reviewer = to.clone();
                item.note = format!("{id} left; reassigned to {to}");
                if !tx.update_item(&mut item).await? {
                    return Err(AppError::Store(idgov_store::StoreError::Conflict(
                        "a review item changed meanwhile".into(),
                    )));
                }
                tx.audit(AuditEntry::new(
                    actor,
                    Action::ReviewReassigned,
                    Target::ReviewItem(item.id.clone()),
                    json!({"campaign": item.campaign_id, "employee": item.employee_id, "from": id, "to": to, "reason": "the reviewer left"}),
                ));
            }
        }
    }
    Ok(())
}
