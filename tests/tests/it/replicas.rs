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
            .sync_roster(
                idgov_server::app::roster::SyncRequest {
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
