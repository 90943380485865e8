//! Stopping the service (issue 9: "serve starts every worker under one
//! shutdown"): every worker stops by itself, nothing answered is lost, and
//! the denied calls counted until then reach the audit log.

use crate::common::*;
use idgov_authz::Role;
use idgov_domain::hr::EventKind;
use idgov_proto::v1 as pb;
use idgov_server::AppError;
use idgov_tests::server::start;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

/// The workers `serve` runs while idle, without a directory.
const SERVE_WORKERS: [&str; 6] = [
    "bulk work",
    "denied calls",
    "health",
    "intake writer",
    "scheduler",
    "webhook delivery",
];

async fn stopping_loses_nothing(backend: &'static str) {
    let Some(mut s) = start(backend).await else {
        return;
    };
    let app = s.app().clone();
    with_policy(&app).await;
    let running = app.workers.running();
    for w in SERVE_WORKERS {
        assert!(running.contains_key(w), "{w} is not running: {running:?}");
    }

    // Eight HR feeds send hires as fast as they are answered; the server
    // stops under them. Every hire answered OK must be stored.
    let answered: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let mut feeds = Vec::new();
    for f in 0..8 {
        let mut hr = s.hr(&[Role::HrFeed]).await;
        let answered = answered.clone();
        feeds.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("S{f}-{i:05}");
                let req = pb::SubmitHrEventRequest {
                    event: Some(pb::HrEvent {
                        source: "shutdown".into(),
                        event_id: format!("h-{id}"),
                        r#type: pb::HrEventType::Hire as i32,
                        employee_id: id.clone(),
                        attributes: Some(pb::PersonAttributes {
                            display_name: Some(format!("Person {id}")),
                            department: Some("Sales".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                };
                match hr.submit_hr_event(req).await {
                    Ok(_) => {
                        answered.lock().unwrap().insert(id);
                    }
                    // Refused or cut off by the stop: the feed sends it again
                    // later, so it may or may not be stored.
                    Err(_) => return i,
                }
            }
            unreachable!()
        }));
    }
    // Let the feeds run, then a call refused just before the stop.
    while answered.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut intruder = s.ids(&[], Some("Z9")).await;
    let denied = intruder
        .get_identity(pb::GetIdentityRequest {
            employee_id: "O1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let report = s.stop_within(Duration::from_secs(15)).await;
    assert!(
        report.forced.is_empty(),
        "every worker stops by itself when asked: {report:?}"
    );
    assert!(
        app.workers.running().is_empty(),
        "nothing runs after the stop: {:?}",
        app.workers.running()
    );
    for f in feeds {
        f.await.unwrap();
    }

    // After the stop: the service refuses work instead of hanging.
    let late = tokio::time::timeout(
        Duration::from_secs(10),
        app.submit_event(
            event(
                &app,
                EventKind::Hire,
                "h-late",
                "LATE",
                "",
                Person::new("LATE", "Sales").patch(),
            ),
            "service:hr",
        ),
    )
    .await
    .expect("an event after the stop is answered, not left waiting");
    assert!(matches!(late, Err(AppError::Unavailable(_))), "{late:?}");
    let change = idgov_server::app::to_the_end(&app, |_| async { Ok(()) }).await;
    assert!(
        matches!(change, Err(AppError::Unavailable(_))),
        "{change:?}"
    );
    drop(app);

    // The next start finds everything that was answered, and the denial.
    let store = s.reopen_store().await;
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 200);
    for id in &answered {
        assert!(
            store.get_identity(id).await.unwrap().is_some(),
            "{id} was answered OK but is not stored"
        );
    }
    let events = audited(&store, "access.denied", 100).await;
    assert!(
        events.iter().any(|e| e.actor == "user:Z9"),
        "the call refused just before the stop is in the audit log: {events:?}"
    );
    let verified = store.verify_audit_chain().await.unwrap();
    assert!(verified.broken.is_none(), "{verified:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_stops_every_worker_and_loses_nothing_answered_sqlite() {
    stopping_loses_nothing("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_stops_every_worker_and_loses_nothing_answered_postgres() {
    stopping_loses_nothing("postgres").await;
}

/// A load balancer watching gRPC health learns of a stop before the server
/// goes: health turns NOT_SERVING first. And a call that never ends by
/// itself (that watch) does not hold the stop past its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_the_service_begins_to_stop() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(mut s) = start("sqlite").await else {
        return;
    };
    let mut health = s.health().await;
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "idgov.v1.HrService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let next = tokio::spawn(async move { watch.message().await });
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        s.stop_within(Duration::from_secs(3)),
    )
    .await
    .expect("a watch still open does not hold the stop");
    assert!(report.forced.is_empty(), "{report:?}");
    let next = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("the watcher is told")
        .unwrap()
        .unwrap()
        .expect("a status, not the end of the watch");
    assert_eq!(
        next.status(),
        ServingStatus::NotServing,
        "the watcher is told before the server goes"
    );
}
