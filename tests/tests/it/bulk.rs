//! Bulk work in bounded steps (issue 9): a policy recompute runs in short
//! transactions, intake goes on meanwhile, and a crash resumes it.

use crate::common::*;
use idgov_domain::hr::EventKind;
use idgov_domain::identity::{AttributesPatch, Status};
use idgov_domain::roster::RosterEntry;
use idgov_server::App;
use idgov_server::app::roster::SyncRequest;
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;
use std::time::{Duration, Instant};

async fn org(app: &App, n: usize) {
    let mut entries: Vec<RosterEntry> = (0..n)
        .map(|i| RosterEntry {
            employee_id: format!("B{i:05}"),
            attrs: Person::new("x", if i % 2 == 0 { "Finance" } else { "Sales" }).patch(),
        })
        .collect();
    for o in ["O1", "O2"] {
        entries.push(RosterEntry {
            employee_id: o.into(),
            attrs: Person::new(o, "Management").patch(),
        });
    }
    app.sync_roster(
        SyncRequest {
            source: "workday".into(),
            sync_id: "org".into(),
            dry_run: false,
            as_of: String::new(),
            time_zone: String::new(),
            entries,
        },
        "service:hr",
    )
    .await
    .unwrap();
}

/// The test policy, plus a role everyone gets.
fn wider() -> String {
    POLICY.replace(
        "[[roles]]\nid = \"everyone\"\nentitlements = [\"lobby\", \"wiki\"]",
        "[[roles]]\nid = \"everyone\"\nentitlements = [\"lobby\", \"wiki\", \"ledger\"]",
    )
}

both_backends! {
    async fn a_leaver_is_applied_at_once_during_a_policy_recompute(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 3000).await;
        let apply = {
            let app = app.clone();
            tokio::spawn(async move { app.apply_policy(&wider(), false, "everyone gets the ledger", "user:admin").await })
        };
        // Wait until the recompute is under way, then terminate someone.
        let t0 = Instant::now();
        while app.policy().version < 2 {
            assert!(t0.elapsed() < Duration::from_secs(60), "the apply never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ev = event(&app, EventKind::Terminate, "t-b02999", "B02999", "", AttributesPatch::default());
        let sent = Instant::now();
        app.submit_event(ev, "service:hr").await.unwrap();
        let took = sent.elapsed();
        let busy = !apply.is_finished();
        let result = apply.await.unwrap().unwrap();
        eprintln!("terminate during the recompute acknowledged in {took:?} (recompute still running: {busy})");
        assert!(took < Duration::from_secs(2), "the leaver waited {took:?} behind the recompute");
        assert_eq!(app.store.get_identity("B02999").await.unwrap().unwrap().status, Status::Terminated);
        assert!(active_grants(&app, "B02999").await.is_empty(), "the leaver holds nothing, recompute or not");
        assert_eq!(result.impact.grants_added, 1501, "the Sales half and the two owners gain the ledger; one of them left");
        // Everyone else got the change.
        assert_eq!(active_grants(&app, "B00001").await, ["ledger", "lobby", "wiki"]);
        let report = app.store.verify_audit_chain().await.unwrap();
        assert!(report.broken.is_none());
    }

    async fn a_recompute_cut_short_resumes_where_it_stopped(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 1200).await;
        // A crash right after the new version was stored: the recompute job
        // is recorded, none of it ran.
        let job = {
            let now = app.now();
            let new = idgov_domain::policy::Policy::parse(&wider()).unwrap();
            let mut tx = app.store.begin().await.unwrap();
            let diff = app.policy().policy.diff(&new);
            let job = app.store_policy_for_test(&mut tx, &new, 1, &diff, now).await;
            tx.commit(now).await.unwrap();
            job
        };
        assert_eq!(active_grants(&app, "B00001").await, ["lobby", "wiki"]);
        drop(app);
        // The lease runs out; a new process picks the job up at start.
        clock.advance(chrono::Duration::seconds(120));
        let app = App::start(t.store.clone(), clock.clone(), None).await.unwrap();
        let t0 = Instant::now();
        loop {
            let j = app.store.get_bulk_job(&job).await.unwrap().unwrap();
            if j.state == "done" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "not resumed: {j:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(active_grants(&app, "B00001").await, ["ledger", "lobby", "wiki"]);
        assert_eq!(active_grants(&app, "B01199").await, ["ledger", "lobby", "wiki"]);
        // Done once: running it again changes nothing.
        let j = app.store.get_bulk_job(&job).await.unwrap().unwrap();
        let again = app.run_recompute(&j).await.unwrap();
        assert_eq!(again.grants_added, 602, "the recorded total (Sales and the owners), not a second round");
        assert_eq!(active_grants(&app, "B00001").await, ["ledger", "lobby", "wiki"]);
    }
}

both_backends! {
    async fn a_leaver_is_applied_at_once_during_a_large_roster_import(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        hire(&app, &Person::new("E1", "Finance")).await;
        let mut entries: Vec<RosterEntry> = (0..6000)
            .map(|i| RosterEntry {
                employee_id: format!("J{i:05}"),
                attrs: Person::new("x", "Sales").patch(),
            })
            .collect();
        for id in ["O1", "O2", "E1"] {
            entries.push(RosterEntry { employee_id: id.into(), attrs: Person::new(id, "Finance").patch() });
        }
        let import = {
            let app = app.clone();
            tokio::spawn(async move {
                app.sync_roster(
                    SyncRequest {
                        source: "workday".into(),
                        sync_id: "big".into(),
                        dry_run: false,
                        as_of: String::new(),
                        time_zone: String::new(),
                        entries,
                    },
                    "service:hr",
                )
                .await
            })
        };
        // Wait until the import is writing, then terminate someone.
        let t0 = Instant::now();
        while app.store.get_identity("J00000").await.unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(60), "the import never started writing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ev = event(&app, EventKind::Terminate, "t-e1", "E1", "", AttributesPatch::default());
        let sent = Instant::now();
        app.submit_event(ev, "service:hr").await.unwrap();
        let took = sent.elapsed();
        let busy = !import.is_finished();
        let out = import.await.unwrap().unwrap();
        eprintln!("terminate during the import acknowledged in {took:?} (import still running: {busy})");
        assert!(took < Duration::from_secs(2), "the leaver waited {took:?} behind the import");
        assert_eq!(out.counts.joiners, 6000);
        assert_eq!(app.store.get_identity("E1").await.unwrap().unwrap().status, Status::Terminated);
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 6002);
    }
}
