//! Two replicas on one database (issue 9): a policy applied on one does not
//! make the other refuse events; the server retries its own concurrency.

use crate::common::*;
use idgov_domain::hr::{EventKind, EventState};
use idgov_server::App;
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;
use std::sync::Arc;

both_backends! {
    async fn a_policy_applied_on_one_replica_never_fails_the_others_events(t: TestStore) {
        let (a, clock) = app_on(&t).await;
        with_policy(&a).await;
        // A second replica over the same database, with its own policy cache.
        let store_b = idgov_store::Store::open(&t.url).await.unwrap();
        let b = App::start(store_b, clock.clone(), None).await.unwrap();
        assert_eq!(b.policy().version, 1);
        // The policy changes on A; B still caches version 1.
        let v2 = format!("{POLICY}\n[[roles]]\nid = \"lobby-only\"\nentitlements = [\"lobby\"]\n");
        a.apply_policy(&v2, false, "v2", "user:admin").await.unwrap();
        assert_eq!(b.policy().version, 1, "B has not heard of it");
        // A lone event on B: accepted the first time, decided under v2.
        for i in 0..5 {
            let id = format!("R{i}");
            let out = b
                .submit_event(event(&b, EventKind::Hire, &format!("h-{id}"), &id, "", Person::new(&id, "Finance").patch()), "service:hr")
                .await
                .unwrap_or_else(|e| panic!("event {i} refused: {e}"));
            assert_eq!(out.state, EventState::Applied);
        }
        assert_eq!(b.policy().version, 2, "B reloaded the policy by itself");
        assert_eq!(active_grants(&b, "R0").await, ["ledger", "lobby", "wiki"]);
        drop(Arc::clone(&b));
    }
}

both_backends! {
    async fn a_large_roster_answers_with_counts_and_a_bounded_diff(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        let mut entries: Vec<idgov_domain::roster::RosterEntry> = (0..2500)
            .map(|i| idgov_domain::roster::RosterEntry {
                employee_id: format!("J{i:05}"),
                attrs: Person::new("x", "Sales").patch(),
            })
            .collect();
        for o in ["O1", "O2"] {
            entries.push(idgov_domain::roster::RosterEntry { employee_id: o.into(), attrs: Person::new(o, "Management").patch() });
        }
        let out = app
.sync_roster(roster_sync("big", entries), "service:hr")
            .await
            .unwrap();
        assert_eq!(out.counts.joiners, 2500);
        assert_eq!(out.counts.total, 2500);
        assert_eq!(out.diff.changes.len(), idgov_server::app::roster::SHOWN_CHANGES);
        let wire = idgov_server::grpc::convert::sync_response(&out);
        let d = wire.diff.unwrap();
        assert!(d.changes_truncated);
        assert_eq!((d.joiners, d.total_changes), (2500, 2500));
        assert_eq!(app.store.count_identities(idgov_domain::identity::Status::Active).await.unwrap(), 2502);
    }
}

fn hire_msg(id: &str, dept: &str, effective_at: &str) -> idgov_proto::v1::SubmitHrEventRequest {
    use idgov_proto::v1 as pb;
    pb::SubmitHrEventRequest {
        event: Some(pb::HrEvent {
            source: "workday".into(),
            event_id: format!("hire-{id}"),
            r#type: pb::HrEventType::Hire as i32,
            employee_id: id.into(),
            effective_at: effective_at.into(),
            attributes: Some(pb::PersonAttributes {
                display_name: Some(format!("Person {id}")),
                department: Some(dept.into()),
                background_check: pb::BackgroundCheck::Cleared as i32,
                clearance: pb::Classification::Confidential as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Two `idgov serve` processes' worth of service (each its own listener,
/// policy cache, intake writers and scheduler) on one PostgreSQL: a policy
/// applied through one's API, HR events through the other's succeed the
/// first time and are decided under it; a future-dated event applies once
/// though both schedulers run at the due time.
#[tokio::test]
async fn two_servers_on_one_postgres_share_the_work() {
    use idgov_authz::Role;
    use idgov_proto::v1 as pb;
    use idgov_server::Clock;
    let Some(a) = idgov_tests::server::start("postgres").await else {
        return;
    };
    with_policy(a.app()).await;
    let b = idgov_tests::server::start_replica(&a).await;
    assert_eq!(b.app().policy().version, 1);
    // Version 2 through A: Sales joins the finance birthright.
    let v2 = format!(
        "{POLICY}\n[[birthright]]\nrole = \"finance\"\nwhen = {{ department = \"Sales\" }}\n"
    );
    a.policy(&[Role::ItAdmin])
        .await
        .apply_policy(pb::ApplyPolicyRequest {
            document: v2,
            dry_run: false,
            reason: "v2".into(),
        })
        .await
        .unwrap();
    assert_eq!(b.app().policy().version, 1, "B has not heard of it yet");
    // Hires through B: each accepted the first time, under v2.
    let mut hr = b.hr(&[Role::HrFeed]).await;
    for i in 0..5 {
        let r = hr
            .submit_hr_event(hire_msg(&format!("R{i}"), "Sales", ""))
            .await
            .unwrap_or_else(|e| panic!("hire {i} through B refused: {e}"))
            .into_inner();
        assert_eq!(r.state, pb::HrEventState::Applied as i32);
    }
    assert_eq!(
        active_grants(b.app(), "R3").await,
        ["ledger", "lobby", "wiki"]
    );
    // A future hire through A; at its time both schedulers run at once.
    let later = (a.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
    let r = a
        .hr(&[Role::HrFeed])
        .await
        .submit_hr_event(hire_msg("F9", "Sales", &later))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::HrEventState::Scheduled as i32);
    for s in [&a, &b] {
        s.clock.advance(chrono::Duration::hours(2));
    }
    let (ra, rb) = tokio::join!(a.app().run_due(), b.app().run_due());
    assert_eq!(ra.unwrap() + rb.unwrap(), 1, "applied once between them");
    let applied = a
        .app()
        .audit_events(
            &idgov_store::AuditFilter {
                action: "hr.event.applied".into(),
                target: "identity:F9".into(),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(
        active_grants(a.app(), "F9").await,
        ["ledger", "lobby", "wiki"]
    );
    b.stop().await;
    a.stop().await;
}
