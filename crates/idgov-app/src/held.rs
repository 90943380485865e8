//! Releasing and discarding changes held by the mass-change guard.

use super::App;
use super::policy::StagedPolicy;
use super::roster::StagedSync;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::guard::Verdict;
use idgov_domain::guard::{HeldKind, HeldState};
use idgov_domain::policy::Policy;
use idgov_store::{HeldChange, WriteTx};
use serde_json::json;

/// Holds a change in `tx` (nothing of it is applied) and records the
/// security event `action`, whose detail gets the summary and the guard's
/// verdict added. Returns the held change's id.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn hold(
    tx: &mut WriteTx,
    kind: HeldKind,
    summary: String,
    guard: Verdict,
    payload: serde_json::Value,
    action: Action,
    mut detail: serde_json::Value,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, AppError> {
    let id = uuid::Uuid::now_v7().to_string();
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
        let mut detail = json!({"kind": held.kind, "summary": held.summary, "reason": reason});
        if decision == HeldState::Released {
            detail["result"] = self.apply_held(&mut tx, &held, actor, now).await?;
        } else if held.kind == HeldKind::CampaignClose {
            // Discarded: the campaign closes, nothing revoked by default
            // (the unanswered are kept, flagged).
            let staged: crate::review::StagedClose =
                serde_json::from_value(held.payload.clone()).map_err(corrupt)?;
            if let Some(mut c) = tx.campaign_for_update(&staged.campaign_id).await? {
                let (defaulted, _, _) =
                    self.apply_close(&mut tx, &mut c, false, actor, now).await?;
                detail["result"] = json!({"campaign": c.id, "defaulted_kept": defaulted});
            }
        }
        let recompute = detail["result"]["recompute"].as_str().map(String::from);
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
        }
        self.held_or_not_found(id).await
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
                let (defaulted, revoked, _) =
                    self.apply_close(tx, &mut c, true, actor, now).await?;
                json!({"campaign": c.id, "defaulted": defaulted, "revoked": revoked})
            }
            HeldKind::RosterSync => {
                let staged: StagedSync =
                    serde_json::from_value(held.payload.clone()).map_err(corrupt)?;
                let mut applied = 0u64;
                let mut rejected = Vec::new();
                let (presences, mark) = staged.presences(now);
                let (results, _) = self
                    .record_roster(
                        tx,
                        &staged.events,
                        &presences,
                        &staged.behind,
                        mark,
                        actor,
                        now,
                    )
                    .await?;
                for (ev, r) in staged.events.iter().zip(results) {
                    match r {
                        Ok(_) => applied += 1,
                        Err(e) => rejected.push((ev.employee_id.clone(), e.to_string())),
                    }
                }
                json!({"events_applied": applied, "rejected": rejected})
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

    async fn held_or_not_found(&self, id: &str) -> Result<HeldChange, AppError> {
        self.store.get_held_change(id).await?.ok_or_else(|| {
            AppError::not_found(format!(
                "there is no held change {}",
                idgov_domain::error::echo(id)
            ))
        })
    }
}
