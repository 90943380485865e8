//! Applies future-dated HR events when they fall due.

use super::{App, SYSTEM_SCHEDULER};
use crate::error::AppError;
use chrono::Days;
use idgov_domain::hr::{EventKind, HrEvent};
use idgov_domain::time::{local_date, local_day_start};
use sha2::{Digest, Sha256};
use std::sync::Weak;
use std::time::Duration;

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

    /// Terminates active people whose end date (in the HR time zone) is over,
    /// through an ordinary, idempotent HR event from the source `idgov`.
    /// The end date is read from the identity each time, so an extended
    /// contract simply moves it and nothing stale fires.
    pub async fn run_end_dates(&self) -> Result<u64, AppError> {
        let zone = self.policy().policy.hr_time_zone;
        let today = local_date(self.now(), zone);
        let mut applied = 0;
        for person in self.store.identities_past_end_date(today).await? {
            let Some(end) = person.attrs.end_date else {
                continue;
            };
            let Some(effective_at) = end
                .checked_add_days(Days::new(1))
                .and_then(|d| local_day_start(d, zone))
            else {
                continue;
            };
            let event_id = format!("end-date:{}:{end}", person.employee_id);
            let event = HrEvent {
                source: "idgov".into(),
                fingerprint: hex::encode(Sha256::digest(event_id.as_bytes())),
                event_id,
                kind: EventKind::Terminate,
                employee_id: person.employee_id.clone(),
                effective_at,
                effective_input: end.to_string(),
                time_zone: zone.name().to_string(),
                attrs: Default::default(),
                rescinds_event_id: None,
            };
            match self.submit_event(event, SYSTEM_SCHEDULER).await {
                Ok(o) if !o.duplicate => applied += 1,
                Ok(_) => {}
                Err(e) if e.is_store() => return Err(e),
                Err(e) => {
                    tracing::warn!(employee = %person.employee_id, error = %e, "end-date termination refused")
                }
            }
        }
        Ok(applied)
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
