//! Security events to subscribers (issue 13): a real HTTP receiver checks
//! every delivery with an independent Standard Webhooks implementation
//! (the `standardwebhooks` crate), sees every event once and in order after
//! it was down, sees nothing its filter does not match; redirects are not
//! followed, 410 disables, internal destinations are refused.

use crate::common::*;
use base64::Engine;
use idgov_tests::server::start_with_webhooks;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Header names (lowercase) and values of a request.
type Headers = Vec<(String, String)>;
/// A request received: path, headers, body, the status answered.
type Received = (String, Headers, String, u16);

#[derive(Clone, Default)]
struct Receiver {
    port: u16,
    /// (path, headers, body, status answered)
    got: Arc<Mutex<Vec<Received>>>,
    /// Answer 503 to this many requests first.
    down_for: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> Receiver {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            port: l.local_addr().unwrap().port(),
            ..Receiver::default()
        };
        let me = r.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // Headers, then the body by content-length.
                    let (head, mut body) = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (
                                String::from_utf8_lossy(&buf[..i]).to_string(),
                                buf[i + 4..].to_vec(),
                            );
                        }
                    };
                    let mut lines = head.lines();
                    let path = lines
                        .next()
                        .unwrap_or("")
                        .split(' ')
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    let headers: Headers = lines
                        .filter_map(|l| {
                            l.split_once(':')
                                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                        })
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while body.len() < len {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    let status = if path.starts_with("/gone") {
                        410
                    } else if path.starts_with("/moved") {
                        302
                    } else if me.down_for.load(Ordering::SeqCst) > 0 {
                        me.down_for.fetch_sub(1, Ordering::SeqCst);
                        503
                    } else {
                        200
                    };
                    me.got.lock().unwrap().push((
                        path,
                        headers,
                        String::from_utf8_lossy(&body).to_string(),
                        status,
                    ));
                    let extra = if status == 302 {
                        format!("location: http://127.0.0.1:{}/hook\r\n", me.port)
                    } else {
                        String::new()
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        r
    }

    fn got(&self, path: &str) -> Vec<(Headers, String, u16)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.0 == path)
            .map(|g| (g.1.clone(), g.2.clone(), g.3))
            .collect()
    }
}

fn whsec(seed: u8) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([seed; 32])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_every_matching_event_once_in_order_and_signed() {
    let rx = Receiver::start().await;
    rx.down_for.store(2, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("soc.secret"),
        format!("{}\n{}\n", whsec(7), whsec(9)),
    )
    .unwrap();
    std::fs::write(dir.path().join("other.secret"), whsec(8)).unwrap();
    let file = dir.path().join("webhooks.toml");
    let base = format!("http://127.0.0.1:{}", rx.port);
    std::fs::write(
        &file,
        format!(
            r#"
[[subscriptions]]
id = "soc"
url = "{base}/hook"
events = ["hr.*", "security"]
secret_file = "soc.secret"
allow_private = true
retry_seconds = [1, 1, 1, 1, 1]

[[subscriptions]]
id = "reviews"
url = "{base}/other"
events = ["campaign.*"]
secret_file = "other.secret"
allow_private = true

[[subscriptions]]
id = "moved"
url = "{base}/moved"
events = ["hr.event.applied"]
secret_file = "other.secret"
allow_private = true
retry_seconds = [3600]

[[subscriptions]]
id = "gone"
url = "{base}/gone"
events = ["hr.event.applied"]
secret_file = "other.secret"
allow_private = true
"#
        ),
    )
    .unwrap();
    let Some(s) = start_with_webhooks("sqlite", file).await else {
        return;
    };
    let app = s.app();
    let (start, _) = app.store.audit_head().await.unwrap();
    with_policy(app).await;
    for id in ["E1", "E2", "E3"] {
        hire(app, &Person::new(id, "Finance")).await;
    }
    let expected: Vec<i64> = app
        .audit_events(&idgov_store::AuditFilter::default(), start, 10_000)
        .await
        .unwrap()
        .into_iter()
        // What the HR events cause (the webhooks' own events, such as
        // another subscription being disabled, come whenever they happen).
        .filter(|e| {
            (e.action.starts_with("hr.") || e.security) && !e.action.starts_with("webhook.")
        })
        .map(|e| e.seq)
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    // The receiver was down for the first two attempts; retries follow.
    let t = std::time::Instant::now();
    loop {
        let ok = rx.got("/hook").iter().filter(|g| g.2 == 200).count();
        if ok >= expected.len() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "only {ok} of {} delivered",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The service's clock drives its retries: a second passes.
        s.clock.advance(chrono::Duration::seconds(1));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hook = rx.got("/hook");
    assert_eq!(hook.iter().filter(|g| g.2 == 503).count(), 2);
    let delivered: Vec<(Headers, String)> = hook
        .into_iter()
        .filter(|g| g.2 == 200)
        .map(|g| (g.0, g.1))
        .collect();
    let mut seqs = Vec::new();
    for (headers, body) in &delivered {
        let h = header_map(headers);
        // Either secret of the rotation verifies it, independently.
        for secret in [whsec(7), whsec(9)] {
            assert!(signed_with(&secret, headers, body), "signature verifies");
        }
        assert!(!signed_with(&whsec(1), headers, body));
        assert_eq!(h["content-type"], "application/cloudevents+json");
        let ev: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["id"], h["webhook-id"].to_str().unwrap());
        if !ev["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("com.idgov.webhook.")
        {
            seqs.push(ev["data"]["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(seqs, expected, "every matching event, once, in order");
    // Nothing matched the campaign subscription.
    assert!(rx.got("/other").is_empty());
    // A redirect is not followed: one request, recorded as a failure.
    let moved = rx.got("/moved");
    assert_eq!(moved.len(), 1);
    assert!(
        rx.got("/hook").len() == delivered.len() + 2,
        "the redirect target was never called"
    );
    let attempts = app.store.list_attempts("moved", 10).await.unwrap();
    assert_eq!(attempts[0].status, Some(302));
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("never followed")
    );
    // 410 Gone disables the subscription.
    let gone = app.store.get_subscription("gone").await.unwrap().unwrap();
    assert_eq!(gone.state, "disabled");
    assert_eq!(rx.got("/gone").len(), 1);
    // Disabling is a security event, committed with the change.
    let disabled = app
        .audit_events(
            &idgov_store::AuditFilter {
                action: "webhook.disabled".into(),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!(disabled[0].target, "webhook:gone");
    assert!(disabled[0].security && disabled[0].detail.contains("410"));
    // A security officer re-enables it, from the first event on: audited.
    let again = app
        .redeliver_webhook("gone", Some(expected[0]), "receiver back", "user:S1")
        .await
        .unwrap();
    assert_eq!(
        (again.state.as_str(), again.cursor),
        ("active", expected[0] - 1)
    );
    let audit = app
        .audit_events(
            &idgov_store::AuditFilter {
                action: "webhook.redelivered".into(),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].target, "webhook:gone");
    let subs = app.webhook_subscriptions().await.unwrap();
    assert_eq!(subs.len(), 4);
    // Metrics: attempts by outcome, the commit-to-2xx lag, and how far
    // behind each subscription is.
    let m = app.metrics_text().await.unwrap();
    let line = |prefix: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{m}"))
    };
    assert_eq!(
        line(r#"idgov_webhook_delivery_attempts_total{subscription="soc",outcome="delivered"}"#),
        delivered.len() as f64
    );
    assert_eq!(
        line(r#"idgov_webhook_delivery_attempts_total{subscription="soc",outcome="failed"}"#),
        2.0
    );
    assert!(
        line(r#"idgov_webhook_delivery_attempts_total{subscription="gone",outcome="gone"}"#) >= 1.0
    );
    assert!(line("idgov_webhook_delivery_lag_seconds_count") >= expected.len() as f64);
    assert_eq!(
        line(r#"idgov_webhook_oldest_undelivered_age_seconds{subscription="soc"}"#),
        0.0,
        "caught up"
    );
    assert_eq!(
        line(r#"idgov_webhook_oldest_undelivered_age_seconds{subscription="reviews"}"#),
        0.0,
        "nothing matched"
    );
    s.stop().await;
}

#[tokio::test]
async fn internal_destinations_and_plain_http_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.secret"), whsec(3)).unwrap();
    let file = dir.path().join("w.toml");
    for (url, dev, needle) in [
        ("http://127.0.0.1:9/x", true, "internal address"),
        (
            "http://169.254.169.254/latest/meta-data",
            true,
            "internal address",
        ),
        ("http://10.0.0.1/x", true, "internal address"),
        ("http://[::1]:9/x", true, "internal address"),
        ("http://localhost:9/x", true, "internal address"),
        ("http://example.com/x", false, "https"),
        ("https://user:pw@example.com/x", false, "credentials"),
    ] {
        std::fs::write(&file, format!("[[subscriptions]]\nid = \"t\"\nurl = \"{url}\"\nevents = [\"security\"]\nsecret_file = \"s.secret\"\n")).unwrap();
        let e = idgov_server::app::webhooks::load(&file, dev)
            .await
            .unwrap_err();
        assert!(e.contains(needle), "{url}: {e}");
        assert!(!e.contains(&whsec(3)), "no secret in errors");
    }
}

fn header_map(headers: &Headers) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// Verifies a delivery's signature with a `whsec_` secret, independently
/// (the `standardwebhooks` crate).
fn signed_with(secret: &str, headers: &Headers, body: &str) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(body.as_bytes(), &header_map(headers))
        .is_ok()
}

/// Waits until `path` got `n` 2xx deliveries; returns them.
async fn wait_for(rx: &Receiver, path: &str, n: usize) -> Vec<(Headers, String)> {
    let t = std::time::Instant::now();
    loop {
        let ok: Vec<(Headers, String)> = rx
            .got(path)
            .into_iter()
            .filter(|g| g.2 == 200)
            .map(|g| (g.0, g.1))
            .collect();
        if ok.len() >= n {
            return ok;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} of {n} delivered to {path}",
            ok.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A security officer subscribes a receiver through the API (no file, no
/// restart): it hears of what happens from then on, signed with the secret
/// shown once; a rotation signs with both secrets, the next one drops the
/// oldest; deleting stops deliveries. Each change is audited without the
/// secret, and outside development mode only https to public addresses is
/// accepted.
#[tokio::test]
async fn subscriptions_made_through_the_api_deliver_rotate_and_stop() {
    let rx = Receiver::start().await;
    let Some(s) = idgov_tests::server::start("sqlite").await else {
        return;
    };
    let app = s.app();
    with_policy(app).await;
    hire(app, &Person::new("E0", "Finance")).await;
    let url = format!("http://127.0.0.1:{}/siem", rx.port);
    let (sub, secret1) = app
        .create_webhook("siem", &url, &["hr.*".to_string()], "user:S1")
        .await
        .unwrap();
    assert_eq!((sub.origin.as_str(), sub.state.as_str()), ("api", "active"));
    assert!(secret1.starts_with("whsec_"));
    let again = app
        .create_webhook("siem", &url, &["hr.*".to_string()], "user:S1")
        .await;
    assert!(again.is_err(), "an id is taken once");

    hire(app, &Person::new("E1", "Finance")).await;
    let got = wait_for(&rx, "/siem", 1).await;
    for (h, body) in &got {
        assert!(signed_with(&secret1, h, body));
        assert!(
            !body.contains("\"E0\""),
            "only what happened after subscribing: {body}"
        );
    }
    let first = got.len();

    let (secret2, n) = app.rotate_webhook_secret("siem", "user:S1").await.unwrap();
    assert_eq!(n, 2);
    assert_ne!(secret1, secret2);
    hire(app, &Person::new("E2", "Finance")).await;
    let got = wait_for(&rx, "/siem", first + 1).await;
    let (h, body) = &got[got.len() - 1];
    assert!(
        signed_with(&secret2, h, body) && signed_with(&secret1, h, body),
        "both sign during a rotation"
    );

    let (secret3, n) = app.rotate_webhook_secret("siem", "user:S1").await.unwrap();
    assert_eq!(n, 2);
    let before = got.len();
    hire(app, &Person::new("E3", "Finance")).await;
    let got = wait_for(&rx, "/siem", before + 1).await;
    let (h, body) = &got[got.len() - 1];
    assert!(signed_with(&secret3, h, body) && signed_with(&secret2, h, body));
    assert!(
        !signed_with(&secret1, h, body),
        "the oldest secret is retired"
    );

    app.delete_webhook("siem", "SIEM replaced", "user:S1")
        .await
        .unwrap();
    let count = rx.got("/siem").len();
    hire(app, &Person::new("E4", "Finance")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.got("/siem").len(), count, "nothing after the deletion");
    assert!(
        app.delete_webhook("siem", "again", "user:S1")
            .await
            .is_err()
    );

    let audit = app
        .audit_events(
            &idgov_store::AuditFilter {
                target: "webhook:siem".into(),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "webhook.created",
            "webhook.secret_rotated",
            "webhook.secret_rotated",
            "webhook.deleted"
        ]
    );
    for e in &audit {
        for secret in [&secret1, &secret2, &secret3] {
            let b64 = secret.trim_start_matches("whsec_");
            assert!(!e.detail.contains(b64), "no secret in the audit log");
        }
    }

    // Outside development mode: https to a public address only.
    app.set_development(false);
    for (url, needle) in [
        ("http://203.0.113.7/x", "https"),
        ("https://127.0.0.1:9/x", "internal address"),
        ("https://169.254.169.254/x", "internal address"),
        ("https://u:p@203.0.113.7/x", "credentials"),
    ] {
        let e = app
            .create_webhook("t", url, &["security".to_string()], "user:S1")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{url}: {e}");
    }
    for (id, events) in [
        ("bad id!", vec!["security"]),
        ("ok", vec![]),
        ("ok", vec!["Not A Pattern"]),
    ] {
        let events: Vec<String> = events.into_iter().map(String::from).collect();
        assert!(
            app.create_webhook(id, "https://203.0.113.7/x", &events, "user:S1")
                .await
                .is_err(),
            "{id} {events:?}"
        );
    }
    s.stop().await;
}
