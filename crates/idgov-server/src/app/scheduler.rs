//! Applies future-dated HR events when they fall due.

use super::App;
use crate::error::AppError;
use std::sync::Weak;
use std::time::Duration;

impl App {
    /// Applies every scheduled event due now. Returns how many this process
    /// applied. Safe to run on several replicas at once: each event is
    /// claimed under a row lock and applied once.
    pub async fn run_due(&self) -> Result<u64, AppError> {
        let mut applied = 0;
        loop {
            let due = self.store.due_events(self.now(), 200).await?;
            if due.is_empty() {
                return Ok(applied);
            }
            let mut progressed = false;
            for rec in &due {
                if self.apply_scheduled(rec).await? {
                    applied += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(applied);
            }
        }
    }
}

/// Runs the scheduler every `interval` until the application is dropped.
pub async fn scheduler_loop(app: Weak<App>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(app) = app.upgrade() else { return };
        match app.run_due().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(applied = n, "applied scheduled HR events"),
            Err(e) => tracing::warn!(error = %e, "scheduler run failed; will retry"),
        }
    }
}
