//! Releasing and discarding changes held by the mass-change guard.

use super::App;
use super::policy::StagedPolicy;
use super::roster::StagedSync;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::audit::AuditEntry;
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
    action: &str,
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
    tx.audit(AuditEntry::new(actor, action, format!("held_change:{id}"), detail).security());
    Ok(id)
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
        if reason.trim().is_empty() {
            return Err(AppError::invalid(
                "reason",
                "say why the held change is released",
            ));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let held = self.open_held(&mut tx, id).await?;
        let mut result = json!({});
        match held.kind {
            HeldKind::RosterSync => {
                let staged: StagedSync =
                    serde_json::from_value(held.payload.clone()).map_err(|e| {
                        AppError::Store(idgov_store::StoreError::Corrupt(e.to_string()))
                    })?;
                let mut applied = 0u64;
                let mut rejected = Vec::new();
                let results = self.submit_all(&mut tx, &staged.events, actor, now).await?;
                for (ev, r) in staged.events.iter().zip(results) {
                    match r {
                        Ok(_) => applied += 1,
                        Err(e) => rejected.push((ev.employee_id.clone(), e.to_string())),
                    }
                }
                result = json!({"events_applied": applied, "rejected": rejected});
            }
            HeldKind::PolicyApply => {
                let staged: StagedPolicy =
                    serde_json::from_value(held.payload.clone()).map_err(|e| {
                        AppError::Store(idgov_store::StoreError::Corrupt(e.to_string()))
                    })?;
                let new = Policy::parse(&staged.document)?;
                // insert_policy checks the base version itself; this
                // transaction changes the policy, so it expects no version.
                let current = self.policy();
                let in_force = tx.policy_version().await?;
                if in_force != staged.base_version {
                    return Err(AppError::precondition(format!(
                        "the policy changed since this was held (version {} → {}); discard it and apply again",
                        staged.base_version, in_force
                    )));
                }
                let diff = current.policy.diff(&new);
                let impact = self
                    .store_policy(
                        &mut tx,
                        &new,
                        staged.base_version,
                        &staged.reason,
                        actor,
                        &held.created_by,
                        &diff,
                        now,
                    )
                    .await?;
                result = json!({"impact": impact});
            }
        }
        tx.decide_held_change(id, HeldState::Released, actor, reason, now)
            .await?;
        tx.audit(
            AuditEntry::new(
                actor,
                "held_change.released",
                format!("held_change:{id}"),
                json!({"kind": held.kind, "summary": held.summary, "reason": reason, "result": result}),
            )
            .security(),
        );
        tx.commit(now).await?;
        self.wake_provisioning();
        if held.kind == HeldKind::PolicyApply {
            self.reload_policy().await?;
        }
        self.held_or_not_found(id).await
    }

    /// Discards a held change; nothing of it is applied.
    pub async fn discard_held(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<HeldChange, AppError> {
        if reason.trim().is_empty() {
            return Err(AppError::invalid(
                "reason",
                "say why the held change is discarded",
            ));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let held = self.open_held(&mut tx, id).await?;
        tx.decide_held_change(id, HeldState::Discarded, actor, reason, now)
            .await?;
        tx.audit(
            AuditEntry::new(
                actor,
                "held_change.discarded",
                format!("held_change:{id}"),
                json!({"kind": held.kind, "summary": held.summary, "reason": reason}),
            )
            .security(),
        );
        tx.commit(now).await?;
        self.wake_provisioning();
        self.held_or_not_found(id).await
    }

    async fn open_held(
        &self,
        tx: &mut idgov_store::WriteTx,
        id: &str,
    ) -> Result<HeldChange, AppError> {
        let held = tx
            .get_held_change(id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("there is no held change {id:?}")))?;
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
        self.store
            .get_held_change(id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("there is no held change {id:?}")))
    }
}
