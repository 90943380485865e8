//! Denied calls and failed authentications, counted in memory and written
//! to the audit log in aggregate (one event per caller, RPC and reason per
//! window, with a count), so a flood cannot fill the log. More than
//! [`BURST`] denials in one window raise a security event.

use crate::App;
use crate::error::AppError;
use idgov_domain::audit::{Action, AuditEntry, Target};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Denials per window above which a security event is raised.
pub const BURST: u64 = 50;
/// Distinct (kind, caller, RPC, reason) keys kept per window; the rest are
/// counted together.
const MAX_KEYS: usize = 1000;

#[derive(Debug, Default)]
struct Window {
    counts: BTreeMap<(String, String, String, String), u64>,
    total: u64,
}

/// The denial counters of this process.
#[derive(Debug, Default)]
pub struct DenialLog {
    window: Mutex<Window>,
    /// The same denials as a Prometheus counter (`idgov_denied_calls_total`).
    counter: prometheus_client::metrics::family::Family<
        crate::metrics::DeniedLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl DenialLog {
    /// A log that also counts into `counter` (the metrics' family).
    pub fn with_counter(
        counter: prometheus_client::metrics::family::Family<
            crate::metrics::DeniedLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> Self {
        DenialLog {
            window: Mutex::default(),
            counter,
        }
    }

    /// Counts one denial. `kind`: unauthenticated or permission_denied.
    pub fn record(&self, kind: &str, caller: &str, rpc: &str, reason: &str) {
        self.counter
            .get_or_create(&crate::metrics::DeniedLabels { kind: kind.into() })
            .inc();
        let mut reason: String = reason.chars().take(200).collect();
        let mut caller = caller.to_string();
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        if w.counts.len() >= MAX_KEYS
            && !w
                .counts
                .contains_key(&(kind.into(), caller.clone(), rpc.into(), reason.clone()))
        {
            caller = "many".into();
            reason = "more distinct denials than are listed".into();
        }
        *w.counts
            .entry((kind.to_string(), caller, rpc.to_string(), reason))
            .or_default() += 1;
        w.total += 1;
    }

    fn take(&self) -> Window {
        self.window
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}

impl App {
    /// Writes the denials counted since the last flush to the audit log.
    /// Returns how many denials were written.
    pub async fn flush_denials(&self) -> Result<u64, AppError> {
        let w = self.denials.take();
        if w.total == 0 {
            return Ok(0);
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        for ((kind, caller, rpc, reason), count) in &w.counts {
            tx.audit(AuditEntry::new(
                caller,
                Action::AccessDenied,
                Target::Rpc(rpc.to_string()),
                json!({"kind": kind, "count": count, "reason": reason}),
            ));
        }
        if w.total > BURST {
            tx.audit(
                AuditEntry::new(
                    "system:auth",
                    Action::AccessDeniedBurst,
                    Target::Service,
                    json!({"denials": w.total, "distinct": w.counts.len(), "threshold": BURST}),
                )
                .security(),
            );
        }
        tx.commit(now).await?;
        Ok(w.total)
    }
}

/// Flushes denials every `interval` until the application is dropped or
/// shutdown begins ([`App::shutdown`] writes the last ones).
pub async fn flush_loop(
    app: std::sync::Weak<App>,
    interval: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    while crate::workers::Workers::pause(&stop, interval).await {
        let Some(app) = app.upgrade() else { return };
        if let Err(e) = app.flush_denials().await {
            tracing::warn!(error = %e, "cannot write denied calls to the audit log");
        }
    }
}
