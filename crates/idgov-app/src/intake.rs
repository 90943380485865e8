//! HR intake: recording and applying HR events.
//!
//! Events are processed in batches inside one write transaction (group
//! commit): a [`Batch`] reads everything the batch needs with a few set-based
//! queries, decides every event in memory with the domain rules, and writes
//! the results with multi-row statements. The idempotency records, identity
//! changes, grant changes and audit events commit together, so an
//! acknowledged event is durable and complete.
//!
//! Submitted events reach one writer task that batches whatever is queued.
//! If a batch fails, each of its events is retried alone, so one bad event
//! never fails another.

use super::{ActivePolicy, App, SYSTEM_SCHEDULER};
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::grant::{Grant, GrantChange, RevokeReason};
use idgov_domain::history::{self, Presence, RosterMark};
use idgov_domain::hr::{EventKind, EventState, HrEvent};
use idgov_domain::identity::{Identity, Status};
use idgov_domain::lifecycle::{self, Decision, Transition, decide};
use idgov_domain::{DomainError, ErrorCode};
use idgov_store::{DirOpKind, EventRow, GrantRow, NewDirOp, RecordedEvent, StoreError, WriteTx};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};

/// What became of a submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub state: EventState,
    pub duplicate: bool,
    pub effective_at: DateTime<Utc>,
    pub detail: String,
    pub grants_added: u32,
    pub grants_revoked: u32,
}

pub(crate) struct Job {
    event: HrEvent,
    actor: String,
    reply: oneshot::Sender<Result<SubmitOutcome, AppError>>,
}

const MAX_BATCH: usize = 512;

/// How far up a management chain the cycle check (and the read of the
/// chains before it) goes; a longer chain is older data's loop, not the
/// new manager's.
const MAX_CHAIN: usize = 10_000;

/// How often the server retries its own concurrency conflicts before it
/// reports one.
const RETRIES: u32 = 8;

/// How many people with HR events newer than a roster's read of the people
/// [`App::finish_roster`] looks at a time.
const LATE_CHANGES_CHUNK: usize = 500;

/// When a roster snapshot read the people it diffs against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RosterRead {
    pub at: DateTime<Utc>,
    /// The newest HR event's place in the arrival order then.
    pub arrival: Option<i64>,
}

impl RosterRead {
    /// How far back in the arrival order the events that may have come
    /// after the read begin: events of transactions still open at the read
    /// took their places before it. At most a few steps' worth (a roster
    /// step takes up to 4,000 events, an intake batch a few hundred).
    const IN_FLIGHT: i64 = 10_000;

    /// The events that may have come after the read. Without its place
    /// (a sync staged before it was kept): those received or applied from
    /// five minutes before its time (a margin for in-flight transactions
    /// and the clocks of several replicas).
    fn window(&self) -> idgov_store::EventsAfter {
        match self.arrival {
            Some(a) => idgov_store::EventsAfter::Arrival(a - Self::IN_FLIGHT),
            None => idgov_store::EventsAfter::Time(self.at - chrono::Duration::minutes(5)),
        }
    }
}

/// How many events (or presences) of a roster the first step applies, in
/// one transaction.
pub const ROSTER_STEP: usize = 1000;

/// The fewest events or presences a step of a roster takes; later steps
/// than the first take as many as hold the writer for about
/// [`crate::policy::STEP_TARGET`] ([`crate::steps::StepSize`]).
pub const ROSTER_STEP_MIN: u64 = 50;

/// The most events or presences a step of a roster takes (what a step
/// holds in memory).
pub const ROSTER_STEP_MAX: u64 = 4_000;

/// What a batch knows about a recorded event.
#[derive(Debug, Clone)]
struct Known {
    fingerprint: String,
    state: EventState,
    detail: String,
    effective_at: DateTime<Utc>,
    kind: EventKind,
    employee_id: String,
}

/// A group of HR events processed together in one transaction.
pub(crate) struct Batch {
    policy: Arc<ActivePolicy>,
    now: DateTime<Utc>,
    identities: HashMap<String, Option<Identity>>,
    active: HashMap<String, Vec<Grant>>,
    events: HashMap<(String, String), Known>,
    // Staged writes, flushed in this order.
    new_events: Vec<EventRow>,
    people: Vec<Identity>,
    grants: Vec<GrantRow>,
    revokes: Vec<(String, RevokeReason)>,
    marks: Vec<String>,
    transitions: Vec<(String, String, EventState, EventState, String)>,
    /// Directory operations, when a directory is provisioned.
    provisioning: bool,
    /// Joiners get an account created first.
    create_accounts: bool,
    dir_ops: Vec<NewDirOp>,
    /// Events folded in this batch, by person (the part of a history the
    /// store does not have yet).
    folded: HashMap<String, Vec<HrEvent>>,
    /// Managers of people outside the batch, looked up for cycle checks.
    managers: HashMap<String, Option<String>>,
    /// The newest roster snapshots applied, read when first needed.
    latest_rosters: Option<Vec<RosterMark>>,
    /// The newest roster snapshot applied of each source asked about
    /// (sync id and time), read once per batch.
    newest_snapshots: HashMap<String, Option<(String, DateTime<Utc>)>>,
    /// People whose grants are not loaded yet (loaded when needed).
    grants_unloaded: std::collections::HashSet<String>,
    /// History-only changes (a roster presence that changed nothing else).
    histories: HashMap<String, idgov_domain::identity::History>,
    /// People who left in this batch: (employee id, manager, actor), for
    /// their access requests.
    leavers: Vec<(String, Option<String>, String)>,
}

fn known(r: &RecordedEvent) -> Known {
    Known {
        fingerprint: r.event.fingerprint.clone(),
        state: r.state,
        detail: r.detail.clone(),
        effective_at: r.event.effective_at,
        kind: r.event.kind,
        employee_id: r.event.employee_id.clone(),
    }
}

fn dir_op(
    employee_id: &str,
    kind: DirOpKind,
    group: Option<(String, String)>,
    cause: &str,
) -> NewDirOp {
    let (entitlement_id, group_dn) = match group {
        Some((e, dn)) => (Some(e), Some(dn)),
        None => (None, None),
    };
    NewDirOp {
        employee_id: employee_id.to_string(),
        kind,
        group_dn,
        entitlement_id,
        cause: cause.to_string(),
    }
}

fn with(mut v: serde_json::Value, key: &str, value: &str) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), json!(value));
    }
    v
}

impl Batch {
    /// Reads what `events` need (their records, rescind targets, the people
    /// and their active grants), locked on PostgreSQL until commit.
    pub(crate) async fn load(
        tx: &mut WriteTx,
        policy: Arc<ActivePolicy>,
        now: DateTime<Utc>,
        events: &[&HrEvent],
        extra_people: &[String],
        provisioning: bool,
        create_accounts: bool,
    ) -> Result<Batch, AppError> {
        let mut keys = Vec::with_capacity(events.len());
        let mut people: Vec<String> = extra_people.to_vec();
        for e in events {
            keys.push((e.source.clone(), e.event_id.clone()));
            if let Some(target) = &e.rescinds_event_id {
                keys.push((e.source.clone(), target.clone()));
            }
            people.push(e.employee_id.clone());
        }
        keys.sort();
        keys.dedup();
        people.sort();
        people.dedup();
        let recorded = tx.events_by_keys(&keys).await?;
        let mut batch =
            Batch::for_people(tx, policy, now, &people, provisioning, create_accounts).await?;
        batch.events = recorded
            .iter()
            .map(|r| ((r.event.source.clone(), r.event.event_id.clone()), known(r)))
            .collect();
        let named = events.iter().map(|e| (e.employee_id.as_str(), &e.attrs));
        batch.read_management_chains(tx, named).await?;
        Ok(batch)
    }

    /// Reads `people` and their active grants (locked on PostgreSQL until
    /// commit), for changes that are not HR events (a policy change).
    pub(crate) async fn for_people(
        tx: &mut WriteTx,
        policy: Arc<ActivePolicy>,
        now: DateTime<Utc>,
        people: &[String],
        provisioning: bool,
        create_accounts: bool,
    ) -> Result<Batch, AppError> {
        let found = tx.identities_by_ids(people).await?;
        let active = tx.active_grants_of(people).await?;
        let mut identities: HashMap<String, Option<Identity>> =
            people.iter().map(|p| (p.clone(), None)).collect();
        for p in found {
            identities.insert(p.employee_id.clone(), Some(p));
        }
        Ok(Batch {
            policy,
            now,
            identities,
            active,
            events: HashMap::new(),
            new_events: Vec::new(),
            people: Vec::new(),
            grants: Vec::new(),
            revokes: Vec::new(),
            marks: Vec::new(),
            transitions: Vec::new(),
            provisioning,
            create_accounts,
            dir_ops: Vec::new(),
            folded: HashMap::new(),
            managers: HashMap::new(),
            latest_rosters: None,
            newest_snapshots: HashMap::new(),
            grants_unloaded: Default::default(),
            histories: HashMap::new(),
            leavers: Vec::new(),
        })
    }

    /// Like [`Batch::for_people`], but reads people's grants only when a
    /// change of theirs needs them (a roster's presence mostly changes
    /// nothing).
    pub(crate) async fn for_people_lazily(
        tx: &mut WriteTx,
        policy: Arc<ActivePolicy>,
        now: DateTime<Utc>,
        people: &[String],
        provisioning: bool,
        create_accounts: bool,
    ) -> Result<Batch, AppError> {
        let found = tx.identities_by_ids(people).await?;
        let mut identities: HashMap<String, Option<Identity>> =
            people.iter().map(|p| (p.clone(), None)).collect();
        for p in found {
            identities.insert(p.employee_id.clone(), Some(p));
        }
        let mut b = Batch::for_people(tx, policy, now, &[], provisioning, create_accounts).await?;
        b.identities = identities;
        b.grants_unloaded = people.iter().cloned().collect();
        Ok(b)
    }

    /// Reads `employee_id`'s grants if they were not read yet.
    async fn ensure_grants(&mut self, tx: &mut WriteTx, employee_id: &str) -> Result<(), AppError> {
        if self.grants_unloaded.remove(employee_id) {
            let mut g = tx.active_grants_of(&[employee_id.to_string()]).await?;
            self.active.insert(
                employee_id.to_string(),
                g.remove(employee_id).unwrap_or_default(),
            );
        }
        Ok(())
    }

    /// True when `employee_id` is known and not working here (a pre-hire,
    /// or departed), read without a copy: only they can have a start (or a
    /// return) a roster scheduled.
    pub(crate) fn is_not_working(&self, employee_id: &str) -> bool {
        self.identities
            .get(employee_id)
            .and_then(Option::as_ref)
            .is_some_and(|p| matches!(p.status, Status::PreHire | Status::Terminated))
    }

    pub(crate) fn current(&self, employee_id: &str) -> (Option<Identity>, Vec<Grant>) {
        (
            self.identities.get(employee_id).cloned().flatten(),
            self.active.get(employee_id).cloned().unwrap_or_default(),
        )
    }

    fn outcome(&self, ev: &HrEvent, state: EventState, detail: String) -> SubmitOutcome {
        SubmitOutcome {
            state,
            duplicate: false,
            effective_at: ev.effective_at,
            detail,
            grants_added: 0,
            grants_revoked: 0,
        }
    }

    /// Decides `ev` for its person, replaying their history when it is
    /// older than the state already applied.
    async fn decide(&mut self, tx: &mut WriteTx, ev: &HrEvent) -> Result<Decision, AppError> {
        let (current, grants) = self.current(&ev.employee_id);
        let marks = self.marks(tx).await?;
        let policy = &self.policy.policy;
        let d = decide(
            current.as_ref(),
            &grants,
            ev,
            None,
            &marks,
            policy,
            self.now,
        );
        if d != Decision::NeedsHistory {
            return Ok(d);
        }
        let history = self.history_of(tx, &ev.employee_id).await?;
        let refs: Vec<&HrEvent> = history.iter().collect();
        let policy = &self.policy.policy;
        match decide(
            current.as_ref(),
            &grants,
            ev,
            Some(&refs),
            &marks,
            policy,
            self.now,
        ) {
            Decision::NeedsHistory => Err(AppError::Unavailable(format!(
                "cannot order the history of {}; retry",
                ev.employee_id
            ))),
            d => Ok(d),
        }
    }

    /// The newest roster snapshots applied (read once per batch).
    async fn marks(&mut self, tx: &mut WriteTx) -> Result<Vec<RosterMark>, AppError> {
        if let Some(m) = &self.latest_rosters {
            return Ok(m.clone());
        }
        let m = tx.latest_rosters(history::ROSTER_HORIZON as i64).await?;
        self.latest_rosters = Some(m.clone());
        Ok(m)
    }

    /// Records the roster snapshot this batch applies among the newest.
    pub(crate) async fn roster_applied(
        &mut self,
        tx: &mut WriteTx,
        mark: RosterMark,
    ) -> Result<(), AppError> {
        let mut marks = self.marks(tx).await?;
        tx.record_roster_snapshot(&mark, self.now).await?;
        let at = marks
            .iter()
            .position(|m| m.as_of < mark.as_of)
            .unwrap_or(marks.len());
        marks.insert(at, mark);
        marks.truncate(history::ROSTER_HORIZON);
        self.latest_rosters = Some(marks);
        self.newest_snapshots.clear();
        Ok(())
    }

    /// Every event folded for `employee_id`: stored ones and this batch's.
    async fn history_of(
        &mut self,
        tx: &mut WriteTx,
        employee_id: &str,
    ) -> Result<Vec<HrEvent>, AppError> {
        let mut h = tx.folded_events_of(employee_id).await?;
        if let Some(mine) = self.folded.get(employee_id) {
            for e in mine {
                if !h
                    .iter()
                    .any(|x| x.source == e.source && x.event_id == e.event_id)
                {
                    h.push(e.clone());
                }
            }
        }
        Ok(h)
    }

    /// The people in the management chain above `person`, when their new
    /// manager would make it a cycle back to them: `[person, m1, …, person]`.
    async fn manager_cycle(
        &mut self,
        tx: &mut WriteTx,
        person: &Identity,
    ) -> Result<Option<Vec<String>>, AppError> {
        let me = &person.employee_id;
        let mut chain = vec![me.clone()];
        let mut next = person.attrs.manager_id.clone();
        while let Some(m) = next {
            if &m == me {
                chain.push(m);
                return Ok(Some(chain));
            }
            if chain.contains(&m) || chain.len() > MAX_CHAIN {
                // A loop above this person (older data): not theirs to fix.
                return Ok(None);
            }
            chain.push(m.clone());
            next = self.manager_of(tx, &m).await?;
        }
        Ok(None)
    }

    async fn manager_of(&mut self, tx: &mut WriteTx, id: &str) -> Result<Option<String>, AppError> {
        if let Some(known) = self.identities.get(id) {
            return Ok(known.as_ref().and_then(|p| p.attrs.manager_id.clone()));
        }
        if let Some(m) = self.managers.get(id) {
            return Ok(m.clone());
        }
        let found = tx.managers_of(&[id.to_string()]).await?;
        let m = found.into_iter().next().and_then(|(_, m)| m);
        self.managers.insert(id.to_string(), m.clone());
        Ok(m)
    }

    /// Reads the management chains above the managers `named` gives
    /// people (a batch's events, a roster part's presences) where that is a
    /// change (the only case [`Batch::check_no_cycle`] walks), a level at a
    /// time: one query per level for all of them, instead of one per
    /// manager in each person's walk (two round trips per joiner on
    /// PostgreSQL). The chains land where [`Batch::manager_of`] looks, so
    /// the checks read what they read before.
    pub(crate) async fn read_management_chains<'a>(
        &mut self,
        tx: &mut WriteTx,
        named: impl IntoIterator<Item = (&'a str, &'a idgov_domain::identity::AttributesPatch)>,
    ) -> Result<(), AppError> {
        let mut level: Vec<String> = named
            .into_iter()
            .filter_map(|(person, attrs)| {
                let m = attrs.manager_id.as_ref()?.as_ref()?;
                let now = self.identities.get(person).and_then(Option::as_ref);
                let same = now.is_some_and(|c| c.attrs.manager_id.as_ref() == Some(m));
                (!same).then(|| m.clone())
            })
            .collect();
        // As deep as the walk in `manager_cycle` goes.
        for _ in 0..MAX_CHAIN {
            level.retain(|m| !self.identities.contains_key(m) && !self.managers.contains_key(m));
            level.sort_unstable();
            level.dedup();
            if level.is_empty() {
                break;
            }
            for m in &level {
                self.managers.insert(m.clone(), None);
            }
            let mut next = Vec::new();
            for (id, m) in tx.managers_of(&level).await? {
                if let Some(up) = &m {
                    next.push(up.clone());
                }
                self.managers.insert(id, m);
            }
            level = next;
        }
        Ok(())
    }

    /// Refuses a transition whose new manager closes a management cycle.
    async fn check_no_cycle(
        &mut self,
        tx: &mut WriteTx,
        current: Option<&Identity>,
        t: &Transition,
    ) -> Result<(), AppError> {
        let changed = current.map(|c| c.attrs.manager_id != t.identity.attrs.manager_id);
        if changed == Some(false) || t.identity.attrs.manager_id.is_none() {
            return Ok(());
        }
        if let Some(cycle) = self.manager_cycle(tx, &t.identity).await? {
            return Err(AppError::invalid(
                "event.attributes.manager_employee_id",
                format!(
                    "would make a management cycle: {}; nothing was applied",
                    cycle_text(&cycle)
                ),
            ));
        }
        Ok(())
    }

    /// Records and, when due, applies one event. Nothing is written until
    /// [`Batch::flush`]; a domain error leaves the batch as it was.
    pub(crate) async fn submit(
        &mut self,
        tx: &mut WriteTx,
        ev: &HrEvent,
        actor: &str,
    ) -> Result<SubmitOutcome, AppError> {
        if let Some(k) = self.events.get(&(ev.source.clone(), ev.event_id.clone())) {
            if !ev.same_payload(&k.fingerprint) {
                return Err(AppError::Domain(DomainError::new(
                    ErrorCode::IdempotencyConflict,
                    format!(
                        "event {} from {} was already accepted with a different payload; \
                         use a new event_id for a new event",
                        idgov_domain::error::echo(&ev.event_id),
                        idgov_domain::error::echo(&ev.source)
                    ),
                )));
            }
            return Ok(SubmitOutcome {
                state: k.state,
                duplicate: true,
                effective_at: k.effective_at,
                detail: k.detail.clone(),
                grants_added: 0,
                grants_revoked: 0,
            });
        }
        if ev.kind == EventKind::Rescind {
            return self.rescind(tx, ev, actor).await;
        }
        let target = Target::identity(&ev.employee_id);
        let base = json!({
            "source": ev.source, "event_id": ev.event_id, "kind": ev.kind,
            "effective_at": ev.effective_at.to_rfc3339(),
        });
        match self.decide(tx, ev).await? {
            Decision::NeedsHistory => Err(AppError::Unavailable("history not ordered".into())),
            Decision::Schedule { pre_hire } => {
                let detail = format!("scheduled for {}", ev.effective_at.to_rfc3339());
                self.record(ev, EventState::Scheduled, &detail, actor);
                if let Some(p) = pre_hire {
                    tx.audit(AuditEntry::new(
                        actor,
                        Action::IdentityPreHireAnnounced,
                        target.clone(),
                        json!({"employee_id": p.employee_id, "starts_at": ev.effective_at.to_rfc3339(),
                               "announced_by": ev.event_id}),
                    ));
                    self.set_identity(*p);
                }
                tx.audit(AuditEntry::new(
                    actor,
                    Action::HrEventScheduled,
                    target,
                    base,
                ));
                Ok(self.outcome(ev, EventState::Scheduled, detail))
            }
            Decision::Apply(t) => {
                let current = self.current(&ev.employee_id).0;
                self.check_no_cycle(tx, current.as_ref(), &t).await?;
                if t.replayed && t.is_noop(current.as_ref()) {
                    let reason = format!(
                        "older than the state already applied (effective {}); the history, \
                         replayed in effective order with it, is unchanged",
                        current
                            .as_ref()
                            .and_then(|c| c.history.last.as_ref())
                            .map(|k| k.at.to_rfc3339())
                            .unwrap_or_default()
                    );
                    self.record(ev, EventState::Superseded, &reason, actor);
                    tx.audit(AuditEntry::new(
                        actor,
                        Action::HrEventSuperseded,
                        target,
                        with(base, "reason", &reason),
                    ));
                    return Ok(self.outcome(ev, EventState::Superseded, reason));
                }
                let note = describe(&t);
                self.record(ev, EventState::Applied, &note, actor);
                let (added, revoked) = self.apply(tx, Some(ev), &t, actor);
                Ok(SubmitOutcome {
                    grants_added: added,
                    grants_revoked: revoked,
                    ..self.outcome(ev, EventState::Applied, note)
                })
            }
        }
    }

    /// Folds a roster snapshot's presence of `employee_id` into their
    /// state: it records who they were at the snapshot's time, so that an
    /// older event arriving later is ordered before it. Returns true when
    /// it changed their HR truth (it rarely does: changes come as events).
    pub(crate) async fn present(
        &mut self,
        tx: &mut WriteTx,
        employee_id: &str,
        presence: &Presence,
        actor: &str,
    ) -> Result<bool, AppError> {
        let current = self.current(employee_id).0;
        let ctx = lifecycle::fold_context(&self.policy.policy);
        let (folded, replayed) =
            match history::fold_presence(employee_id, current.as_ref(), presence, &ctx, self.now) {
                Some(f) => (f, false),
                None => {
                    let h = self.history_of(tx, employee_id).await?;
                    let refs: Vec<&HrEvent> = h.iter().collect();
                    let marks = self.marks(tx).await?;
                    let f = history::replay(
                        employee_id,
                        current.as_ref(),
                        &refs,
                        Some(presence),
                        &marks,
                        &ctx,
                        self.now,
                    );
                    (f, true)
                }
            };
        let mut folded = folded;
        if let Some(s) = folded.state.as_mut() {
            history::note_listing(
                &mut s.history,
                presence.listing(Some(presence.attrs.clone())),
            );
        }
        // The usual case: the person is as the snapshot says. Only their
        // history changes (the listing); grants are not even read.
        if let (Some(cur), Some(new)) = (current.as_ref(), folded.state.as_ref())
            && history::same_state(cur, new)
        {
            self.set_history(new.clone());
            return Ok(false);
        }
        self.ensure_grants(tx, employee_id).await?;
        let grants = self.current(employee_id).1;
        let t = lifecycle::transition(
            current.as_ref(),
            folded,
            &grants,
            &self.policy.policy,
            replayed,
        );
        if t.is_noop(current.as_ref()) {
            self.set_identity(t.identity);
            return Ok(false);
        }
        self.check_no_cycle(tx, current.as_ref(), &t).await?;
        let cause = format!("roster:{}:{}", presence.source, presence.sync_id);
        self.apply_transition(tx, &t, actor, &cause, json!({
            "roster": {"source": presence.source, "sync_id": presence.sync_id, "as_of": presence.as_of.to_rfc3339()},
        }));
        Ok(true)
    }

    /// Notes that a roster snapshot listed `employee_id` without a
    /// presence of its own: it changed them with an event (which carries
    /// the attributes), or their row was refused (and says nothing).
    pub(crate) fn attach_listing(&mut self, employee_id: &str, mark: &RosterMark) {
        let Some(mut p) = self.identities.get(employee_id).cloned().flatten() else {
            return;
        };
        history::note_listing(&mut p.history, mark.listing_without_attributes());
        self.set_identity(p);
    }

    /// Replays `employee_id`'s history with the newest roster snapshots, for
    /// a snapshot applied after their state: one that did not list them
    /// describes a time before their newest event. Returns true when it
    /// changed their HR truth.
    pub(crate) async fn reconsider(
        &mut self,
        tx: &mut WriteTx,
        employee_id: &str,
        actor: &str,
        cause: &str,
    ) -> Result<bool, AppError> {
        let (current, grants) = self.current(employee_id);
        if current.is_none() {
            return Ok(false);
        }
        let ctx = lifecycle::fold_context(&self.policy.policy);
        let h = self.history_of(tx, employee_id).await?;
        let refs: Vec<&HrEvent> = h.iter().collect();
        let marks = self.marks(tx).await?;
        let folded = history::replay(
            employee_id,
            current.as_ref(),
            &refs,
            None,
            &marks,
            &ctx,
            self.now,
        );
        let t = lifecycle::transition(current.as_ref(), folded, &grants, &self.policy.policy, true);
        if t.is_noop(current.as_ref()) {
            return Ok(false);
        }
        self.apply_transition(tx, &t, actor, cause, json!({"roster": cause}));
        Ok(true)
    }

    /// Applies the end-date rule to `employee_id` at the batch's time.
    /// Returns true when it terminated them.
    pub(crate) fn end_date(&mut self, tx: &mut WriteTx, employee_id: &str) -> bool {
        let (Some(current), grants) = self.current(employee_id) else {
            return false;
        };
        let Some(t) = lifecycle::end_date_reached(&current, &grants, &self.policy.policy, self.now)
        else {
            return false;
        };
        let end = current
            .attrs
            .end_date
            .map(|d| d.to_string())
            .unwrap_or_default();
        self.apply_transition(
            tx,
            &t,
            SYSTEM_SCHEDULER,
            &format!("end-date:{employee_id}:{end}"),
            json!({"end_date": end, "zone": current.history.end_zone}),
        );
        true
    }

    /// Applies a scheduled event that is due. Returns false when it is no
    /// longer scheduled (another process applied or rescinded it).
    pub(crate) async fn apply_due(
        &mut self,
        tx: &mut WriteTx,
        ev: &HrEvent,
        submitted_by: &str,
    ) -> Result<bool, AppError> {
        let key = (ev.source.clone(), ev.event_id.clone());
        if self.events.get(&key).map(|k| k.state) != Some(EventState::Scheduled) {
            return Ok(false);
        }
        let base = json!({
            "source": ev.source, "event_id": ev.event_id, "kind": ev.kind,
            "effective_at": ev.effective_at.to_rfc3339(), "submitted_by": submitted_by,
        });
        let target = Target::identity(&ev.employee_id);
        match self.decide(tx, ev).await? {
            Decision::Apply(t) => {
                let current = self.current(&ev.employee_id).0;
                if let Err(e) = self.check_no_cycle(tx, current.as_ref(), &t).await {
                    let reason = e.to_string();
                    self.transition(&key, EventState::Rejected, &reason);
                    tx.audit(
                        AuditEntry::new(
                            SYSTEM_SCHEDULER,
                            Action::HrEventRejected,
                            target,
                            with(base, "reason", &reason),
                        )
                        .security(),
                    );
                    return Ok(true);
                }
                if t.replayed && t.is_noop(current.as_ref()) {
                    let reason = "older than the state already applied; changes nothing";
                    self.transition(&key, EventState::Superseded, reason);
                    self.note_folded(ev);
                    tx.audit(AuditEntry::new(
                        SYSTEM_SCHEDULER,
                        Action::HrEventSuperseded,
                        target,
                        with(base, "reason", reason),
                    ));
                } else {
                    self.transition(&key, EventState::Applied, &describe(&t));
                    self.note_folded(ev);
                    self.apply(tx, Some(ev), &t, SYSTEM_SCHEDULER);
                }
            }
            Decision::Schedule { .. } | Decision::NeedsHistory => return Ok(false),
        }
        Ok(true)
    }

    fn note_folded(&mut self, ev: &HrEvent) {
        self.folded
            .entry(ev.employee_id.clone())
            .or_default()
            .push(ev.clone());
    }

    fn record(&mut self, ev: &HrEvent, state: EventState, detail: &str, actor: &str) {
        if matches!(state, EventState::Applied | EventState::Superseded)
            && ev.kind != EventKind::Rescind
        {
            self.note_folded(ev);
        }
        self.events.insert(
            (ev.source.clone(), ev.event_id.clone()),
            Known {
                fingerprint: ev.fingerprint.clone(),
                state,
                detail: detail.to_string(),
                effective_at: ev.effective_at,
                kind: ev.kind,
                employee_id: ev.employee_id.clone(),
            },
        );
        self.new_events.push(EventRow {
            event: ev.clone(),
            state,
            detail: detail.to_string(),
            actor: actor.to_string(),
        });
    }

    /// Moves a recorded event out of `scheduled`.
    fn transition(&mut self, key: &(String, String), to: EventState, detail: &str) {
        if let Some(k) = self.events.get_mut(key) {
            k.state = to;
            k.detail = detail.to_string();
        }
        // Recorded in this very batch: change the row before it is written.
        if let Some(row) = self
            .new_events
            .iter_mut()
            .find(|r| r.event.source == key.0 && r.event.event_id == key.1)
        {
            row.state = to;
            row.detail = detail.to_string();
            return;
        }
        self.transitions.push((
            key.0.clone(),
            key.1.clone(),
            EventState::Scheduled,
            to,
            detail.to_string(),
        ));
    }

    fn set_identity(&mut self, p: Identity) {
        self.histories.remove(&p.employee_id);
        self.identities
            .insert(p.employee_id.clone(), Some(p.clone()));
        self.people.push(p);
    }

    /// Stages a change of `p`'s history alone (their row is otherwise as
    /// stored), unless their whole row is written anyway.
    fn set_history(&mut self, p: Identity) {
        if self.people.iter().any(|x| x.employee_id == p.employee_id) {
            self.set_identity(p);
            return;
        }
        self.histories
            .insert(p.employee_id.clone(), p.history.clone());
        self.identities.insert(p.employee_id.clone(), Some(p));
    }

    /// Stages a transition and its audit events. Returns (added, revoked).
    /// Stages the transition an event made, with its audit events.
    /// Returns (added, revoked).
    fn apply(
        &mut self,
        tx: &mut WriteTx,
        ev: Option<&HrEvent>,
        t: &Transition,
        actor: &str,
    ) -> (u32, u32) {
        let Some(ev) = ev else {
            return self.apply_transition(tx, t, actor, "hr", json!({}));
        };
        let cause = format!("hr:{}:{}", ev.source, ev.event_id);
        self.apply_transition(
            tx,
            t,
            actor,
            &cause,
            json!({
                "source": ev.source,
                "event_id": ev.event_id,
                "kind": ev.kind,
                "effective_at": ev.effective_at.to_rfc3339(),
            }),
        )
    }

    /// Stages a transition and its audit events (`hr.event.applied` for an
    /// event, `hr.end_date_reached` or `hr.roster_presence` otherwise), its
    /// grant changes and directory operations. Returns (added, revoked).
    pub(crate) fn apply_transition(
        &mut self,
        tx: &mut WriteTx,
        t: &Transition,
        actor: &str,
        cause: &str,
        what: serde_json::Value,
    ) -> (u32, u32) {
        let id = t.identity.employee_id.clone();
        self.set_identity(t.identity.clone());
        let target = Target::identity(&id);
        let action = if what.get("event_id").is_some() {
            Action::HrEventApplied
        } else if what.get("roster").is_some() {
            Action::HrRosterPresence
        } else {
            Action::HrEndDateReached
        };
        let mut detail = json!({
            "status": {"from": t.previous_status, "to": t.identity.status},
            "changes": t.changes,
            "mover": t.mover,
            "withheld": t.withheld,
            "note": t.note,
        });
        if let (Some(d), Some(w)) = (detail.as_object_mut(), what.as_object()) {
            for (k, v) in w {
                d.insert(k.clone(), v.clone());
            }
            if t.replayed {
                d.insert("replayed".into(), json!(true));
            }
            if t.new_employment {
                d.insert("new_employment".into(), json!(true));
            }
            if t.end_date_reached {
                d.insert("end_date_reached".into(), json!(true));
            }
        }
        tx.audit(AuditEntry::new(actor, action, target.clone(), detail));
        let cause = cause.to_string();
        let leaves = t.identity.status == Status::Terminated
            && t.previous_status != Some(Status::Terminated);
        let becomes_active =
            t.identity.may_hold_access() && matches!(t.previous_status, Some(Status::Terminated));
        let starts = t.identity.may_hold_access()
            && !matches!(t.previous_status, Some(Status::Active | Status::Suspended));
        if self.provisioning && self.create_accounts && starts {
            self.dir_ops
                .push(dir_op(&id, DirOpKind::CreateAccount, None, &cause));
        }
        if self.provisioning && becomes_active {
            self.dir_ops
                .push(dir_op(&id, DirOpKind::Enable, None, &cause));
        }
        let (added, revoked) = self.stage_grant_changes(tx, &id, &t.grant_changes, &cause, actor);
        if self.provisioning && leaves {
            // The leaver fast path: lock the account at once, then strip
            // every managed group (each in a lane of its own).
            self.dir_ops
                .push(dir_op(&id, DirOpKind::Disable, None, &cause));
            self.dir_ops
                .push(dir_op(&id, DirOpKind::StripGroups, None, &cause));
        }
        if leaves {
            self.leavers.push((
                id.clone(),
                t.identity.attrs.manager_id.clone(),
                actor.to_string(),
            ));
            let pol = &self.policy.policy;
            let owned: Vec<&str> = pol
                .entitlements
                .values()
                .filter(|e| e.owner == id)
                .map(|e| e.id.as_str())
                .chain(
                    pol.systems
                        .values()
                        .filter(|s| s.owner == id)
                        .map(|s| s.id.as_str()),
                )
                .collect();
            if !owned.is_empty() {
                tx.audit(
                    AuditEntry::new(
                        actor,
                        Action::CatalogOwnerLeft,
                        target,
                        json!({"employee_id": id, "owns": owned, "action": "name a new owner in the policy"}),
                    )
                    .security(),
                );
            }
        }
        (added, revoked)
    }

    /// Stages grant changes of `id` decided because of `cause`: the rows,
    /// their audit events and, when provisioning, the directory operations.
    /// Returns (added, revoked).
    pub(crate) fn stage_grant_changes(
        &mut self,
        tx: &mut WriteTx,
        id: &str,
        changes: &[GrantChange],
        cause: &str,
        actor: &str,
    ) -> (u32, u32) {
        let (mut added, mut revoked) = (0, 0);
        let pol = self.policy.clone();
        if self.provisioning {
            for c in changes {
                let (kind, ent) = match c {
                    GrantChange::Add(n) => (DirOpKind::AddMember, &n.entitlement_id),
                    GrantChange::Revoke { entitlement_id, .. } => {
                        (DirOpKind::RemoveMember, entitlement_id)
                    }
                    GrantChange::MarkMoverReview { .. } => continue,
                };
                if let Some(dn) = pol
                    .policy
                    .entitlements
                    .get(ent)
                    .and_then(|e| e.ldap_group_dn.clone())
                {
                    self.dir_ops
                        .push(dir_op(id, kind, Some((ent.clone(), dn)), cause));
                }
            }
        }
        let active = self.active.entry(id.to_string()).or_default();
        for c in changes {
            match c {
                GrantChange::Add(n) => {
                    let Some(ent) = pol.policy.entitlements.get(&n.entitlement_id) else {
                        continue;
                    };
                    let row = GrantRow::new(id, n, ent.classification, cause);
                    active.push(Grant {
                        id: row.id.clone(),
                        employee_id: id.to_string(),
                        entitlement_id: n.entitlement_id.clone(),
                        source: n.source,
                        source_ref: n.source_ref.clone(),
                        granted_at: self.now,
                        expires_at: n.expires_at,
                        approvers: n.approvers.clone(),
                        justification: n.justification.clone(),
                        revoked_at: None,
                        revoke_reason: None,
                        review_pending: false,
                        exception_id: n.exception_id.clone(),
                    });
                    added += 1;
                    tx.audit(AuditEntry::new(
                        actor,
                        Action::GrantAdded,
                        Target::grant(&row.id),
                        json!({
                            "employee_id": id, "entitlement_id": n.entitlement_id,
                            "source": n.source, "role": n.source_ref, "cause": cause,
                        }),
                    ));
                    self.grants.push(row);
                }
                GrantChange::Revoke {
                    grant_id,
                    entitlement_id,
                    reason,
                } => {
                    active.retain(|g| &g.id != grant_id);
                    self.revokes.push((grant_id.clone(), *reason));
                    revoked += 1;
                    tx.audit(AuditEntry::new(
                        actor,
                        Action::GrantRevoked,
                        Target::grant(grant_id),
                        json!({"employee_id": id, "entitlement_id": entitlement_id, "reason": reason, "cause": cause}),
                    ));
                }
                GrantChange::MarkMoverReview {
                    grant_id,
                    entitlement_id,
                } => {
                    if let Some(g) = active.iter_mut().find(|g| &g.id == grant_id) {
                        g.review_pending = true;
                    }
                    self.marks.push(grant_id.clone());
                    tx.audit(AuditEntry::new(
                        actor,
                        Action::GrantReviewPending,
                        Target::grant(grant_id),
                        json!({"employee_id": id, "entitlement_id": entitlement_id, "cause": cause}),
                    ));
                }
            }
        }
        (added, revoked)
    }

    /// Cancels a scheduled event.
    async fn rescind(
        &mut self,
        tx: &mut WriteTx,
        ev: &HrEvent,
        actor: &str,
    ) -> Result<SubmitOutcome, AppError> {
        let target_id = ev.rescinds_event_id.clone().unwrap_or_default();
        let key = (ev.source.clone(), target_id.clone());
        let shown = idgov_domain::error::echo(&target_id);
        let Some(target) = self.events.get(&key).cloned() else {
            return Err(AppError::not_found(format!(
                "there is no event {shown} from {} to rescind",
                idgov_domain::error::echo(&ev.source)
            )));
        };
        if target.employee_id != ev.employee_id {
            return Err(AppError::invalid(
                "event.employee_id",
                format!(
                    "event {shown} is about employee {}, not {}",
                    target.employee_id, ev.employee_id
                ),
            ));
        }
        // A snapshot's withdrawal applied after a newer snapshot of its
        // source (a held sync released late): the newer one decided.
        if ev.from_roster
            && let Some(sync) = idgov_domain::roster::sync_of_event_id(&ev.event_id)
            && let Some((newest, at)) = self
                .newer_snapshot_applied(tx, &ev.source, (ev.effective_at, sync))
                .await?
        {
            let reason = format!(
                "a newer roster snapshot of {} ({newest}, as of {}) decides their start",
                ev.source,
                at.to_rfc3339()
            );
            self.record(ev, EventState::Superseded, &reason, actor);
            tx.audit(AuditEntry::new(
                actor,
                Action::HrEventSuperseded,
                Target::identity(&ev.employee_id),
                json!({"source": ev.source, "event_id": ev.event_id, "kind": ev.kind, "reason": reason}),
            ));
            return Ok(self.outcome(ev, EventState::Superseded, reason));
        }
        if target.state != EventState::Scheduled {
            return Err(AppError::precondition(format!(
                "event {shown} is {}, not scheduled; only future-dated events can be rescinded — \
                 send a compensating event instead",
                target.state
            )));
        }
        let detail = format!("rescinded {target_id}");
        self.transition(
            &key,
            EventState::Rescinded,
            &format!("rescinded by {}", ev.event_id),
        );
        self.record(ev, EventState::Applied, &detail, actor);
        let id = ev.employee_id.clone();
        tx.audit(AuditEntry::new(
            actor,
            Action::HrEventRescinded,
            Target::identity(&id),
            json!({"source": ev.source, "event_id": target_id, "kind": target.kind, "rescinded_by": ev.event_id}),
        ));
        // A withdrawn offer: the pre-hire shows the earliest hire still
        // announced, or, with none left, never starts.
        self.reannounce_unless_announced(tx, &id, actor).await?;
        Ok(self.outcome(ev, EventState::Applied, detail))
    }

    /// A pre-hire known only from the hires that announce them whose
    /// announcing hire is no longer scheduled (rescinded, or superseded):
    /// they show the earliest hire still scheduled, or, with none left,
    /// never start (a departed record that keeps no HR data of the offer).
    async fn reannounce_unless_announced(
        &mut self,
        tx: &mut WriteTx,
        id: &str,
        actor: &str,
    ) -> Result<(), AppError> {
        let Some(person) = self.identities.get(id).cloned().flatten() else {
            return Ok(());
        };
        let Some(announced) = person.history.announced.as_ref() else {
            return Ok(());
        };
        let still = self
            .events
            .get(&(announced.source.clone(), announced.event_id.clone()))
            .is_none_or(|k| k.state == EventState::Scheduled);
        if person.status != Status::PreHire || person.history.last.is_some() || still {
            return Ok(());
        }
        let ctx = lifecycle::fold_context(&self.policy.policy);
        let mut remaining: Vec<HrEvent> = self.scheduled_starts_of(tx, id).await?;
        remaining.sort_by_key(history::EventKey::of);
        let blank = history::withdrawn(&person, &ctx, self.now);
        match remaining
            .first()
            .and_then(|next| history::announce(Some(&blank), next, &ctx, self.now))
        {
            Some(next) => {
                tx.audit(AuditEntry::new(
                    actor,
                    Action::IdentityPreHireAnnounced,
                    Target::identity(id),
                    json!({"employee_id": id, "announced_by": next.history.announced.as_ref().map(|k| k.event_id.clone())}),
                ));
                self.set_identity(next);
            }
            None => {
                self.set_identity(blank);
                tx.audit(AuditEntry::new(
                    actor,
                    Action::IdentityPreHireWithdrawn,
                    Target::identity(id),
                    json!({"employee_id": id}),
                ));
            }
        }
        Ok(())
    }

    /// The hires of `id` still scheduled: stored ones this batch has not
    /// moved out of `scheduled`, and this batch's own.
    async fn scheduled_starts_of(
        &mut self,
        tx: &mut WriteTx,
        id: &str,
    ) -> Result<Vec<HrEvent>, AppError> {
        let mut out: Vec<HrEvent> = tx
            .scheduled_events_of(id)
            .await?
            .into_iter()
            .filter(|e| {
                self.events
                    .get(&(e.source.clone(), e.event_id.clone()))
                    .is_none_or(|k| k.state == EventState::Scheduled)
            })
            .collect();
        out.extend(
            self.new_events
                .iter()
                .filter(|r| r.state == EventState::Scheduled && r.event.employee_id == id)
                .map(|r| r.event.clone()),
        );
        out.retain(|e| matches!(e.kind, EventKind::Hire | EventKind::Rehire));
        Ok(out)
    }

    /// The rule [`idgov_domain::roster::newer_snapshot`] names, after
    /// `ev`, an event roster snapshot `mark` made about a person it lists
    /// as starting (a hire) or no longer lists (a withdrawal): of the
    /// starts snapshots of its source scheduled for them, only the newest
    /// snapshot's stands.
    ///
    /// When a newer snapshot of the source was applied already, it decided
    /// their start (it scheduled its own, listed them as announced, or did
    /// not list them): `ev`'s own start, if scheduled, is rescinded, and
    /// nothing else changes. Otherwise the starts older snapshots scheduled
    /// are rescinded. A start whose snapshot is not recorded as applied
    /// (one still being applied) is left as it is.
    pub(crate) async fn keep_newest_roster_start(
        &mut self,
        tx: &mut WriteTx,
        ev: &HrEvent,
        mark: &RosterMark,
        actor: &str,
    ) -> Result<(), AppError> {
        use idgov_domain::roster::{newer_snapshot, sync_of_event_id};
        let id = ev.employee_id.clone();
        let starts: Vec<HrEvent> = self
            .scheduled_starts_of(tx, &id)
            .await?
            .into_iter()
            .filter(|e| e.from_roster && e.source == mark.source)
            .filter(|e| sync_of_event_id(&e.event_id).is_some())
            .collect();
        if starts.is_empty() {
            return Ok(());
        }
        let own = |e: &HrEvent| e.event_id == ev.event_id;
        let mut superseded: Vec<(HrEvent, String)> = Vec::new();
        if self
            .newer_snapshot_applied(tx, &mark.source, (mark.as_of, &mark.sync_id))
            .await?
            .is_some()
        {
            if let Some(mine) = starts.iter().find(|e| own(e)) {
                let detail = format!(
                    "superseded on arrival: a newer roster snapshot of {} than {} (as of {}) decides their start",
                    mark.source,
                    mark.sync_id,
                    mark.as_of.to_rfc3339()
                );
                superseded.push((mine.clone(), detail));
            }
        } else {
            let syncs: Vec<String> = starts
                .iter()
                .filter(|e| !own(e))
                .filter_map(|e| sync_of_event_id(&e.event_id).map(str::to_string))
                .collect();
            let times = tx.roster_snapshot_times(&mark.source, &syncs).await?;
            let this = (mark.as_of, mark.sync_id.as_str());
            let detail = format!(
                "superseded by roster snapshot {} of {} (as of {}), which {}",
                mark.sync_id,
                mark.source,
                mark.as_of.to_rfc3339(),
                if ev.kind == EventKind::Rescind {
                    "no longer lists them"
                } else {
                    "lists them with another start"
                }
            );
            for e in starts.iter().filter(|e| !own(e)) {
                let Some(sync) = sync_of_event_id(&e.event_id) else {
                    continue;
                };
                match times.get(sync) {
                    Some(at) if newer_snapshot(this, (*at, sync)) => {
                        superseded.push((e.clone(), detail.clone()));
                    }
                    Some(_) => {}
                    None => tracing::info!(employee = %id, event = %e.event_id,
                        "a scheduled start of a roster snapshot not yet applied is left as it is"),
                }
            }
        }
        if superseded.is_empty() {
            return Ok(());
        }
        for (e, detail) in &superseded {
            self.rescind_start(tx, e, detail, &ev.event_id, actor);
        }
        self.reannounce_unless_announced(tx, &id, actor).await
    }

    /// The newest roster snapshot of `source` applied (sync id and time),
    /// when it is newer than `this` snapshot (its time and sync id; see
    /// [`idgov_domain::roster::newer_snapshot`]). Read once per batch and
    /// source: a roster's step asks it for each future starter.
    async fn newer_snapshot_applied(
        &mut self,
        tx: &mut WriteTx,
        source: &str,
        this: (DateTime<Utc>, &str),
    ) -> Result<Option<(String, DateTime<Utc>)>, AppError> {
        let newest = match self.newest_snapshots.get(source) {
            Some(n) => n.clone(),
            None => {
                let n = tx.newest_roster_snapshot(source).await?;
                self.newest_snapshots.insert(source.to_string(), n.clone());
                n
            }
        };
        Ok(newest.filter(|(sync, at)| idgov_domain::roster::newer_snapshot((*at, sync), this)))
    }

    /// Moves scheduled start `e` to `rescinded` (`detail` says why;
    /// `by`: the event that decided it), with its audit event.
    fn rescind_start(
        &mut self,
        tx: &mut WriteTx,
        e: &HrEvent,
        detail: &str,
        by: &str,
        actor: &str,
    ) {
        let key = (e.source.clone(), e.event_id.clone());
        self.events.entry(key.clone()).or_insert_with(|| Known {
            fingerprint: e.fingerprint.clone(),
            state: EventState::Scheduled,
            detail: String::new(),
            effective_at: e.effective_at,
            kind: e.kind,
            employee_id: e.employee_id.clone(),
        });
        self.transition(&key, EventState::Rescinded, detail);
        tx.audit(AuditEntry::new(
            actor,
            Action::HrEventRescinded,
            Target::identity(&e.employee_id),
            json!({"source": e.source, "event_id": e.event_id, "kind": e.kind,
                   "rescinded_by": by, "reason": detail}),
        ));
    }

    /// The ids of the grants staged so far.
    pub(crate) fn staged_grant_ids(&self) -> Vec<String> {
        self.grants.iter().map(|g| g.id.clone()).collect()
    }

    /// Stages a history-only change of a person.
    pub(crate) fn set_history_of(
        &mut self,
        employee_id: &str,
        history: idgov_domain::identity::History,
    ) {
        if let Some(Some(p)) = self.identities.get_mut(employee_id) {
            p.history = history.clone();
        }
        self.histories.insert(employee_id.to_string(), history);
    }

    /// Writes everything staged, set-based. Returns how many directory
    /// operations were queued.
    pub(crate) async fn flush(self, tx: &mut WriteTx) -> Result<usize, AppError> {
        tx.insert_hr_events(&self.new_events, self.now).await?;
        tx.put_identities(&self.people).await?;
        let histories: Vec<(String, idgov_domain::identity::History)> =
            self.histories.into_iter().collect();
        tx.put_histories(&histories).await?;
        tx.insert_grants(&self.grants, self.now).await?;
        tx.revoke_grants(&self.revokes, self.now).await?;
        let revoked: Vec<String> = self.revokes.iter().map(|(id, _)| id.clone()).collect();
        crate::review::items_of_revoked_grants(tx, &revoked).await?;
        tx.mark_mover_review(&self.marks).await?;
        tx.enqueue_directory_ops(&self.dir_ops, self.now).await?;
        crate::access::requests_after_leavers(
            tx,
            &self.leavers,
            self.policy.policy.fallback_approver.as_deref(),
            self.now,
        )
        .await?;
        crate::review::items_after_leavers(
            tx,
            &self.leavers,
            self.policy.policy.fallback_reviewer.as_deref(),
        )
        .await?;
        for (source, event_id, from, to, detail) in &self.transitions {
            if !tx
                .transition_hr_event(source, event_id, *from, *to, detail, self.now)
                .await?
            {
                return Err(AppError::Store(StoreError::Conflict(format!(
                    "event {event_id:?} from {source:?} was handled by another process"
                ))));
            }
        }
        Ok(self.dir_ops.len())
    }
}

impl App {
    /// What the directory idgov provisions could never accept in `patch`:
    /// a value its schema cannot hold in the attribute the account
    /// template maps it to (e.g. a non-ASCII email in OpenLDAP's IA5String
    /// `mail`). Refused at intake rather than failing in the directory.
    pub fn directory_violations(
        &self,
        patch: &idgov_domain::identity::AttributesPatch,
        prefix: &str,
    ) -> Vec<idgov_domain::FieldViolation> {
        let Some(dir) = &self.directory else {
            return vec![];
        };
        let mut v = Vec::new();
        for (placeholder, attr) in dir.accounts.ascii_only(dir.preset) {
            let (field, value) = match placeholder.as_str() {
                "email" | "email_local" => ("email", &patch.email),
                "display_name" | "given_name" | "family_name" => {
                    ("display_name", &patch.display_name)
                }
                "department" => ("department", &patch.department),
                "title" => ("title", &patch.title),
                "job_code" => ("job_code", &patch.job_code),
                "location" => ("location", &patch.location),
                "cost_center" => ("cost_center", &patch.cost_center),
                _ => continue,
            };
            if let Some(value) = value
                && !value.is_ascii()
                && !v
                    .iter()
                    .any(|x: &idgov_domain::FieldViolation| x.field.ends_with(field))
            {
                v.push(idgov_domain::FieldViolation::new(
                    format!("{prefix}.{field}"),
                    format!(
                        "{} has non-ASCII characters, and the directory ({}) keeps {attr} as ASCII only: \
                         send an ASCII value, or map {attr} from another field in the directory file's [accounts]",
                        idgov_domain::error::echo(value),
                        dir.preset.as_str()
                    ),
                ));
            }
        }
        v
    }

    /// Records and (when due) applies one HR event. Returns once the event
    /// is durable.
    pub async fn submit_event(
        &self,
        event: HrEvent,
        actor: &str,
    ) -> Result<SubmitOutcome, AppError> {
        let started = std::time::Instant::now();
        let kind = event.kind.to_string();
        let out = self.submit_event_inner(event, actor).await;
        let outcome = match &out {
            Ok(o) if o.duplicate => "duplicate".to_string(),
            Ok(o) => o.state.to_string(),
            Err(AppError::Domain(_)) => "refused".to_string(),
            Err(_) => "error".to_string(),
        };
        self.metrics
            .hr_events
            .get_or_create(&crate::metrics::HrLabels {
                r#type: kind,
                outcome,
            })
            .inc();
        if out.is_ok() {
            self.metrics
                .hr_event_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        out
    }

    async fn submit_event_inner(
        &self,
        event: HrEvent,
        actor: &str,
    ) -> Result<SubmitOutcome, AppError> {
        let v = self.directory_violations(&event.attrs, "event.attributes");
        if !v.is_empty() {
            return Err(AppError::Domain(DomainError::invalid(
                "the directory cannot hold these values",
                v,
            )));
        }
        let (reply, rx) = oneshot::channel();
        // Events about one person always reach the same writer, in order.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&event.employee_id, &mut h);
        let i = (std::hash::Hasher::finish(&h) % self.writers.len().max(1) as u64) as usize;
        let writer = self
            .writers
            .get(i)
            .ok_or_else(|| AppError::Unavailable("no intake writer".into()))?;
        writer
            .send(Job {
                event,
                actor: actor.to_string(),
                reply,
            })
            .await
            .map_err(|_| AppError::Unavailable("the intake writer has stopped".into()))?;
        rx.await
            .map_err(|_| AppError::Unavailable("the intake writer has stopped".into()))?
    }

    /// A batch for `events`, decided with the cached policy (the commit
    /// fails, and the work is retried, if another process changed it).
    async fn hr_batch(
        &self,
        tx: &mut WriteTx,
        now: DateTime<Utc>,
        events: &[&HrEvent],
    ) -> Result<Batch, AppError> {
        let policy = self.policy_for(tx);
        Batch::load(
            tx,
            policy,
            now,
            events,
            &[],
            self.provisioning(),
            self.creates_accounts(),
        )
        .await
    }

    /// Records `jobs` (events with their actors) in `tx`: all are recorded,
    /// or none. Domain refusals of single events are returned per event,
    /// with how many directory operations were queued.
    async fn record(
        &self,
        tx: &mut WriteTx,
        jobs: &[(&HrEvent, &str)],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Result<SubmitOutcome, AppError>>, usize), AppError> {
        let events: Vec<&HrEvent> = jobs.iter().map(|(ev, _)| *ev).collect();
        let mut batch = self.hr_batch(tx, now, &events).await?;
        let mut results = Vec::with_capacity(jobs.len());
        for (ev, actor) in jobs {
            match batch.submit(tx, ev, actor).await {
                // The transaction may be unusable: fail the whole batch.
                Err(e) if e.is_store() => return Err(e),
                r => results.push(r),
            }
        }
        let queued = batch.flush(tx).await?;
        Ok((results, queued))
    }

    /// Applies a roster snapshot in bounded steps: events or presences per
    /// transaction, [`ROSTER_STEP`] in the first and then as many as take
    /// about [`crate::policy::STEP_TARGET`], read from `steps` one step at a time,
    /// so intake (a leaver above all) gets the writer between steps and a
    /// million-person roster is never held whole. The caller finishes with
    /// [`App::finish_roster`] in its own transaction.
    ///
    /// Each step also records the `job`'s progress (its cursor: the place
    /// reached in the events, then the presences) in its transaction, and
    /// the steps start at `from`: a sync resumed after a crash or a stop
    /// does not replay what was done. Returns the job's detail at the end:
    /// how many events were refused, and the first of them, each with its
    /// employee id and reason (see [`crate::held::StepJob::progress`]).
    pub(crate) async fn record_roster_in_steps(
        &self,
        steps: &crate::roster::RosterSteps,
        mark: &RosterMark,
        actor: &str,
        from: usize,
        job: &crate::held::StepJob<'_>,
    ) -> Result<serde_json::Value, AppError> {
        // Only the job's detail is carried from step to step (a count of
        // the refusals and the first of them): an outcome per event of a
        // million-person roster would be a copy of it.
        let mut detail = job.detail.clone();
        let ne = steps.events;
        let total = ne + steps.present;
        let mut pos = from.min(total);
        let mut n = 0u64;
        let mut size = crate::steps::StepSize::new(
            ROSTER_STEP as u64,
            ROSTER_STEP_MIN,
            ROSTER_STEP_MAX,
            self.step_target(),
        );
        while pos < total {
            let step = usize::try_from(size.get()).unwrap_or(ROSTER_STEP);
            let len = if pos < ne {
                step.min(ne - pos)
            } else {
                step.min(total - pos)
            };
            let (ev_chunk, pr_chunk) = steps.read(self, mark, pos, len).await?;
            let (ev_chunk, pr_chunk) = (&ev_chunk[..], &pr_chunk[..]);
            let end = pos + len;
            // Presences rewrite only histories, which no index or plan
            // looks at: statistics are refreshed while events are applied.
            if pos < ne && n.is_multiple_of(crate::policy::STATISTICS_EVERY) {
                self.store.refresh_statistics().await;
            }
            n += 1;
            let done = &detail;
            let (next, held) = self
                .retrying(|| async move {
                    let now = self.now();
                    let (mut tx, began) = match self.begin_step(job.id).await? {
                        crate::StepStart::Held(tx, began) => (tx, began),
                        crate::StepStart::Gone(j) => {
                            return Err(crate::StepStart::gone(job.id, j.as_ref()));
                        }
                    };
                    let (res, queued) = self
                        .record_roster_part(&mut tx, ev_chunk, pr_chunk, mark, actor, now)
                        .await?;
                    let here: Vec<(String, AppError)> = res
                        .into_iter()
                        .zip(ev_chunk)
                        .filter_map(|(r, ev)| r.err().map(|e| (ev.employee_id.clone(), e)))
                        .collect();
                    let next = crate::held::StepJob::progress(done, &here);
                    tx.update_bulk_job(job.id, "running", &end.to_string(), &next, now)
                        .await?;
                    tx.commit(now).await?;
                    let held = began.elapsed();
                    if queued > 0 {
                        self.wake_provisioning();
                    }
                    Ok((next, held))
                })
                .await?;
            size.record(len as u64, held);
            detail = next;
            pos = end;
            if pos < total {
                // Its progress is recorded: it can stop here.
                self.between_steps("the roster", Some(job.id)).await?;
            }
        }
        Ok(detail)
    }

    /// The events and presences of part of a roster, in `tx`.
    async fn record_roster_part(
        &self,
        tx: &mut WriteTx,
        events: &[HrEvent],
        unchanged: &[(String, Presence)],
        mark: &RosterMark,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Result<SubmitOutcome, AppError>>, usize), AppError> {
        let refs: Vec<&HrEvent> = events.iter().collect();
        let extra: Vec<String> = unchanged.iter().map(|(id, _)| id.clone()).collect();
        let policy = self.policy_for(tx);
        let mut batch = if events.is_empty() {
            Batch::for_people_lazily(
                tx,
                policy,
                now,
                &extra,
                self.provisioning(),
                self.creates_accounts(),
            )
            .await?
        } else {
            Batch::load(
                tx,
                policy,
                now,
                &refs,
                &extra,
                self.provisioning(),
                self.creates_accounts(),
            )
            .await?
        };
        // The events' chains were read with them (`Batch::load`).
        let named = unchanged.iter().map(|(id, p)| (id.as_str(), &p.attrs));
        batch.read_management_chains(tx, named).await?;
        let mut results = Vec::with_capacity(events.len());
        for ev in events {
            // Only someone not working here (a future starter, a departed
            // person due back) can have a start an older snapshot
            // scheduled: nobody else costs a look.
            let was_not_working = batch.is_not_working(&ev.employee_id);
            let res = match batch.submit(tx, ev, actor).await {
                // The transaction may be unusable: fail the whole step.
                Err(e) if e.is_store() => return Err(e),
                r => r,
            };
            if let Ok(o) = &res {
                let start = matches!(ev.kind, EventKind::Hire | EventKind::Rehire);
                if ev.kind == EventKind::Rescind
                    || (start && (was_not_working || o.state == EventState::Scheduled))
                {
                    batch.keep_newest_roster_start(tx, ev, mark, actor).await?;
                }
            }
            // The snapshot listed them, whether their row applied or was
            // refused (a refused row says nothing of them, but its absence
            // must never end them).
            if !matches!(ev.kind, EventKind::Terminate | EventKind::Rescind) {
                batch.attach_listing(&ev.employee_id, mark);
            }
            results.push(res);
        }
        for (id, presence) in unchanged {
            match batch.present(tx, id, presence, actor).await {
                Err(e) if e.is_store() => return Err(e),
                Err(e) => {
                    tracing::warn!(employee = %id, error = %e, "roster presence refused");
                    batch.attach_listing(id, mark);
                }
                Ok(_) => {}
            }
        }
        let queued = batch.flush(tx).await?;
        Ok((results, queued))
    }

    /// Records a roster snapshot as applied, in `tx`, and replays the
    /// people `behind` it (see `roster::behind`) and the people working
    /// here whom it does not list and whose HR events, dated at or before
    /// its time, came after it read the people (`read`).
    ///
    /// The snapshot's diff was made from the people as they were when it
    /// was read; a snapshot applied in steps lets intake go on between
    /// them, and a held one waits for its release. A hire that came
    /// meanwhile, of someone the snapshot does not list, is no leaver in
    /// that diff, yet in effective order the snapshot's absence ends them
    /// if they worked here at its time. Only now, with the snapshot among
    /// the applied ones, does a replay of such a person see it (without
    /// this, they kept their access until some older event of theirs
    /// happened to make their history replay).
    pub(crate) async fn finish_roster(
        &self,
        tx: &mut WriteTx,
        behind: &[String],
        read: RosterRead,
        mark: RosterMark,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, AppError> {
        let cause = format!("roster:{}:{}", mark.source, mark.sync_id);
        let mut queued = self
            .replay_people(tx, behind, Some(&mark), actor, &cause, now)
            .await?;
        let behind: HashSet<&str> = behind.iter().map(String::as_str).collect();
        let changed: Vec<String> = tx
            .people_with_events_after(read.window(), mark.as_of, &mark.source, &mark.sync_id)
            .await?
            .into_iter()
            .filter(|id| !behind.contains(id.as_str()))
            .collect();
        for part in changed.chunks(LATE_CHANGES_CHUNK) {
            // Someone working here now whom the snapshot does not list: its
            // absence may end them. (Anyone else holds no access; a
            // pre-hire only announced by hires to come is not a history
            // to replay.) Most are listed: read without their grants first.
            let concerned: Vec<String> = tx
                .identities_by_ids(part)
                .await?
                .into_iter()
                .filter(|p| p.may_hold_access() && !mark.lists(Some(p)))
                .map(|p| p.employee_id)
                .collect();
            if !concerned.is_empty() {
                queued += self
                    .replay_people(tx, &concerned, None, actor, &cause, now)
                    .await?;
            }
        }
        Ok(queued)
    }

    /// Replays `ids` with the newest roster snapshots, in `tx`, after
    /// recording `applied` among them (when given). Returns how many
    /// directory operations were queued.
    async fn replay_people(
        &self,
        tx: &mut WriteTx,
        ids: &[String],
        applied: Option<&RosterMark>,
        actor: &str,
        cause: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, AppError> {
        let policy = self.policy_for(tx);
        let mut batch = Batch::load(
            tx,
            policy,
            now,
            &[],
            ids,
            self.provisioning(),
            self.creates_accounts(),
        )
        .await?;
        if let Some(mark) = applied {
            batch.roster_applied(tx, mark.clone()).await?;
        }
        for id in ids {
            batch.reconsider(tx, id, actor, cause).await?;
        }
        batch.flush(tx).await
    }

    /// Processes queued jobs in one transaction; on failure, each alone.
    async fn run_batch(&self, jobs: Vec<Job>) {
        let together = async {
            // The server's own concurrency (a policy applied by another
            // replica, a concurrent writer) is retried here, not by clients.
            let jobs = &jobs;
            self.retrying(|| async move {
                let now = self.now();
                let mut tx = self.store.begin().await?;
                let pairs: Vec<(&HrEvent, &str)> =
                    jobs.iter().map(|j| (&j.event, j.actor.as_str())).collect();
                let (results, queued) = self.record(&mut tx, &pairs, now).await?;
                tx.commit(now).await?;
                if queued > 0 {
                    self.wake_provisioning();
                }
                Ok(results)
            })
            .await
        };
        match together.await {
            Ok(results) => {
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, size = jobs.len(), "intake batch failed; retrying its events one by one");
                for job in jobs {
                    let r = self.submit_alone(&job.event, &job.actor).await;
                    let _ = job.reply.send(r);
                }
            }
        }
    }

    /// Before retrying after a conflict: reload the policy if it changed,
    /// and wait a little (longer each time) so concurrent writers part.
    pub(crate) async fn after_conflict(&self, e: &AppError, attempt: u32) {
        tracing::debug!(error = %e, attempt, "retrying after a concurrent change");
        if let Err(e) = self.reload_policy().await {
            tracing::warn!(error = %e, "cannot reload the policy");
        }
        let jitter = u64::from(rand::random::<u8>() % 20);
        tokio::time::sleep(std::time::Duration::from_millis(
            5 * u64::from(attempt) + jitter,
        ))
        .await;
    }

    /// Runs `step` (one transaction, begun and committed inside it) until
    /// it succeeds or fails for a reason other than the server's own
    /// concurrency, which is retried [`RETRIES`] times (see
    /// [`App::after_conflict`]): clients never see it.
    pub(crate) async fn retrying<T, Fut>(
        &self,
        mut step: impl FnMut() -> Fut,
    ) -> Result<T, AppError>
    where
        Fut: std::future::Future<Output = Result<T, AppError>>,
    {
        let mut attempt = 0;
        loop {
            match step().await {
                Err(e) if e.is_retryable() && attempt < RETRIES => {
                    attempt += 1;
                    self.after_conflict(&e, attempt).await;
                }
                r => return r,
            }
        }
    }

    async fn submit_alone(&self, event: &HrEvent, actor: &str) -> Result<SubmitOutcome, AppError> {
        self.retrying(|| async move {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            let (mut results, queued) = self.record(&mut tx, &[(event, actor)], now).await?;
            let r = results
                .pop()
                .unwrap_or_else(|| Err(AppError::Unavailable("no result".into())))?;
            tx.commit(now).await?;
            if queued > 0 {
                self.wake_provisioning();
            }
            Ok(r)
        })
        .await
    }

    /// Applies scheduled events that are due, in one transaction. Returns
    /// how many this process applied (others may have been claimed by
    /// another replica meanwhile).
    pub async fn apply_scheduled(&self, due: &[RecordedEvent]) -> Result<u64, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let refs: Vec<&HrEvent> = due.iter().map(|r| &r.event).collect();
        let mut batch = self.hr_batch(&mut tx, now, &refs).await?;
        let mut applied = 0;
        for rec in due {
            if batch.apply_due(&mut tx, &rec.event, &rec.actor).await? {
                applied += 1;
            }
        }
        let queued = batch.flush(&mut tx).await?;
        tx.commit(now).await?;
        if queued > 0 {
            self.wake_provisioning();
        }
        Ok(applied)
    }
}

/// The outcome detail of an applied transition.
fn describe(t: &Transition) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(n) = &t.note {
        parts.push(n.clone());
    }
    if t.replayed {
        parts.push(
            "older than state already applied: the history was replayed in effective order".into(),
        );
    }
    if t.end_date_reached {
        parts.push("the end date is over: terminated".into());
    }
    parts.join("; ")
}

/// "A → B → C → A".
pub(crate) fn cycle_text(cycle: &[String]) -> String {
    cycle.join(" → ")
}

/// Runs the intake writer until the application is dropped or shutdown
/// begins; then it takes no more events and applies those already queued.
pub(crate) async fn writer_loop(
    app: Weak<App>,
    mut rx: mpsc::Receiver<Job>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let first = tokio::select! {
            j = rx.recv() => j,
            _ = stop.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let Some(app) = app.upgrade() else { break };
        app.run_batch(batch).await;
    }
}
