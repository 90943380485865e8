//! Prometheus metrics (OpenMetrics text, `prometheus-client`): counters and
//! a latency histogram updated as work happens, and gauges read from the
//! store at each scrape (outbox depth and age, open review items, the audit
//! chain's length). Names follow Prometheus conventions (`idgov_` prefix,
//! base units, `_total` counters).

use crate::{App, AppError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HrLabels {
    /// hire, update, move, terminate, rehire, rescind.
    pub r#type: String,
    /// applied, scheduled, superseded, rescinded, duplicate, refused, error.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// unauthenticated or permission_denied.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub subscription: String,
    /// delivered, failed, gone.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    pub subscription: String,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub hr_events: Family<HrLabels, Counter>,
    pub hr_event_seconds: Histogram,
    pub denied: Family<DeniedLabels, Counter>,
    outbox: Family<StateLabels, Gauge>,
    outbox_oldest: Gauge<f64, AtomicU64>,
    review_open: Gauge,
    audit_events: Gauge,
    pub webhook_attempts: Family<WebhookLabels, Counter>,
    pub webhook_delivery_seconds: Histogram,
    webhook_pending_age: Family<SubscriptionLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("idgov");
        let hr_events = Family::<HrLabels, Counter>::default();
        registry.register(
            "hr_events",
            "HR events received, by type and outcome",
            hr_events.clone(),
        );
        let hr_event_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "hr_event_duration_seconds",
            "Time from an HR event's arrival to its durable acknowledgement",
            hr_event_seconds.clone(),
        );
        let denied = Family::<DeniedLabels, Counter>::default();
        registry.register(
            "denied_calls",
            "API calls refused: not authenticated or not allowed",
            denied.clone(),
        );
        let outbox = Family::<StateLabels, Gauge>::default();
        registry.register(
            "directory_operations",
            "Directory operations owed to the directory, by state (pending, failed)",
            outbox.clone(),
        );
        let outbox_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "directory_operations_oldest_pending_age_seconds",
            "Age of the oldest pending directory operation (0 when none)",
            outbox_oldest.clone(),
        );
        let review_open = Gauge::default();
        registry.register(
            "review_items_open",
            "Review items waiting for a decision in open campaigns",
            review_open.clone(),
        );
        let audit_events = Gauge::default();
        registry.register(
            "audit_events",
            "Events in the audit chain (its head position)",
            audit_events.clone(),
        );
        let webhook_attempts = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_delivery_attempts",
            "Webhook delivery attempts by subscription and outcome (delivered, failed, gone)",
            webhook_attempts.clone(),
        );
        let webhook_delivery_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 20));
        registry.register(
            "webhook_delivery_lag_seconds",
            "Time from an event's commit to its subscriber's 2xx",
            webhook_delivery_seconds.clone(),
        );
        let webhook_pending_age = Family::<SubscriptionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "webhook_oldest_undelivered_age_seconds",
            "Age of the oldest event a subscription has still to receive (0 when caught up)",
            webhook_pending_age.clone(),
        );
        Metrics {
            registry,
            webhook_attempts,
            webhook_delivery_seconds,
            webhook_pending_age,
            hr_events,
            hr_event_seconds,
            denied,
            outbox,
            outbox_oldest,
            review_open,
            audit_events,
        }
    }
}

impl App {
    /// The metrics in OpenMetrics text, with the store's gauges read now.
    pub async fn metrics_text(&self) -> Result<String, AppError> {
        let m = &self.metrics;
        let now = self.now();
        let s = self.store.directory_op_stats().await?;
        m.outbox
            .get_or_create(&StateLabels {
                state: "pending".into(),
            })
            .set(s.pending);
        m.outbox
            .get_or_create(&StateLabels {
                state: "failed".into(),
            })
            .set(s.failed);
        m.outbox_oldest.set(
            s.oldest_pending
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        );
        m.review_open
            .set(self.store.count_open_review_items().await?);
        m.audit_events.set(self.store.audit_head().await?.0);
        for sub in self.store.list_subscriptions().await? {
            let age = self
                .store
                .next_event_matching(&sub.events, sub.cursor)
                .await?
                .map(|e| (now - e.occurred_at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            m.webhook_pending_age
                .get_or_create(&SubscriptionLabels {
                    subscription: sub.id,
                })
                .set(age);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry)
            .map_err(|e| AppError::Unavailable(format!("cannot encode the metrics: {e}")))?;
        Ok(out)
    }
}

impl App {
    /// Readiness: the database answers within three seconds.
    pub async fn database_ready(&self) -> bool {
        tokio::time::timeout(std::time::Duration::from_secs(3), self.store.ping())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The directory's backlog: operations pending and the age in seconds
    /// of the oldest; None when no directory is configured.
    pub async fn directory_backlog(&self) -> Result<Option<(i64, i64)>, AppError> {
        if !self.provisioning() {
            return Ok(None);
        }
        let s = self.store.directory_op_stats().await?;
        let age = s
            .oldest_pending
            .map(|t| (self.now() - t).num_seconds())
            .unwrap_or(0);
        Ok(Some((s.pending, age)))
    }
}
