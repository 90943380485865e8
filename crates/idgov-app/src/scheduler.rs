//! Applies future-dated HR events when they fall due.

use super::App;
use super::intake::Batch;
use crate::error::AppError;
use crate::workers::Workers;
use idgov_domain::{history, lifecycle};
use std::sync::Weak;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl App {
    /// Applies every scheduled event due now, then terminates everyone whose
    /// end date is over. Returns how many events this process applied. Safe
    /// to run on several replicas at once: each event is claimed under a row
    /// lock and applied once.
    pub async fn run_due(&self) -> Result<u64, AppError> {
        let applied = self.run_scheduled().await?;
        Ok(applied + self.run_end_dates().await?)
    }

    async fn run_scheduled(&self) -> Result<u64, AppError> {
        let mut applied = 0;
        loop {
            let due = self.store.due_events(self.now(), 200).await?;
            if due.is_empty() {
                return Ok(applied);
            }
            let n = match self.apply_scheduled(&due).await {
                Ok(n) => n,
                // Another replica claimed some of them: go one by one.
                Err(e) if e.is_store() => {
                    let mut n = 0;
                    for rec in &due {
                        n += self
                            .apply_scheduled(std::slice::from_ref(rec))
                            .await
                            .unwrap_or(0);
                    }
                    n
                }
                Err(e) => return Err(e),
            };
            applied += n;
            if n == 0 {
                return Ok(applied);
            }
        }
    }

    /// Terminates active people whose end date is over: at the end of
    /// that day in the zone the date was given in. The end date is read
    /// from the identity each time, so an extended contract simply moves it
    /// and nothing stale fires. Each termination is audited as
    /// `hr.end_date_reached`.
    pub async fn run_end_dates(&self) -> Result<u64, AppError> {
        let now = self.now();
        let ctx = lifecycle::fold_context(&self.policy().policy);
        let mut after = String::new();
        let mut applied = 0;
        loop {
            let candidates = self
                .store
                .identities_past_end_date(now.date_naive(), &after, 500)
                .await?;
            let Some(last) = candidates.last() else {
                return Ok(applied);
            };
            after = last.employee_id.clone();
            let due: Vec<String> = candidates
                .iter()
                .filter(|p| history::end_instant(p, &ctx).is_some_and(|t| t <= now))
                .map(|p| p.employee_id.clone())
                .collect();
            if due.is_empty() {
                continue;
            }
            let mut tx = self.store.begin().await?;
            let policy = self.policy_for(&mut tx);
            let mut batch = Batch::for_people(
                &mut tx,
                policy,
                now,
                &due,
                self.provisioning(),
                self.creates_accounts(),
            )
            .await?;
            for id in &due {
                if batch.end_date(&mut tx, id) {
                    applied += 1;
                }
            }
            let queued = batch.flush(&mut tx).await?;
            tx.commit(now).await?;
            if queued > 0 {
                self.wake_provisioning();
            }
        }
    }
}

/// How often the separation-of-duties detective check runs (and after
/// every policy change).
pub const SOD_CHECK_EVERY: Duration = Duration::from_secs(600);

/// How often the audit chain head is signed (a checkpoint), when it moved.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

/// Runs the long scheduled work every `interval` until the application is
/// dropped or shutdown begins: campaigns (starts, generation, reminders, closes, mover
/// reviews), bulk work whose process stopped (its lease ran out), expired
/// roster previews and the records of bulk jobs that ended long ago. Apart
/// from [`scheduler_loop`], so a dated leaver never waits behind a
/// million-item generation or close.
pub async fn bulk_loop(app: Weak<App>, interval: Duration, stop: CancellationToken) {
    while Workers::pause(&stop, interval).await {
        let Some(app) = app.upgrade() else { return };
        match app.resume_bulk_jobs().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "resumed bulk work"),
            Err(e) => tracing::warn!(error = %e, "resuming bulk work failed; will retry"),
        }
        match app.expire_previews().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(previews = n, "removed expired roster previews"),
            Err(e) => {
                tracing::warn!(error = %e, "removing expired roster previews failed; will retry")
            }
        }
        match app.prune_ended_jobs().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                jobs = n,
                "removed the records of bulk jobs that ended long ago"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "removing the records of ended bulk jobs failed; will retry")
            }
        }
        if !app.policy().policy.campaigns.is_empty()
            && let Err(e) = app.run_campaign_schedule().await
        {
            tracing::warn!(error = %e, "campaign schedule failed; will retry");
        }
    }
}

/// Runs the scheduler every `interval` until the application is dropped or
/// shutdown begins:
/// due HR events and end dates, access expiry (requests, time-bound
/// grants, SoD exceptions), audit checkpoints and, now and then, the SoD
/// detective check. Campaigns and resumed bulk work run in [`bulk_loop`].
pub async fn scheduler_loop(app: Weak<App>, interval: Duration, stop: CancellationToken) {
    let mut sod_checked: Option<(std::time::Instant, i64)> = None;
    let mut checkpointed: Option<std::time::Instant> = None;
    while Workers::pause(&stop, interval).await {
        let Some(app) = app.upgrade() else { return };
        match app.run_due().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(applied = n, "applied scheduled HR events"),
            Err(e) => tracing::warn!(error = %e, "scheduler run failed; will retry"),
        }
        match app.run_access_expiry().await {
            Ok(s) if s == crate::access::Sweep::default() => {}
            Ok(s) => tracing::info!(
                requests = s.requests_expired,
                grants = s.grants_expired,
                exceptions = s.exceptions_expired,
                sod_revoked = s.grants_revoked_sod,
                "expired access"
            ),
            Err(e) => tracing::warn!(error = %e, "access expiry failed; will retry"),
        }
        if checkpointed.is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY) {
            match app.checkpoint_audit().await {
                Ok(_) => checkpointed = Some(std::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "audit checkpoint failed; will retry"),
            }
        }
        let version = app.policy().version;
        let due = match sod_checked {
            None => true,
            Some((at, v)) => v != version || at.elapsed() >= SOD_CHECK_EVERY,
        };
        if due && !app.policy().policy.sod.is_empty() {
            match app.run_sod_check(crate::SYSTEM_SCHEDULER).await {
                Ok(c) => {
                    sod_checked = Some((std::time::Instant::now(), version));
                    if c.new > 0 || c.resolved > 0 {
                        tracing::warn!(
                            new = c.new,
                            resolved = c.resolved,
                            open = c.open,
                            "separation-of-duties check"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "separation-of-duties check failed; will retry")
                }
            }
        }
    }
}
