//! HR intake: recording and applying HR events.
//!
//! Every event is processed inside a write transaction: the idempotency
//! record, the identity change, the grant changes and their audit events
//! commit together, so an acknowledged event is durable and complete.
//!
//! Submitted events go through one writer task that groups whatever is
//! queued into one transaction (group commit): one durable commit
//! acknowledges many events. If a batch fails, each of its events is retried
//! alone, so one bad event never fails another.

use super::{ActivePolicy, App, SYSTEM_SCHEDULER};
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::audit::AuditEntry;
use idgov_domain::hr::{EventKind, EventState, HrEvent};
use idgov_domain::identity::Status;
use idgov_domain::lifecycle::{Decision, Transition, decide};
use idgov_domain::{DomainError, ErrorCode};
use idgov_store::{RecordedEvent, WriteTx};
use serde_json::json;
use std::sync::Weak;
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

impl App {
    /// Records and (when due) applies one HR event. Returns once the event
    /// is durable.
    pub async fn submit_event(
        &self,
        event: HrEvent,
        actor: &str,
    ) -> Result<SubmitOutcome, AppError> {
        let (reply, rx) = oneshot::channel();
        self.writer
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

    /// Processes a batch in one transaction; on failure, each job alone.
    async fn run_batch(&self, batch: Vec<Job>) {
        let now = self.now();
        let together = async {
            let mut tx = self.store.begin().await?;
            let policy = self.policy_in(&mut tx).await?;
            let mut results = Vec::with_capacity(batch.len());
            for job in &batch {
                match process_event(&mut tx, &job.event, &job.actor, &policy, now).await {
                    Err(e) if e.is_store() => return Err(e),
                    r => results.push(r),
                }
            }
            tx.commit(now).await?;
            Ok::<_, AppError>(results)
        };
        match together.await {
            Ok(results) => {
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "intake batch failed; retrying its events one by one");
                for job in batch {
                    let r = self.process_alone(&job.event, &job.actor).await;
                    let _ = job.reply.send(r);
                }
            }
        }
    }

    async fn process_alone(&self, event: &HrEvent, actor: &str) -> Result<SubmitOutcome, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let policy = self.policy_in(&mut tx).await?;
        let r = process_event(&mut tx, event, actor, &policy, now).await?;
        tx.commit(now).await?;
        Ok(r)
    }

    /// Applies a scheduled event that is due. Returns false when another
    /// process applied it first.
    pub async fn apply_scheduled(&self, rec: &RecordedEvent) -> Result<bool, AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let policy = self.policy_in(&mut tx).await?;
        let ev = &rec.event;
        // Re-read under lock: the claim that makes it run once.
        match tx.get_hr_event(&ev.source, &ev.event_id).await? {
            Some(r) if r.state == EventState::Scheduled => {}
            _ => return Ok(false),
        }
        let current = tx.get_identity(&ev.employee_id).await?;
        let grants = match &current {
            Some(_) => tx.active_grants(&ev.employee_id).await?,
            None => vec![],
        };
        let detail_base = json!({
            "source": ev.source, "event_id": ev.event_id, "kind": ev.kind,
            "effective_at": ev.effective_at.to_rfc3339(), "submitted_by": rec.actor,
        });
        let target = format!("identity:{}", ev.employee_id);
        match decide(current.as_ref(), &grants, ev, &policy.policy, now) {
            Decision::Apply(t) => {
                tx.transition_hr_event(
                    &ev.source,
                    &ev.event_id,
                    EventState::Scheduled,
                    EventState::Applied,
                    "",
                    now,
                )
                .await?;
                apply_transition(&mut tx, ev, &t, SYSTEM_SCHEDULER, &policy, now).await?;
            }
            Decision::Superseded { reason } => {
                tx.transition_hr_event(
                    &ev.source,
                    &ev.event_id,
                    EventState::Scheduled,
                    EventState::Superseded,
                    &reason,
                    now,
                )
                .await?;
                tx.audit(AuditEntry::new(
                    SYSTEM_SCHEDULER,
                    "hr.event.superseded",
                    target,
                    with(detail_base, "reason", &reason),
                ));
            }
            Decision::Reject { reason } => {
                tx.transition_hr_event(
                    &ev.source,
                    &ev.event_id,
                    EventState::Scheduled,
                    EventState::Rejected,
                    &reason,
                    now,
                )
                .await?;
                tx.audit(
                    AuditEntry::new(
                        SYSTEM_SCHEDULER,
                        "hr.event.rejected",
                        target,
                        with(detail_base, "reason", &reason),
                    )
                    .security(),
                );
            }
            Decision::Schedule { .. } => return Ok(false),
        }
        tx.commit(now).await?;
        Ok(true)
    }
}

/// Runs the intake writer until the application is dropped.
pub(crate) async fn writer_loop(app: Weak<App>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
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

fn with(mut v: serde_json::Value, key: &str, value: &str) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), json!(value));
    }
    v
}

/// Records and applies one event within `tx`. Domain errors are returned
/// before anything is written; store errors leave `tx` unusable.
pub(crate) async fn process_event(
    tx: &mut WriteTx,
    ev: &HrEvent,
    actor: &str,
    policy: &ActivePolicy,
    now: DateTime<Utc>,
) -> Result<SubmitOutcome, AppError> {
    if let Some(existing) = tx.get_hr_event(&ev.source, &ev.event_id).await? {
        if existing.event.fingerprint != ev.fingerprint {
            return Err(AppError::Domain(DomainError::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "event {:?} from {:?} was already accepted with a different payload; \
                     use a new event_id for a new event",
                    ev.event_id, ev.source
                ),
            )));
        }
        return Ok(SubmitOutcome {
            state: existing.state,
            duplicate: true,
            effective_at: existing.event.effective_at,
            detail: existing.detail,
            grants_added: 0,
            grants_revoked: 0,
        });
    }
    if ev.kind == EventKind::Rescind {
        return rescind(tx, ev, actor, now).await;
    }
    let current = tx.get_identity(&ev.employee_id).await?;
    let grants = match &current {
        Some(_) => tx.active_grants(&ev.employee_id).await?,
        None => vec![],
    };
    let target = format!("identity:{}", ev.employee_id);
    let base = json!({
        "source": ev.source, "event_id": ev.event_id, "kind": ev.kind,
        "effective_at": ev.effective_at.to_rfc3339(),
    });
    let outcome = |state, detail: String| SubmitOutcome {
        state,
        duplicate: false,
        effective_at: ev.effective_at,
        detail,
        grants_added: 0,
        grants_revoked: 0,
    };
    match decide(current.as_ref(), &grants, ev, &policy.policy, now) {
        Decision::Reject { reason } => Err(AppError::precondition(reason)),
        Decision::Superseded { reason } => {
            tx.insert_hr_event(ev, EventState::Superseded, &reason, actor, now)
                .await?;
            tx.audit(AuditEntry::new(
                actor,
                "hr.event.superseded",
                target,
                with(base, "reason", &reason),
            ));
            Ok(outcome(EventState::Superseded, reason))
        }
        Decision::Schedule { pre_hire } => {
            let detail = format!("scheduled for {}", ev.effective_at.to_rfc3339());
            tx.insert_hr_event(ev, EventState::Scheduled, &detail, actor, now)
                .await?;
            if let Some(p) = pre_hire {
                tx.put_identity(&p).await?;
                tx.audit(AuditEntry::new(
                    actor,
                    "identity.pre_hire_created",
                    target.clone(),
                    json!({"employee_id": p.employee_id, "starts_at": ev.effective_at.to_rfc3339()}),
                ));
            }
            tx.audit(AuditEntry::new(actor, "hr.event.scheduled", target, base));
            Ok(outcome(EventState::Scheduled, detail))
        }
        Decision::Apply(t) => {
            tx.insert_hr_event(ev, EventState::Applied, "", actor, now)
                .await?;
            let (added, revoked) = apply_transition(tx, ev, &t, actor, policy, now).await?;
            Ok(SubmitOutcome {
                grants_added: added,
                grants_revoked: revoked,
                ..outcome(EventState::Applied, t.note.clone().unwrap_or_default())
            })
        }
    }
}

/// Writes a transition and its audit events. Returns (added, revoked).
pub(crate) async fn apply_transition(
    tx: &mut WriteTx,
    ev: &HrEvent,
    t: &Transition,
    actor: &str,
    policy: &ActivePolicy,
    now: DateTime<Utc>,
) -> Result<(u32, u32), AppError> {
    let id = &t.identity.employee_id;
    tx.put_identity(&t.identity).await?;
    let cause = format!("hr:{}:{}", ev.source, ev.event_id);
    let applied = tx
        .apply_grant_changes(id, &t.grant_changes, &policy.policy, &cause, now)
        .await?;
    let target = format!("identity:{id}");
    tx.audit(AuditEntry::new(
        actor,
        "hr.event.applied",
        target.clone(),
        json!({
            "source": ev.source,
            "event_id": ev.event_id,
            "kind": ev.kind,
            "effective_at": ev.effective_at.to_rfc3339(),
            "status": {"from": t.previous_status, "to": t.identity.status},
            "changes": t.changes,
            "mover": t.mover,
            "withheld": t.withheld,
            "note": t.note,
        }),
    ));
    for (grant_id, ent) in &applied.added {
        tx.audit(AuditEntry::new(
            actor,
            "grant.added",
            format!("grant:{grant_id}"),
            json!({"employee_id": id, "entitlement_id": ent, "source": "birthright", "cause": cause}),
        ));
    }
    for c in &t.grant_changes {
        if let idgov_domain::grant::GrantChange::Revoke {
            grant_id,
            entitlement_id,
            reason,
        } = c
        {
            tx.audit(AuditEntry::new(
                actor,
                "grant.revoked",
                format!("grant:{grant_id}"),
                json!({"employee_id": id, "entitlement_id": entitlement_id, "reason": reason, "cause": cause}),
            ));
        }
    }
    for (grant_id, ent) in &applied.marked {
        tx.audit(AuditEntry::new(
            actor,
            "grant.mover_review_pending",
            format!("grant:{grant_id}"),
            json!({"employee_id": id, "entitlement_id": ent, "cause": cause}),
        ));
    }
    if t.identity.status == Status::Terminated && t.previous_status != Some(Status::Terminated) {
        let owned: Vec<&str> = policy
            .policy
            .entitlements
            .values()
            .filter(|e| &e.owner == id)
            .map(|e| e.id.as_str())
            .chain(
                policy
                    .policy
                    .systems
                    .values()
                    .filter(|s| &s.owner == id)
                    .map(|s| s.id.as_str()),
            )
            .collect();
        if !owned.is_empty() {
            tx.audit(
                AuditEntry::new(
                    actor,
                    "catalog.owner_left",
                    target,
                    json!({"employee_id": id, "owns": owned, "action": "name a new owner in the policy"}),
                )
                .security(),
            );
        }
    }
    Ok((applied.added.len() as u32, applied.revoked.len() as u32))
}

/// Cancels a scheduled event.
async fn rescind(
    tx: &mut WriteTx,
    ev: &HrEvent,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<SubmitOutcome, AppError> {
    let target_id = ev.rescinds_event_id.as_deref().unwrap_or_default();
    let Some(target) = tx.get_hr_event(&ev.source, target_id).await? else {
        return Err(AppError::not_found(format!(
            "there is no event {target_id:?} from {:?} to rescind",
            ev.source
        )));
    };
    if target.event.employee_id != ev.employee_id {
        return Err(AppError::invalid(
            "event.employee_id",
            format!(
                "event {target_id:?} is about employee {}, not {}",
                target.event.employee_id, ev.employee_id
            ),
        ));
    }
    if target.state != EventState::Scheduled {
        return Err(AppError::precondition(format!(
            "event {target_id:?} is {}, not scheduled; only future-dated events can be rescinded — \
             send a compensating event instead",
            target.state
        )));
    }
    let detail = format!("rescinded by {}", ev.event_id);
    tx.transition_hr_event(
        &ev.source,
        target_id,
        EventState::Scheduled,
        EventState::Rescinded,
        &detail,
        now,
    )
    .await?;
    tx.insert_hr_event(
        ev,
        EventState::Applied,
        &format!("rescinded {target_id}"),
        actor,
        now,
    )
    .await?;
    let id = &ev.employee_id;
    tx.audit(AuditEntry::new(
        actor,
        "hr.event.rescinded",
        format!("identity:{id}"),
        json!({"source": ev.source, "event_id": target_id, "kind": target.event.kind, "rescinded_by": ev.event_id}),
    ));
    // A withdrawn offer: the pre-hire never starts.
    if target.event.kind == EventKind::Hire
        && let Some(mut person) = tx.get_identity(id).await?
        && person.status == Status::PreHire
    {
        person.status = Status::Terminated;
        person.status_effective_at = now;
        person.updated_at = now;
        tx.put_identity(&person).await?;
        tx.audit(AuditEntry::new(
            actor,
            "identity.pre_hire_withdrawn",
            format!("identity:{id}"),
            json!({"employee_id": id}),
        ));
    }
    Ok(SubmitOutcome {
        state: EventState::Applied,
        duplicate: false,
        effective_at: ev.effective_at,
        detail: format!("rescinded {target_id}"),
        grants_added: 0,
        grants_revoked: 0,
    })
}
