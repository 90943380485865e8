//! Security events to subscribers (issue 13): CloudEvents 1.0 in structured
//! mode (`application/cloudevents+json`), signed per Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,…`, HMAC-SHA256
//! over `id.timestamp.body`; two secrets at once during a rotation).
//!
//! The audit log is the durable outbox: every event is committed with its
//! change, and each subscription reads it in order from its cursor, so
//! delivery is at least once and in order per subscription, across
//! restarts; a lease keeps one replica delivering a subscription at a time.
//! Failures are retried with backoff for days (5 s, 5 min, 30 min, 2 h,
//! 5 h, then every 10 h); a `410 Gone` disables the subscription. Redirects
//! are never followed. Destinations must be `https` outside development
//! mode and public addresses unless `allow_private` says otherwise, checked
//! again at every attempt against what the name resolves to (and the
//! connection goes to the address checked).

use crate::{App, AppError};
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use idgov_domain::audit::AuditRecord;
use idgov_store::webhooks::{Attempt, Subscription};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The default retry schedule, in seconds after each failure.
pub const RETRY_SECONDS: [u64; 14] = [
    5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000, 36000, 36000, 36000,
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    subscriptions: Vec<SubscriptionDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionDoc {
    id: String,
    url: String,
    events: Vec<String>,
    secret_file: PathBuf,
    #[serde(default)]
    allow_private: bool,
    retry_seconds: Option<Vec<u64>>,
}

/// A configured subscription.
pub struct WebhookSubscription {
    pub id: String,
    pub url: url::Url,
    pub events: Vec<String>,
    /// Raw HMAC keys (the first signs first; all sign during a rotation).
    secrets: Vec<Vec<u8>>,
    pub allow_private: bool,
    pub retry_seconds: Vec<u64>,
}

impl std::fmt::Debug for WebhookSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSubscription")
            .field("id", &self.id)
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("secrets", &format!("<{} redacted>", self.secrets.len()))
            .finish()
    }
}

/// A new Standard Webhooks secret: 32 random bytes, as stored (base64) and
/// as shown to the subscriber (`whsec_` + base64).
fn new_secret() -> (String, String) {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    (b64.clone(), format!("whsec_{b64}"))
}

/// Reads a Standard Webhooks secret (`whsec_` + base64).
fn secret(line: &str) -> Result<Vec<u8>, String> {
    let b64 = line.trim().strip_prefix("whsec_").unwrap_or(line.trim());
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "a secret must be whsec_ followed by base64".to_string())?;
    if key.len() < 16 {
        return Err("a secret must hold at least 16 bytes".into());
    }
    Ok(key)
}

/// Why an event pattern is not one: `*`, `security`, `prefix.*` or an
/// action name.
fn pattern_problem(p: &str) -> Option<String> {
    let name = p.strip_suffix(".*").unwrap_or(p);
    let ok = p == "*"
        || (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_'));
    (!ok).then(|| {
        format!(
            "event pattern {} is not `*`, `security`, `prefix.*` or an action name",
            idgov_domain::error::echo(p)
        )
    })
}

/// True when connecting to `ip` could reach something inside: loopback,
/// private, link-local (cloud metadata), shared, unspecified, multicast.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v.segments();
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves the destination and checks every address; the connection
/// then goes to the first one checked.
pub async fn destination(url: &url::Url, allow_private: bool) -> Result<SocketAddr, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, an internal address; idgov only calls public addresses \
             (set allow_private = true for a subscription meant to reach inside)",
            bad.ip()
        ));
    }
    Ok(first)
}

/// Checks a subscription's id, URL and event patterns, wherever it comes
/// from (the webhooks file, the API); the URL is resolved and its
/// addresses checked now (and again at every delivery).
pub async fn check_subscription(
    id: &str,
    url: &str,
    events: &[String],
    development: bool,
    allow_private: bool,
) -> Result<url::Url, String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("id must be 1–64 letters, digits, - or _".into());
    }
    if url.len() > 2000 {
        return Err("url: longer than 2000 characters".into());
    }
    let url = url::Url::parse(url).map_err(|e| format!("url: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if development => {}
        "http" => return Err("url must be https:// (http only in development mode)".into()),
        other => return Err(format!("url scheme {other} is not https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    if events.is_empty() {
        return Err("events: name at least one pattern".into());
    }
    if events.len() > 50 {
        return Err("events: at most 50 patterns".into());
    }
    if let Some(p) = events.iter().find_map(|p| pattern_problem(p)) {
        return Err(p);
    }
    destination(&url, allow_private)
        .await
        .map_err(|e| format!("url: {e}"))?;
    Ok(url)
}

/// Loads `[[subscriptions]]` from a webhooks file; secrets are read from
/// their files (relative to it). `development`: `http` URLs are allowed.
pub async fn load(path: &Path, development: bool) -> Result<Vec<Arc<WebhookSubscription>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: FileDoc = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, s) in doc.subscriptions.into_iter().enumerate() {
        let at = format!("{}: subscriptions[{i}] ({})", path.display(), s.id);
        if out.iter().any(|o: &Arc<WebhookSubscription>| o.id == s.id) {
            return Err(format!("{at}: the id is used twice"));
        }
        let url = check_subscription(&s.id, &s.url, &s.events, development, s.allow_private)
            .await
            .map_err(|e| format!("{at}: {e}"))?;
        let secret_path = if s.secret_file.is_relative() {
            dir.join(&s.secret_file)
        } else {
            s.secret_file.clone()
        };
        let text = std::fs::read_to_string(&secret_path)
            .map_err(|e| format!("{at}: cannot read {}: {e}", secret_path.display()))?;
        let secrets = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(secret)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{at}: {}: {e}", secret_path.display()))?;
        if secrets.is_empty() || secrets.len() > 2 {
            return Err(format!(
                "{at}: {} must hold one secret (two during a rotation)",
                secret_path.display()
            ));
        }
        out.push(Arc::new(WebhookSubscription {
            id: s.id,
            url,
            events: s.events,
            secrets,
            allow_private: s.allow_private,
            retry_seconds: s.retry_seconds.unwrap_or_else(|| RETRY_SECONDS.to_vec()),
        }));
    }
    Ok(out)
}

/// The Standard Webhooks signature header value for `id.timestamp.body`.
pub fn signature(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(k).ok()?;
            mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The message id of an event: the same on every retry.
pub fn message_id(e: &AuditRecord) -> String {
    format!("evt_{}_{}", e.seq, &e.hash[..12.min(e.hash.len())])
}

/// The CloudEvent of an audit event.
pub fn cloud_event(e: &AuditRecord) -> serde_json::Value {
    json!({
        "specversion": "1.0",
        "id": message_id(e),
        "source": "urn:idgov:audit",
        "type": format!("com.idgov.{}", e.action),
        "subject": e.target,
        "time": e.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": {
            "seq": e.seq,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "security": e.security,
            "detail": serde_json::from_str::<serde_json::Value>(&e.detail).unwrap_or(serde_json::Value::Null),
            "hash": e.hash,
        },
    })
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Gone,
    Failed(Option<u16>, String),
}

async fn post(s: &WebhookSubscription, e: &AuditRecord, now: DateTime<Utc>) -> Outcome {
    let addr = match destination(&s.url, s.allow_private).await {
        Ok(a) => a,
        Err(err) => return Outcome::Failed(None, err),
    };
    let body = cloud_event(e).to_string();
    let id = message_id(e);
    // The receiver's replay window is judged by the wall clock.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(|_| now.timestamp());
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if let Some(host) = s.url.host_str()
        && host.parse::<IpAddr>().is_err()
    {
        b = b.resolve(host, addr);
    }
    let client = match b.build() {
        Ok(c) => c,
        Err(err) => return Outcome::Failed(None, format!("cannot build the HTTP client: {err}")),
    };
    let r = client
        .post(s.url.clone())
        .header("content-type", "application/cloudevents+json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature(&s.secrets, &id, ts, &body))
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) if r.status().is_success() => Outcome::Delivered(r.status().as_u16()),
        Ok(r) if r.status() == reqwest::StatusCode::GONE => Outcome::Gone,
        Ok(r) => Outcome::Failed(
            Some(r.status().as_u16()),
            if r.status().is_redirection() {
                "a redirect (never followed)".into()
            } else {
                format!("answered {}", r.status())
            },
        ),
        Err(err) => Outcome::Failed(None, idgov_domain::error::echo(&err.to_string())),
    }
}

impl App {
    /// Records the configured subscriptions; new ones start after the
    /// current audit head (they hear of what happens from now on).
    pub async fn sync_subscriptions(
        &self,
        subs: &[Arc<WebhookSubscription>],
    ) -> Result<(), AppError> {
        let (head, _) = self.store.audit_head().await?;
        for s in subs {
            self.store
                .upsert_subscription(&s.id, s.url.as_str(), &s.events, head, self.now())
                .await?;
        }
        Ok(())
    }

    /// Says whether the service runs in development mode (see
    /// [`App::create_webhook`]).
    pub fn set_development(&self, development: bool) {
        self.development
            .store(development, std::sync::atomic::Ordering::Relaxed);
    }

    fn development(&self) -> bool {
        self.development.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates a subscription through the API: it hears of events from now
    /// on, signed with a new secret returned here (and never again).
    /// Outside development mode the URL must be https to a public address.
    /// Audited, without the secret.
    pub async fn create_webhook(
        &self,
        id: &str,
        url: &str,
        events: &[String],
        actor: &str,
    ) -> Result<(Subscription, String), AppError> {
        let dev = self.development();
        let checked = check_subscription(id, url, events, dev, dev)
            .await
            .map_err(|e| AppError::invalid("subscription", e))?;
        let (raw, shown) = new_secret();
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let (head, _) = self.store.audit_head().await?;
        tx.insert_api_subscription(id, checked.as_str(), events, &[raw], head, now)
            .await?;
        tx.audit(idgov_domain::audit::AuditEntry::new(
            actor,
            idgov_domain::audit::Action::WebhookCreated,
            idgov_domain::audit::Target::Webhook(id.to_string()),
            json!({"url": checked.as_str(), "events": events}),
        ));
        tx.commit(now).await?;
        let sub = self
            .store
            .get_subscription(id)
            .await?
            .ok_or_else(|| AppError::not_found("the subscription vanished"))?;
        Ok((sub, shown))
    }

    /// Deletes a subscription created through the API; audited.
    pub async fn delete_webhook(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
    ) -> Result<(), AppError> {
        if let Some(p) = idgov_domain::identity::optional_text_problem(reason, 2000) {
            return Err(AppError::invalid("reason", p));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if !tx.delete_api_subscription(id).await? {
            tx.rollback().await?;
            return Err(self.no_api_webhook(id).await);
        }
        tx.audit(idgov_domain::audit::AuditEntry::new(
            actor,
            idgov_domain::audit::Action::WebhookDeleted,
            idgov_domain::audit::Target::Webhook(id.to_string()),
            json!({"reason": reason}),
        ));
        tx.commit(now).await?;
        Ok(())
    }

    /// A new secret for a subscription created through the API, returned
    /// once; it signs first, and the one before it keeps signing beside it
    /// until the next rotation. Audited, without the secret.
    pub async fn rotate_webhook_secret(
        &self,
        id: &str,
        actor: &str,
    ) -> Result<(String, usize), AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let Some(old) = tx.api_subscription_secrets(id).await? else {
            tx.rollback().await?;
            return Err(self.no_api_webhook(id).await);
        };
        let (raw, shown) = new_secret();
        let mut secrets = vec![raw];
        secrets.extend(old.into_iter().take(1));
        tx.set_subscription_secrets(id, &secrets).await?;
        tx.audit(idgov_domain::audit::AuditEntry::new(
            actor,
            idgov_domain::audit::Action::WebhookSecretRotated,
            idgov_domain::audit::Target::Webhook(id.to_string()),
            json!({"secrets_in_use": secrets.len()}),
        ));
        tx.commit(now).await?;
        Ok((shown, secrets.len()))
    }

    /// Not found, or found in the webhooks file (changed there, not here).
    async fn no_api_webhook(&self, id: &str) -> AppError {
        match self.store.get_subscription(id).await {
            Ok(Some(_)) => AppError::precondition(format!(
                "webhook subscription {} comes from the webhooks file; change it there",
                idgov_domain::error::echo(id)
            )),
            _ => no_webhook(id),
        }
    }

    /// The subscriptions created through the API, ready to deliver.
    pub async fn api_webhooks(&self) -> Result<Vec<Arc<WebhookSubscription>>, AppError> {
        let dev = self.development();
        let mut out = Vec::new();
        for (sub, secrets) in self.store.api_subscriptions().await? {
            let Ok(url) = url::Url::parse(&sub.url) else {
                continue;
            };
            let secrets: Vec<Vec<u8>> = secrets
                .iter()
                .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .collect();
            if secrets.is_empty() {
                tracing::warn!(subscription = %sub.id, "a webhook subscription has no readable secret; not delivering it");
                continue;
            }
            out.push(Arc::new(WebhookSubscription {
                id: sub.id,
                url,
                events: sub.events,
                secrets,
                allow_private: dev,
                retry_seconds: RETRY_SECONDS.to_vec(),
            }));
        }
        Ok(out)
    }

    /// The subscriptions and their state.
    pub async fn webhook_subscriptions(&self) -> Result<Vec<Subscription>, AppError> {
        Ok(self.store.list_subscriptions().await?)
    }

    /// A subscription's delivery attempts, newest first.
    pub async fn webhook_deliveries(&self, id: &str, limit: i64) -> Result<Vec<Attempt>, AppError> {
        if self.store.get_subscription(id).await?.is_none() {
            return Err(no_webhook(id));
        }
        Ok(self.store.list_attempts(id, limit.clamp(1, 1000)).await?)
    }

    /// Delivers a subscription's events again from `from_seq` on (or just
    /// retries now), re-enabling it; audited.
    pub async fn redeliver_webhook(
        &self,
        id: &str,
        from_seq: Option<i64>,
        reason: &str,
        actor: &str,
    ) -> Result<Subscription, AppError> {
        if let Some(p) = idgov_domain::identity::optional_text_problem(reason, 2000) {
            return Err(AppError::invalid("reason", p));
        }
        if from_seq.is_some_and(|s| s < 1) {
            return Err(AppError::invalid(
                "from_seq",
                "must be an audit event position (1 or more)",
            ));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if !tx.redeliver_subscription(id, from_seq).await? {
            tx.rollback().await?;
            return Err(no_webhook(id));
        }
        tx.audit(idgov_domain::audit::AuditEntry::new(
            actor,
            idgov_domain::audit::Action::WebhookRedelivered,
            idgov_domain::audit::Target::Webhook(id.to_string()),
            json!({"from_seq": from_seq, "reason": reason}),
        ));
        tx.commit(now).await?;
        self.store
            .get_subscription(id)
            .await?
            .ok_or_else(|| AppError::not_found("the subscription vanished"))
    }

    /// Stops delivering to a subscription, saying why: a security event
    /// (`webhook.disabled`), committed with the change.
    async fn disable_webhook(&self, id: &str, reason: &str) -> Result<(), AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        tx.disable_subscription(id, reason).await?;
        tx.audit(
            idgov_domain::audit::AuditEntry::new(
                crate::SYSTEM_SCHEDULER,
                idgov_domain::audit::Action::WebhookDisabled,
                idgov_domain::audit::Target::Webhook(id.to_string()),
                json!({"reason": reason}),
            )
            .security(),
        );
        tx.commit(now).await?;
        Ok(())
    }

    /// Delivers what is due for one subscription (at most `max` events),
    /// holding its lease. Returns how many were delivered.
    pub async fn deliver_webhooks(
        &self,
        s: &WebhookSubscription,
        max: usize,
    ) -> Result<usize, AppError> {
        let now = self.now();
        // Read first: an idle or waiting subscription costs two reads per
        // poll, never a write (SQLite has one writer, shared with intake).
        let Some(sub) = self.store.get_subscription(&s.id).await? else {
            return Ok(0);
        };
        if sub.state != "active" || sub.next_attempt_at > now {
            return Ok(0);
        }
        if self
            .store
            .next_event_matching(&s.events, sub.cursor)
            .await?
            .is_none()
        {
            return Ok(0);
        }
        if !self
            .store
            .claim_subscription(&s.id, now, now + chrono::Duration::seconds(60))
            .await?
        {
            return Ok(0);
        }
        let result = self.deliver_claimed(s, max).await;
        self.store.release_subscription(&s.id).await?;
        result
    }

    async fn deliver_claimed(
        &self,
        s: &WebhookSubscription,
        max: usize,
    ) -> Result<usize, AppError> {
        let mut delivered = 0;
        while delivered < max {
            let Some(sub): Option<Subscription> = self.store.get_subscription(&s.id).await? else {
                return Ok(delivered);
            };
            if sub.state != "active" {
                return Ok(delivered);
            }
            let Some(e) = self
                .store
                .next_event_matching(&s.events, sub.cursor)
                .await?
            else {
                return Ok(delivered);
            };
            let now = self.now();
            let started = std::time::Instant::now();
            let outcome = post(s, &e, now).await;
            let millis = started.elapsed().as_millis() as i64;
            let (status, error) = match &outcome {
                Outcome::Delivered(c) => (Some(i64::from(*c)), None),
                Outcome::Gone => (
                    Some(410),
                    Some("410 Gone: the subscription is disabled".to_string()),
                ),
                Outcome::Failed(c, err) => (c.map(i64::from), Some(err.clone())),
            };
            self.store
                .record_attempt(&Attempt {
                    subscription_id: s.id.clone(),
                    seq: e.seq,
                    attempt: sub.failures + 1,
                    at: now,
                    status,
                    error,
                    millis,
                })
                .await?;
            let label = match &outcome {
                Outcome::Delivered(_) => "delivered",
                Outcome::Gone => "gone",
                Outcome::Failed(..) => "failed",
            };
            self.metrics
                .webhook_attempts
                .get_or_create(&crate::metrics::WebhookLabels {
                    subscription: s.id.clone(),
                    outcome: label.into(),
                })
                .inc();
            match outcome {
                Outcome::Delivered(_) => {
                    let lag = (self.now() - e.occurred_at).num_milliseconds().max(0) as f64;
                    self.metrics.webhook_delivery_seconds.observe(lag / 1000.0);
                    self.store
                        .advance_subscription(&s.id, sub.cursor, e.seq)
                        .await?;
                    delivered += 1;
                }
                Outcome::Gone => {
                    tracing::warn!(subscription = %s.id, "the receiver answered 410 Gone; subscription disabled");
                    self.disable_webhook(&s.id, "the receiver answered 410 Gone")
                        .await?;
                    return Ok(delivered);
                }
                Outcome::Failed(_, err) => {
                    let failures = sub.failures + 1;
                    match s.retry_seconds.get((failures - 1) as usize) {
                        Some(wait) => {
                            tracing::info!(subscription = %s.id, seq = e.seq, failures, error = %err, "webhook delivery failed; will retry");
                            self.store
                                .retry_subscription(
                                    &s.id,
                                    failures,
                                    now + chrono::Duration::seconds(*wait as i64),
                                )
                                .await?;
                        }
                        None => {
                            tracing::warn!(subscription = %s.id, failures, "webhook deliveries kept failing; subscription disabled");
                            self.disable_webhook(
                                &s.id,
                                &format!("{failures} attempts failed; the last: {err}"),
                            )
                            .await?;
                        }
                    }
                    return Ok(delivered);
                }
            }
        }
        Ok(delivered)
    }
}

/// Delivers to every subscription (those of the webhooks file, `file`, and
/// those created through the API, read again each round) until the
/// application is dropped or shutdown begins: woken by this process's
/// commits of audit events, and every 250 ms for what other replicas commit
/// and for retries that come due.
pub async fn webhook_loop(
    app: Weak<App>,
    file: Vec<Arc<WebhookSubscription>>,
    stop: tokio_util::sync::CancellationToken,
) {
    const BATCH: usize = 100;
    let appended = match app.upgrade() {
        Some(a) => a.store.audit_appended(),
        None => return,
    };
    let mut behind = false;
    while !stop.is_cancelled() {
        if !behind {
            tokio::select! {
                _ = appended.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.cancelled() => return,
            }
        }
        let Some(app) = app.upgrade() else { return };
        behind = false;
        let api = match app.api_webhooks().await {
            Ok(api) => api,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook subscriptions; will retry");
                Vec::new()
            }
        };
        for s in file.iter().chain(api.iter()) {
            match app.deliver_webhooks(s, BATCH).await {
                // A full batch: more may wait; go round again at once.
                Ok(n) => behind |= n == BATCH,
                Err(e) => {
                    tracing::warn!(subscription = %s.id, error = %e, "webhook delivery failed; will retry");
                }
            }
        }
    }
}

fn no_webhook(id: &str) -> AppError {
    AppError::not_found(format!(
        "there is no webhook subscription {}",
        idgov_domain::error::echo(id)
    ))
}
