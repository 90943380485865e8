//! Applying a policy document: validate, measure the impact, guard, then
//! store it and recompute everyone's birthright in one transaction.

use super::intake::Batch;
use super::{ActivePolicy, App};
use crate::error::AppError;
use crate::steps::StepSize;
use chrono::{DateTime, Utc};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::grant::GrantChange;
use idgov_domain::guard::{self, HeldKind, Verdict};
use idgov_domain::lifecycle::{Cause, reconcile_access};
use idgov_domain::policy::{Policy, PolicyDiff};
use idgov_store::{BulkJob, WriteTx};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What a policy change does to grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impact {
    pub grants_added: u64,
    pub grants_revoked: u64,
    /// Identities losing at least one grant.
    pub identities_losing: u64,
    pub identities_affected: u64,
    /// Separation-of-duties conflicts people would then hold without a live
    /// exception (what the detective check would report).
    #[serde(default)]
    pub sod_conflicts: u64,
    /// The first of them, `employee: rule`.
    #[serde(default)]
    pub sod_examples: Vec<String>,
}

/// How many conflicts an impact names.
const SOD_EXAMPLES: usize = 20;

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

/// How many people the first step of a policy recompute takes; later
/// steps take as many as hold the writer for about [`STEP_TARGET`]
/// ([`crate::steps::StepSize`]), between [`STEP_PEOPLE_MIN`] and
/// [`STEP_PEOPLE_MAX`]. Short write transactions, so intake (a leaver
/// above all) never waits long behind them.
pub const STEP_PEOPLE: i64 = 500;

/// The fewest people a step of the policy recompute takes.
pub const STEP_PEOPLE_MIN: u64 = 50;

/// The most people a step of the policy recompute takes: a step holds its
/// people's grants, changes and audit events in memory (about 10 grants a
/// person under a typical policy).
pub const STEP_PEOPLE_MAX: u64 = 2_000;

/// How long a step of the policy recompute should hold the writer: an HR
/// event sent meanwhile waits for at most about this long, well inside the
/// second in which a leaver must be applied.
pub const STEP_TARGET: std::time::Duration = std::time::Duration::from_millis(150);

/// Bulk work refreshes the database's planner statistics every this many
/// steps (see `Store::refresh_statistics`).
pub(crate) const STATISTICS_EVERY: u64 = 20;

/// How long a process holds a bulk job before another may take it over.
pub(crate) const JOB_LEASE_SECONDS: i64 = 60;

/// How long the record of a bulk job that ended (its progress, impact and
/// refusals) is kept before the bulk loop removes it; what it did stays in
/// the audit log.
pub const ENDED_JOBS_KEPT_DAYS: i64 = 30;

fn add_impact(impact: &mut Impact, changes: &[GrantChange]) {
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
        let mut owners = std::collections::HashMap::new();
        for owner in new.owner_ids() {
            if let Some(p) = self.store.get_identity(&owner).await? {
                owners.insert(owner, p.status);
            }
        }
        new.check_owners(|id| owners.get(id).copied())?;
        let current = self.policy();
        let diff = current.policy.diff(&new);
        let (impact, active) = self.measure(&new).await?;
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
                uuid::Uuid::now_v7().to_string(),
                HeldKind::PolicyApply,
                summary,
                verdict,
                serde_json::to_value(&staged).unwrap_or_default(),
                Action::PolicyApplyHeld,
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
        let job = self
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
        result.policy = self.reload_policy().await?;
        result.impact = self.run_recompute(&job).await?;
        result.outcome = PolicyOutcome::Applied;
        Ok(result)
    }

    /// What `new` would do to everyone's grants, measured a page of people
    /// at a time (memory stays bounded). Returns the impact and how many
    /// people are active.
    async fn measure(&self, new: &Policy) -> Result<(Impact, u64), AppError> {
        let mut impact = Impact::default();
        let mut active = 0;
        let mut after = String::new();
        loop {
            let page = self
                .store
                .identities_with_grants_page(&after, 2 * STEP_PEOPLE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.0.employee_id.clone();
            for (person, grants) in &page {
                if !person.may_hold_access() {
                    continue;
                }
                active += 1;
                let (changes, _) = reconcile_access(person, grants, new, Cause::Policy);
                add_impact(&mut impact, &changes);
                if !new.sod.is_empty() {
                    self.measure_sod(person, grants, &changes, new, &mut impact)
                        .await?;
                }
            }
        }
        Ok((impact, active))
    }

    /// Adds the SoD conflicts `person` would hold after `changes` to
    /// `impact`.
    async fn measure_sod(
        &self,
        person: &idgov_domain::identity::Identity,
        grants: &[idgov_domain::grant::Grant],
        changes: &[GrantChange],
        new: &Policy,
        impact: &mut Impact,
    ) -> Result<(), AppError> {
        let mut held: std::collections::BTreeSet<String> = grants
            .iter()
            .filter(|g| g.is_active())
            .map(|g| g.entitlement_id.clone())
            .collect();
        for c in changes {
            match c {
                GrantChange::Add(n) => {
                    held.insert(n.entitlement_id.clone());
                }
                GrantChange::Revoke { entitlement_id, .. } => {
                    held.remove(entitlement_id);
                }
                GrantChange::MarkMoverReview { .. } => {}
            }
        }
        if new.sod_conflicts(&held).is_empty() {
            return Ok(());
        }
        let now = self.now();
        let exceptions = self.store.live_exceptions(&person.employee_id, now).await?;
        for (rule, _) in idgov_domain::access::violations(new, &held, &exceptions, now) {
            impact.sod_conflicts += 1;
            if impact.sod_examples.len() < SOD_EXAMPLES {
                impact
                    .sod_examples
                    .push(format!("{}: {}", person.employee_id, rule.id));
            }
        }
        Ok(())
    }

    /// Stores `new` as the next version, audited, and starts the recompute
    /// of everyone's grants as a bulk job, inside `tx`. `actor` applies it;
    /// `requested_by` proposed it (they differ when a held change is
    /// released). The caller commits, then runs the job
    /// ([`App::run_recompute`]).
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
    ) -> Result<BulkJob, AppError> {
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
        let job = BulkJob {
            id: format!("policy-v{version}"),
            kind: "policy_recompute".into(),
            state: "running".into(),
            policy_version: version,
            cursor: String::new(),
            detail: json!({"actor": actor, "impact": Impact::default()}),
            created_at: now,
            updated_at: now,
        };
        tx.insert_bulk_job(
            &job,
            &self.holder,
            now + chrono::Duration::seconds(JOB_LEASE_SECONDS),
        )
        .await?;
        tx.audit(AuditEntry::new(
            actor,
            Action::PolicyApplied,
            Target::Policy,
            json!({
                "version": version, "sha256": new.sha256(), "reason": reason, "requested_by": requested_by,
                "changes": diff, "recompute": job.id,
            }),
        ));
        Ok(job)
    }

    /// Recomputes everyone's grants under the job's policy version, a step
    /// of people per transaction (as many as take about [`STEP_TARGET`]),
    /// recording progress and renewing the job's lease in the same
    /// transaction: intake goes on between steps, a crash resumes
    /// where it stopped, and a step done twice changes nothing. Stops when
    /// a newer policy supersedes it (that one's recompute covers everyone).
    /// Returns the impact.
    pub async fn run_recompute(&self, job: &BulkJob) -> Result<Impact, AppError> {
        let mut cursor = job.cursor.clone();
        let actor = job.detail["actor"]
            .as_str()
            .unwrap_or("system:policy")
            .to_string();
        let mut impact: Impact =
            serde_json::from_value(job.detail["impact"].clone()).unwrap_or_default();
        let cause = format!("policy:v{}", job.policy_version);
        let mut steps = 0u64;
        let mut size = StepSize::new(
            STEP_PEOPLE as u64,
            STEP_PEOPLE_MIN,
            STEP_PEOPLE_MAX,
            self.step_target(),
        );
        // Steps committed, carried over a resume: the job's record says
        // how the work was cut.
        let mut done_steps = job.detail["steps"].as_u64().unwrap_or(0);
        loop {
            if steps.is_multiple_of(STATISTICS_EVERY) {
                self.store.refresh_statistics().await;
            }
            steps += 1;
            let now = self.now();
            // A job no longer running (done, superseded, or finished by a
            // replica that took it over while this process stalled) is left
            // as it is: its recorded impact is the answer, and nothing is
            // written over its state or audited twice. A job another process
            // took over and still runs goes on there alone.
            let (mut tx, began) = match self.begin_step(&job.id).await? {
                crate::StepStart::Held(tx, began) => (tx, began),
                crate::StepStart::Gone(Some(j)) if j.state != "running" => {
                    return Ok(serde_json::from_value(j.detail["impact"].clone()).unwrap_or(impact));
                }
                crate::StepStart::Gone(None) => return Ok(impact),
                crate::StepStart::Gone(j) => {
                    return Err(crate::StepStart::gone(&job.id, j.as_ref()));
                }
            };
            let policy = self.policy_for(&mut tx);
            if policy.version != job.policy_version {
                // A newer policy is in force (its own recompute covers
                // everyone), or this process has not reloaded yet.
                drop(tx);
                let now_in_force = self.reload_policy().await?;
                if now_in_force.version != job.policy_version {
                    let mut tx = self.store.begin().await?;
                    tx.update_bulk_job(
                        &job.id,
                        "superseded",
                        &cursor,
                        &json!({"actor": actor, "impact": impact, "superseded_by": now_in_force.version}),
                        now,
                    )
                    .await?;
                    tx.commit(now).await?;
                    return Ok(impact);
                }
                continue;
            }
            let ids = tx
                .identity_ids_after(&cursor, i64::try_from(size.get()).unwrap_or(STEP_PEOPLE))
                .await?;
            let Some(last) = ids.last().cloned() else {
                tx.update_bulk_job(
                    &job.id,
                    "done",
                    &cursor,
                    &json!({"actor": actor, "impact": impact, "steps": done_steps}),
                    now,
                )
                .await?;
                tx.audit(AuditEntry::new(
                    &actor,
                    Action::PolicyRecomputed,
                    Target::Policy,
                    json!({"version": job.policy_version, "impact": impact}),
                ));
                tx.commit(now).await?;
                self.wake_provisioning();
                return Ok(impact);
            };
            let read_at = std::time::Instant::now();
            let mut batch = Batch::for_people(
                &mut tx,
                policy.clone(),
                now,
                &ids,
                self.provisioning(),
                self.creates_accounts(),
            )
            .await?;
            let read_done = std::time::Instant::now();
            let mut step = Impact::default();
            for id in &ids {
                let (Some(person), grants) = batch.current(id) else {
                    continue;
                };
                if !person.may_hold_access() {
                    continue;
                }
                let (changes, _) =
                    reconcile_access(&person, &grants, &policy.policy, Cause::Policy);
                if changes.is_empty() {
                    continue;
                }
                batch.stage_grant_changes(&mut tx, id, &changes, &cause, &actor);
                add_impact(&mut step, &changes);
            }
            let planned_at = std::time::Instant::now();
            batch.flush(&mut tx).await?;
            let flushed_at = std::time::Instant::now();
            let mut total = impact.clone();
            total.grants_added += step.grants_added;
            total.grants_revoked += step.grants_revoked;
            total.identities_losing += step.identities_losing;
            total.identities_affected += step.identities_affected;
            tx.update_bulk_job(
                &job.id,
                "running",
                &last,
                &json!({"actor": actor, "impact": total, "steps": done_steps + 1}),
                now,
            )
            .await?;
            match tx.commit(now).await {
                Ok(_) => {
                    let end = std::time::Instant::now();
                    let ms = |from: std::time::Instant, to: std::time::Instant| {
                        u64::try_from(to.saturating_duration_since(from).as_millis())
                            .unwrap_or(u64::MAX)
                    };
                    // `start_ms`: the lease and the step's people.
                    tracing::debug!(
                        job = %job.id,
                        people = ids.len(),
                        ms = ms(began, end),
                        start_ms = ms(began, read_at),
                        read_ms = ms(read_at, read_done),
                        plan_ms = ms(read_done, planned_at),
                        flush_ms = ms(planned_at, flushed_at),
                        commit_ms = ms(flushed_at, end),
                        "policy recompute step"
                    );
                    size.record(ids.len() as u64, end.saturating_duration_since(began));
                    impact = total;
                    cursor = last;
                    done_steps += 1;
                    if step.identities_affected > 0 {
                        self.wake_provisioning();
                    }
                }
                Err(e) => {
                    let e = AppError::from(e);
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    self.after_conflict(&e, 1).await;
                }
            }
            self.between_steps("the policy recompute", Some(&job.id))
                .await?;
        }
    }

    /// Stores `new` as the next version and records its recompute, without
    /// running it: what a crash right after the commit leaves behind. For
    /// tests of the resume.
    #[doc(hidden)]
    pub async fn store_policy_for_test(
        &self,
        tx: &mut WriteTx,
        new: &Policy,
        base_version: i64,
        diff: &PolicyDiff,
        now: DateTime<Utc>,
    ) -> String {
        match self
            .store_policy(
                tx,
                new,
                base_version,
                "test",
                "user:test",
                "user:test",
                diff,
                now,
            )
            .await
        {
            Ok(job) => job.id,
            Err(e) => format!("error: {e}"),
        }
    }

    /// Deletes the staged rows of bulk jobs that ended without deleting
    /// them (a crash in between), at start. Best effort: they are only
    /// space.
    pub(crate) async fn delete_ended_staging(&self) {
        let deleted = async {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            let n = tx.delete_ended_bulk_job_items().await?;
            tx.commit(now).await?;
            Ok::<_, AppError>(n)
        };
        match deleted.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "deleted the staged rows of ended bulk jobs"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete the staged rows of ended bulk jobs")
            }
        }
    }

    /// Removes the records of bulk jobs that ended more than
    /// [`ENDED_JOBS_KEPT_DAYS`] ago (by when they started), a few hundred
    /// per transaction, so that the table does not grow with every change
    /// for ever. Their audit events stay. Returns how many went.
    pub async fn prune_ended_jobs(&self) -> Result<u64, AppError> {
        let before = self.now() - chrono::Duration::days(ENDED_JOBS_KEPT_DAYS);
        let mut n = 0;
        loop {
            let now = self.now();
            let mut tx = self.store.begin().await?;
            let gone = tx.delete_ended_bulk_jobs(before, 500).await?;
            tx.commit(now).await?;
            n += gone;
            if gone < 500 {
                return Ok(n);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Resumes the bulk work (policy recomputes, released roster syncs) a
    /// crash or a stopped replica left running.
    pub async fn resume_bulk_jobs(&self) -> Result<usize, AppError> {
        let now = self.now();
        let mut n = 0;
        for job in self.store.unclaimed_bulk_jobs(now).await? {
            let lease = now + chrono::Duration::seconds(JOB_LEASE_SECONDS);
            let known = job.kind == "policy_recompute"
                || job.kind == crate::held::ROSTER_RELEASE
                || job.kind == crate::roster::ROSTER_SYNC;
            if known
                && self
                    .store
                    .claim_bulk_job(&job.id, &self.holder, now, lease, false)
                    .await?
            {
                tracing::info!(job = %job.id, kind = %job.kind, cursor = %job.cursor, "resuming bulk work");
                if job.kind == crate::held::ROSTER_RELEASE {
                    self.run_roster_release(&job).await?;
                } else if job.kind == crate::roster::ROSTER_SYNC {
                    self.resume_sync(&job).await?;
                } else {
                    self.run_recompute(&job).await?;
                }
                n += 1;
            }
        }
        Ok(n)
    }
}
