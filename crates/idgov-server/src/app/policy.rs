//! Applying a policy document: validate, measure the impact, guard, then
//! store it and recompute everyone's birthright in one transaction.

use super::intake::Batch;
use super::{ActivePolicy, App};
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_domain::audit::AuditEntry;
use idgov_domain::grant::{Grant, GrantChange};
use idgov_domain::guard::{self, HeldKind, Verdict};
use idgov_domain::identity::Identity;
use idgov_domain::lifecycle::{Cause, reconcile_access};
use idgov_domain::policy::{Policy, PolicyDiff};
use idgov_store::WriteTx;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// What a policy change does to grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impact {
    pub grants_added: u64,
    pub grants_revoked: u64,
    /// Identities losing at least one grant.
    pub identities_losing: u64,
    pub identities_affected: u64,
}

/// The outcome of applying a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcome {
    Applied,
    Held,
    DryRun,
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct ApplyResult {
    pub outcome: PolicyOutcome,
    pub policy: std::sync::Arc<ActivePolicy>,
    pub diff: PolicyDiff,
    pub impact: Impact,
    pub guard: Verdict,
    pub held_change_id: Option<String>,
}

/// What a held policy change stores for its release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StagedPolicy {
    pub document: String,
    pub reason: String,
    pub base_version: i64,
}

fn measure(
    policy: &Policy,
    identities: &HashMap<String, Identity>,
    grants: &HashMap<String, Vec<Grant>>,
) -> Impact {
    let mut impact = Impact::default();
    let none = Vec::new();
    for i in identities.values().filter(|i| i.may_hold_access()) {
        let held = grants.get(&i.employee_id).unwrap_or(&none);
        let (changes, _) = reconcile_access(i, held, policy, Cause::Policy);
        let revoked = changes
            .iter()
            .filter(|c| matches!(c, GrantChange::Revoke { .. }))
            .count() as u64;
        let added = changes
            .iter()
            .filter(|c| matches!(c, GrantChange::Add(_)))
            .count() as u64;
        impact.grants_added += added;
        impact.grants_revoked += revoked;
        impact.identities_losing += u64::from(revoked > 0);
        impact.identities_affected += u64::from(!changes.is_empty());
    }
    impact
}

impl App {
    /// Validates `document` and applies it (or, with `dry_run`, only reports
    /// what it would do). A change that would strip grants from more people
    /// than the current guard allows is held.
    pub async fn apply_policy(
        &self,
        document: &str,
        dry_run: bool,
        reason: &str,
        actor: &str,
    ) -> Result<ApplyResult, AppError> {
        let new = Policy::parse(document)?;
        let identities = self.store.all_identities().await?;
        new.check_owners(|id| identities.get(id).map(|i| i.status))?;
        let current = self.policy();
        let diff = current.policy.diff(&new);
        let grants = self.store.all_active_grants().await?;
        let impact = measure(&new, &identities, &grants);
        let active = identities.values().filter(|i| i.may_hold_access()).count() as u64;
        // The guard in force decides; a change cannot loosen its own guard.
        let verdict = guard::evaluate(active, impact.identities_losing, &current.policy.guard);
        let mut result = ApplyResult {
            outcome: PolicyOutcome::DryRun,
            policy: current.clone(),
            diff,
            impact,
            guard: verdict,
            held_change_id: None,
        };
        if dry_run {
            return Ok(result);
        }
        if current.version > 0 && current.sha256 == new.sha256() {
            result.outcome = PolicyOutcome::Unchanged;
            return Ok(result);
        }
        let now = self.now();
        if verdict.tripped {
            let summary = format!(
                "policy change would revoke {} grants from {} of {} active people (threshold {})",
                result.impact.grants_revoked, verdict.affected, verdict.active, verdict.threshold
            );
            let staged = StagedPolicy {
                document: document.to_string(),
                reason: reason.to_string(),
                base_version: current.version,
            };
            let mut tx = self.store.begin().await?;
            let id = super::held::hold(
                &mut tx,
                HeldKind::PolicyApply,
                summary,
                verdict,
                serde_json::to_value(&staged).unwrap_or_default(),
                "policy.apply.held",
                json!({"diff": result.diff, "reason": reason}),
                actor,
                now,
            )
            .await?;
            tx.commit(now).await?;
            result.outcome = PolicyOutcome::Held;
            result.held_change_id = Some(id);
            return Ok(result);
        }
        let mut tx = self.store.begin().await?;
        let applied = self
            .store_policy(
                &mut tx,
                &new,
                current.version,
                reason,
                actor,
                actor,
                &result.diff,
                now,
            )
            .await?;
        tx.commit(now).await?;
        self.wake_provisioning();
        result.policy = self.reload_policy().await?;
        result.impact = applied;
        result.outcome = PolicyOutcome::Applied;
        Ok(result)
    }

    /// Stores `new` as the next version and recomputes every identity's
    /// grants, inside `tx`. `actor` applies it; `requested_by` proposed it
    /// (they differ when a held change is released).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_policy(
        &self,
        tx: &mut WriteTx,
        new: &Policy,
        base_version: i64,
        reason: &str,
        actor: &str,
        requested_by: &str,
        diff: &PolicyDiff,
        now: DateTime<Utc>,
    ) -> Result<Impact, AppError> {
        let version = tx
            .insert_policy(
                base_version,
                &new.document,
                &new.sha256(),
                actor,
                reason,
                now,
            )
            .await?;
        let cause = format!("policy:v{version}");
        let deciding = Arc::new(ActivePolicy {
            version,
            policy: new.clone(),
            applied_at: Some(now),
            applied_by: actor.to_string(),
            sha256: new.sha256(),
        });
        // Everyone and their grants in a few set-based reads; the changes
        // are written set-based by the batch, as HR events' are.
        let ids = tx.identity_ids().await?;
        let mut batch = Batch::for_people(
            tx,
            deciding,
            now,
            &ids,
            self.provisioning(),
            self.creates_accounts(),
        )
        .await?;
        let mut impact = Impact::default();
        for id in &ids {
            let (Some(person), grants) = batch.current(id) else {
                continue;
            };
            if !person.may_hold_access() {
                continue;
            }
            let (changes, _) = reconcile_access(&person, &grants, new, Cause::Policy);
            if changes.is_empty() {
                continue;
            }
            let (added, revoked) = batch.stage_grant_changes(tx, id, &changes, &cause, actor);
            impact.identities_affected += 1;
            impact.identities_losing += u64::from(revoked > 0);
            impact.grants_added += u64::from(added);
            impact.grants_revoked += u64::from(revoked);
        }
        batch.flush(tx).await?;
        tx.audit(AuditEntry::new(
            actor,
            "policy.applied",
            "policy",
            json!({
                "version": version, "sha256": new.sha256(), "reason": reason, "requested_by": requested_by,
                "changes": diff, "impact": impact,
            }),
        ));
        Ok(impact)
    }
}
