//! Releasing and discarding changes held by the mass-change guard.

use super::App;
use super::policy::StagedPolicy;
use super::roster::{HeldItems, RosterSteps, StagedSync};
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::guard::Verdict;
use idgov_domain::guard::{HeldKind, HeldState};
use idgov_domain::policy::Policy;
use idgov_domain::roster::{DiffCounts, RosterDiff};
use idgov_store::{BulkJob, HeldChange, WriteTx};
use serde_json::json;

/// The kind of the bulk job that applies a released roster sync.
pub const ROSTER_RELEASE: &str = "roster_release";

/// A released roster sync's job, as its steps record it.
pub(crate) struct StepJob<'a> {
    pub id: &'a str,
    /// The job's detail when the run started (with the refusals of any
    /// earlier run).
    pub detail: serde_json::Value,
}

impl StepJob<'_> {
    /// `detail` (the job's detail after the steps before) after the
    /// refusals of one step (each with the employee id of its event): how
    /// many in all, and the first [`crate::roster::SHOWN_CHANGES`] of them
    /// with their reasons. Only that many are ever kept, so a roster whose
    /// every event is refused holds no more than a roster with a few.
    pub(crate) fn progress(
        detail: &serde_json::Value,
        here: &[(String, AppError)],
    ) -> serde_json::Value {
        let mut d = detail.clone();
        let before = d["refused_count"].as_u64().unwrap_or(0);
        let mut list: Vec<serde_json::Value> = d["refused"].as_array().cloned().unwrap_or_default();
        let room = crate::roster::SHOWN_CHANGES.saturating_sub(list.len());
        list.extend(
            here.iter()
                .take(room)
                .map(|(who, e)| json!([who, e.to_string()])),
        );
        d["refused_count"] = json!(before + here.len() as u64);
        d["refused"] = json!(list);
        d
    }
}

/// Holds a change as `id` in `tx` (nothing of it is applied) and records
/// the security event `action`, whose detail gets the summary and the
/// guard's verdict added. Returns the held change's id.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn hold(
    tx: &mut WriteTx,
    id: String,
    kind: HeldKind,
    summary: String,
    guard: Verdict,
    payload: serde_json::Value,
    action: Action,
    mut detail: serde_json::Value,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, AppError> {
    if let Some(d) = detail.as_object_mut() {
        d.insert("summary".into(), json!(summary));
        d.insert("guard".into(), json!(guard));
    }
    tx.insert_held_change(&HeldChange {
        id: id.clone(),
        kind,
        state: HeldState::Held,
        created_at: now,
        created_by: actor.to_string(),
        summary,
        guard,
        payload,
        decided_by: None,
        decided_at: None,
        decision_reason: None,
    })
    .await?;
    tx.audit(AuditEntry::new(actor, action, Target::HeldChange(id.to_string()), detail).security());
    Ok(id)
}

/// Where a held roster sync's changes are staged (none for one held
/// before they were).
pub(crate) fn staged_items_of(held: &HeldChange) -> Option<HeldItems> {
    serde_json::from_value(held.payload.get("staged")?.clone()).ok()
}

/// A held roster sync's diff as shown (at most
/// [`crate::roster::SHOWN_CHANGES`] changes) and the counts of all of it;
/// none for other kinds.
pub fn held_diff(held: &HeldChange) -> Option<(RosterDiff, DiffCounts)> {
    let diff: RosterDiff = serde_json::from_value(held.payload.get("diff")?.clone()).ok()?;
    let counts = staged_items_of(held).map_or_else(|| diff.counts(), |s| s.counts);
    Some((diff, counts))
}

/// A stored payload that no longer reads back.
fn corrupt(e: serde_json::Error) -> AppError {
    AppError::Store(idgov_store::StoreError::Corrupt(format!(
        "held change payload: {e}"
    )))
}

impl App {
    /// Applies a held change as staged, and records who released it, in one
    /// transaction: all of it applies, or none.
    pub async fn release_held(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<HeldChange, AppError> {
        self.decide_held(id, HeldState::Released, reason, actor)
            .await
    }

    /// Discards a held change; nothing of it is applied.
    pub async fn discard_held(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<HeldChange, AppError> {
        self.decide_held(id, HeldState::Discarded, reason, actor)
            .await
    }

    /// Records the decision on a held change with its audit event, applying
    /// the change first when it is released.
    async fn decide_held(
        &self,
        id: &str,
        decision: HeldState,
        reason: &str,
        actor: &str,
    ) -> Result<HeldChange, AppError> {
        let verb = match decision {
            HeldState::Released => "released",
            HeldState::Discarded => "discarded",
            HeldState::Held => {
                return Err(AppError::invalid("decision", "release or discard"));
            }
        };
        if reason.trim().is_empty() {
            return Err(AppError::invalid(
                "reason",
                format!("say why the held change is {verb}"),
            ));
        }
        if let Some(p) = idgov_domain::identity::text_problem(reason.trim(), 1000) {
            return Err(AppError::invalid("reason", p));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let held = self.open_held(&mut tx, id).await?;
        let mut discarded_rows = None;
        let mut detail = json!({"kind": held.kind, "summary": held.summary, "reason": reason});
        if decision == HeldState::Released {
            detail["result"] = self.apply_held(&mut tx, &held, actor, now).await?;
        } else if held.kind == HeldKind::RosterSync
            && let Some(items) = staged_items_of(&held)
        {
            // Discarded: its staged rows go once this commits.
            tx.update_bulk_job(&items.job, "discarded", "0", &json!({"held": held.id}), now)
                .await?;
            discarded_rows = Some(items);
        } else if held.kind == HeldKind::CampaignClose {
            // Discarded: the campaign closes, nothing revoked by default
            // (the unanswered are kept, flagged), in steps after the commit.
            let staged: crate::review::StagedClose =
                serde_json::from_value(held.payload.clone()).map_err(corrupt)?;
            if let Some(mut c) = tx.campaign_for_update(&staged.campaign_id).await? {
                self.resume_held_close(&mut tx, &mut c, false, actor)
                    .await?;
                detail["result"] = json!({"campaign": c.id, "closing": true, "revoke": false});
            }
        }
        // A close released or discarded goes on in steps once this commits.
        let closing = (held.kind == HeldKind::CampaignClose)
            .then(|| detail["result"]["campaign"].as_str().map(String::from))
            .flatten();
        let recompute = detail["result"]["recompute"].as_str().map(String::from);
        let release = detail["result"]["release_job"].as_str().map(String::from);
        tx.decide_held_change(id, decision, actor, reason, now)
            .await?;
        tx.audit(
            AuditEntry::new(
                actor,
                match decision {
                    HeldState::Released => Action::HeldChangeReleased,
                    _ => Action::HeldChangeDiscarded,
                },
                Target::HeldChange(id.to_string()),
                detail,
            )
            .security(),
        );
        tx.commit(now).await?;
        if let Some(items) = discarded_rows {
            self.drop_staged(&items.job, items.changes + items.present)
                .await;
        }
        if let Some(campaign) = closing {
            self.finish_close(&campaign).await?;
        }
        if decision == HeldState::Released {
            self.wake_provisioning();
            if held.kind == HeldKind::PolicyApply {
                self.reload_policy().await?;
            }
            if let Some(job) = recompute
                && let Some(job) = self.store.get_bulk_job(&job).await?
            {
                self.run_recompute(&job).await?;
            }
            if let Some(job) = release
                && let Some(job) = self.store.get_bulk_job(&job).await?
            {
                self.run_roster_release(&job).await?;
            }
        }
        self.held_or_not_found(id).await
    }

    /// Applies a released roster sync: its events, then the presences of
    /// the people it listed unchanged, in bounded steps that each record
    /// the job's progress in their own transaction, then the people behind
    /// it and a `roster.sync` audit event that says it is applied. Running
    /// it again (after a crash, by `resume_bulk_jobs`) goes on from the
    /// recorded place; running a finished one changes nothing.
    pub async fn run_roster_release(&self, job: &BulkJob) -> Result<serde_json::Value, AppError> {
        if job.state == "staging" {
            // A sync cut short while it was staged to be held: nothing of
            // it is held or applied.
            self.interrupted_sync(job).await?;
            return Ok(job.detail.clone());
        }
        if job.state != "running" {
            return Ok(job.detail.clone());
        }
        let held_id = job.detail["held"].as_str().unwrap_or_default();
        let actor = job.detail["actor"]
            .as_str()
            .unwrap_or(crate::SYSTEM_SCHEDULER)
            .to_string();
        let held = self.held_or_not_found(held_id).await?;
        let mut staged: StagedSync = serde_json::from_value(held.payload).map_err(corrupt)?;
        let mark = staged.mark(held.decided_at.unwrap_or(job.created_at));
        let steps = match &staged.staged {
            Some(items) => {
                let zone = idgov_domain::time::parse_zone(&staged.time_zone).map_err(|e| {
                    AppError::Store(idgov_store::StoreError::Corrupt(e.to_string()))
                })?;
                let as_of = staged.as_of.unwrap_or(job.created_at);
                RosterSteps::staged(
                    &items.job,
                    items.changes,
                    items.present,
                    Some((as_of, zone)),
                )
            }
            None => RosterSteps::in_memory(
                std::mem::take(&mut staged.events),
                std::mem::take(&mut staged.present),
            ),
        };
        let staged_rows = staged.staged.as_ref().map(|s| s.changes + s.present);
        let from = job.cursor.parse::<usize>().unwrap_or(0);
        let step = StepJob {
            id: &job.id,
            detail: job.detail.clone(),
        };
        let detail = self
            .record_roster_in_steps(&steps, &mark, &actor, from, &step)
            .await?;
        let (events, total) = (steps.events, steps.events + steps.present);
        let refused_count = detail["refused_count"].as_u64().unwrap_or(0);
        let held_at = held.created_at;
        let (staged, mark, detail, actor, held_id) = (&staged, &mark, &detail, &actor, &held.id);
        self.retrying(|| async move {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            let read = crate::intake::RosterRead {
                at: staged.read_at.unwrap_or(held_at),
                arrival: staged.read_arrival,
            };
            self.finish_roster(&mut tx, &staged.behind, read, mark.clone(), actor, now)
                .await?;
            tx.update_bulk_job(&job.id, "done", &total.to_string(), detail, now)
                .await?;
            tx.audit(AuditEntry::new(
                actor,
                Action::RosterSync,
                Target::Roster {
                    source: staged.source.clone(),
                    sync_id: staged.sync_id.clone(),
                },
                json!({
                    "outcome": "applied", "released_from": held_id, "release_job": job.id,
                    "events": events,
                    "events_applied": (events as u64).saturating_sub(refused_count),
                    "rejected": detail["refused"],
                }),
            ));
            tx.commit(now).await?;
            Ok(())
        })
        .await?;
        self.wake_provisioning();
        if let Some(items) = staged_rows {
            self.drop_staged(&job.id, items).await;
        }
        Ok(detail.clone())
    }

    /// Applies a held change as staged, inside `tx`; returns what it did.
    async fn apply_held(
        &self,
        tx: &mut WriteTx,
        held: &HeldChange,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value, AppError> {
        Ok(match held.kind {
            HeldKind::CampaignClose => {
                let staged: crate::review::StagedClose =
                    serde_json::from_value(held.payload.clone()).map_err(corrupt)?;
                let mut c = tx
                    .campaign_for_update(&staged.campaign_id)
                    .await?
                    .ok_or_else(|| AppError::not_found("the held campaign is gone"))?;
                // The defaults apply in steps once this decision commits.
                self.resume_held_close(tx, &mut c, true, actor).await?;
                json!({"campaign": c.id, "closing": true, "revoke": true})
            }
            HeldKind::RosterSync => {
                // The decision is recorded here; the staged events are
                // applied after it commits, in bounded steps that record
                // their progress (`run_roster_release`): a large release
                // does not hold the writer, and a crash resumes it.
                let staged: StagedSync =
                    serde_json::from_value(held.payload.clone()).map_err(corrupt)?;
                let events = staged
                    .staged
                    .as_ref()
                    .map_or(staged.events.len(), |s| s.changes);
                let job = BulkJob {
                    id: format!("release-{}", held.id),
                    kind: ROSTER_RELEASE.into(),
                    state: "running".into(),
                    policy_version: self.policy().version,
                    cursor: "0".into(),
                    detail: json!({
                        "actor": actor, "held": held.id, "events": events,
                        "source": staged.source, "sync_id": staged.sync_id,
                        "refused_count": 0, "refused": [],
                    }),
                    created_at: now,
                    updated_at: now,
                };
                let lease = now + chrono::Duration::seconds(crate::policy::JOB_LEASE_SECONDS);
                match &staged.staged {
                    // Staged when it was held: its job starts, leased here.
                    Some(items) => {
                        tx.update_bulk_job(&items.job, "running", "0", &job.detail, now)
                            .await?;
                        tx.lease_bulk_job(&items.job, &self.holder, lease).await?;
                        json!({"events": events, "release_job": items.job})
                    }
                    // Held before changes were staged: all in the payload.
                    None => {
                        tx.insert_bulk_job(&job, &self.holder, lease).await?;
                        json!({"events": events, "release_job": job.id})
                    }
                }
            }
            HeldKind::PolicyApply => {
                let staged: StagedPolicy =
                    serde_json::from_value(held.payload.clone()).map_err(corrupt)?;
                let new = Policy::parse(&staged.document)?;
                // insert_policy would refuse a stale base too; this says
                // what to do about it.
                let in_force = tx.policy_version().await?;
                if in_force != staged.base_version {
                    return Err(AppError::precondition(format!(
                        "the policy changed since this was held (version {} → {}); discard it and apply again",
                        staged.base_version, in_force
                    )));
                }
                let diff = self.policy().policy.diff(&new);
                let job = self
                    .store_policy(
                        tx,
                        &new,
                        staged.base_version,
                        &staged.reason,
                        actor,
                        &held.created_by,
                        &diff,
                        now,
                    )
                    .await?;
                json!({"recompute": job.id})
            }
        })
    }

    async fn open_held(&self, tx: &mut WriteTx, id: &str) -> Result<HeldChange, AppError> {
        let held = tx.get_held_change(id).await?.ok_or_else(|| {
            AppError::not_found(format!(
                "there is no held change {}",
                idgov_domain::error::echo(id)
            ))
        })?;
        if held.state != HeldState::Held {
            return Err(AppError::precondition(format!(
                "held change {id} was already {} by {}",
                held.state,
                held.decided_by.as_deref().unwrap_or("someone")
            )));
        }
        Ok(held)
    }

    pub(crate) async fn held_or_not_found(&self, id: &str) -> Result<HeldChange, AppError> {
        self.store.get_held_change(id).await?.ok_or_else(|| {
            AppError::not_found(format!(
                "there is no held change {}",
                idgov_domain::error::echo(id)
            ))
        })
    }
}
