//! Bulk work in bounded steps (issue 9): a policy recompute, a roster import
//! and a held roster's release run in short transactions, intake goes on
//! meanwhile, and a crash resumes them.

use crate::common::*;
use idgov_domain::guard::HeldState;
use idgov_domain::hr::EventKind;
use idgov_domain::identity::{AttributesPatch, Status};
use idgov_domain::roster::RosterEntry;
use idgov_server::App;
use idgov_server::app::roster::{RosterInput, SyncRequest};
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;
use std::time::{Duration, Instant};

/// A roster of B00000.. B{n-1} (Finance and Sales, alternately) and the
/// owners O1 and O2.
fn listing(n: usize, sync_id: &str) -> SyncRequest {
    roster_sync(sync_id, listed(n))
}

/// The entries of [`listing`].
fn listed(n: usize) -> Vec<RosterEntry> {
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
    entries
}

/// The roster of [`listing`] with every listed person renamed.
fn renamed(n: usize, sync_id: &str) -> SyncRequest {
    let mut entries = listed(n);
    for e in &mut entries {
        e.attrs.display_name = Some(format!("Renamed {}", e.employee_id));
    }
    roster_sync(sync_id, entries)
}

/// Records, for each of `ids`, an event under the id roster snapshot
/// `sync_id` (source "workday") would give its change of that person, with
/// another payload: what an earlier attempt of the same snapshot that was
/// cut short and could not be resumed leaves behind when the snapshot is
/// sent again with other data. (A feed cannot send such an id itself: ids
/// starting `roster:` are refused.)
async fn plant_roster_events(app: &App, sync_id: &str, ids: &[&str]) {
    let mut tx = app.store.begin().await.unwrap();
    for id in ids {
        let mut attrs = Person::new("x", "Finance").patch();
        attrs.display_name = Some(format!("Planted {id}"));
        let mut ev = event(
            app,
            EventKind::Update,
            &format!("planted-{id}"),
            id,
            "",
            attrs,
        );
        ev.event_id = idgov_domain::roster::event_id(sync_id, id);
        ev.fingerprint = format!("planted-{id}");
        let inserted = tx
            .insert_hr_event(
                &ev,
                idgov_domain::hr::EventState::Applied,
                "",
                "service:hr",
                app.now(),
            )
            .await
            .unwrap();
        assert!(inserted, "{} was already recorded", ev.event_id);
    }
    tx.commit(app.now()).await.unwrap();
}

/// Stores the [`wider`] policy with its recompute job, as a crash right
/// after the new version was stored leaves it: none of it ran. Returns the
/// job's id.
async fn wider_stored_not_run(app: &App) -> String {
    let now = app.now();
    let new = idgov_domain::policy::Policy::parse(&wider()).unwrap();
    let mut tx = app.store.begin().await.unwrap();
    let diff = app.policy().policy.diff(&new);
    let job = app
        .store_policy_for_test(&mut tx, &new, 1, &diff, now)
        .await;
    tx.commit(now).await.unwrap();
    job
}

/// Stops `app` as a crash would leave it and starts a new process on the
/// same store once the stopped one's leases ran out (two minutes later).
async fn restart_after_leases(
    t: &TestStore,
    app: std::sync::Arc<App>,
    clock: &std::sync::Arc<idgov_server::ManualClock>,
) -> std::sync::Arc<App> {
    drop(app);
    clock.advance(chrono::Duration::seconds(120));
    App::start(t.store.clone(), clock.clone(), None)
        .await
        .unwrap()
}

/// The first audit event `filter` finds, waiting up to two minutes for it
/// (`what` names it in the failure).
async fn first_audit_event(
    app: &App,
    filter: idgov_store::AuditFilter,
    what: &str,
) -> idgov_domain::audit::AuditRecord {
    let t0 = Instant::now();
    loop {
        let found = app.store.list_audit_events(&filter, 0, 10).await.unwrap();
        if let Some(e) = found.into_iter().next() {
            return e;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn org(app: &App, n: usize) {
    app.sync_roster(listing(n, "org"), "service:hr")
        .await
        .unwrap();
}

/// An app with the test policy and the organisation of [`listing`], a
/// minute after its roster (someone hired at the roster's instant and not
/// in it would be a leaver by it).
async fn org_settled(
    t: &TestStore,
    n: usize,
) -> (
    std::sync::Arc<App>,
    std::sync::Arc<idgov_server::ManualClock>,
) {
    let (app, clock) = app_on(t).await;
    with_policy(&app).await;
    org(&app, n).await;
    clock.advance(chrono::Duration::minutes(1));
    (app, clock)
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
        let took = terminate_now(&app, "t-b02999", "B02999").await;
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

    /// A recompute's steps follow the time they take: with a target no
    /// step can meet they halve down to their floor of 50 people, with one
    /// no step reaches they double up to their ceiling; either way everyone
    /// ends as the policy says. (The job's record counts its steps.)
    async fn a_recompute_sizes_its_steps_by_the_time_they_take(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 3000).await;
        app.set_step_target_for_test(Duration::ZERO);
        let r = app.apply_policy(&wider(), false, "everyone gets the ledger", "user:admin").await.unwrap();
        assert_eq!(r.impact.grants_added, 1502);
        let job = app.store.get_bulk_job("policy-v2").await.unwrap().unwrap();
        // 3,002 people: 500, 250, 125, 62, then 50 a step: 46 steps
        // (fixed steps of 500 would be 7).
        let small = job.detail["steps"].as_u64().unwrap();
        assert!((40..=50).contains(&small), "{small} steps: {job:?}");
        assert_eq!(active_grants(&app, "B02999").await, ["ledger", "lobby", "wiki"]);

        // An entitlement nobody holds: the recompute walks everyone and
        // changes nothing. 500, 1,000, 2,000: three steps.
        app.set_step_target_for_test(Duration::from_secs(3600));
        let more = format!(
            "{}\n[[entitlements]]\nid = \"badge\"\nsystem = \"site\"\nclassification = \"public\"\nkind = \"physical_area\"\n",
            wider()
        );
        let r = app.apply_policy(&more, false, "a badge entitlement", "user:admin").await.unwrap();
        assert_eq!((r.impact.grants_added, r.impact.grants_revoked), (0, 0));
        let job = app.store.get_bulk_job("policy-v3").await.unwrap().unwrap();
        assert_eq!(job.detail["steps"].as_u64(), Some(3), "{job:?}");
        assert_eq!(active_grants(&app, "B00001").await, ["ledger", "lobby", "wiki"]);
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    async fn the_record_of_a_bulk_job_goes_thirty_days_after_it_ended_and_its_audit_stays(t: TestStore) {
        let (app, clock) = org_settled(&t, 600).await;
        app.apply_policy(&wider(), false, "everyone gets the ledger", "user:admin")
            .await
            .unwrap();
        // A recompute a crash cut short: it still has work to do.
        let running = {
            let now = app.now();
            let new = idgov_domain::policy::Policy::parse(POLICY).unwrap();
            let mut tx = app.store.begin().await.unwrap();
            let diff = app.policy().policy.diff(&new);
            let job = app.store_policy_for_test(&mut tx, &new, 2, &diff, now).await;
            tx.commit(now).await.unwrap();
            job
        };
        // The policies' recomputes and the roster's sync.
        let jobs = |app: std::sync::Arc<App>| async move {
            let mut all = Vec::new();
            for kind in ["policy_recompute", "roster_sync"] {
                all.extend(
                    app.store
                        .bulk_jobs_started_before(kind, ["done", "running", "superseded"], app.now(), 100)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|j| (j.id, j.state)),
                );
            }
            all
        };
        let before = jobs(app.clone()).await;
        let ended = before.iter().filter(|(_, s)| s == "done").count();
        assert!(ended >= 3, "the test policy's, the wider one's and the roster's: {before:?}");
        assert!(before.iter().any(|(id, s)| *id == running && s == "running"), "{before:?}");

        clock.advance(chrono::Duration::days(29));
        assert_eq!(app.prune_ended_jobs().await.unwrap(), 0, "kept for thirty days");
        assert_eq!(jobs(app.clone()).await, before);

        clock.advance(chrono::Duration::days(2));
        assert_eq!(app.prune_ended_jobs().await.unwrap(), ended as u64);
        assert_eq!(jobs(app.clone()).await, [(running.clone(), "running".to_string())], "work still to do is kept");
        let recomputed = audited(&app.store, "policy.recomputed", 10).await;
        assert_eq!(recomputed.len(), ended - 1, "what the recomputes did stays in the audit log");
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    async fn a_recompute_cut_short_resumes_where_it_stopped(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 1200).await;
        // A crash right after the new version was stored: the recompute job
        // is recorded, none of it ran.
        let job = wider_stored_not_run(&app).await;
        assert_eq!(active_grants(&app, "B00001").await, ["lobby", "wiki"]);
        // The lease runs out; a new process picks the job up at start.
        let app = restart_after_leases(&t, app, &clock).await;
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
        // Done once: running it again (a process that stalled while a
        // replica finished it) changes nothing, writes nothing over its
        // state and audits nothing twice.
        let recomputed = idgov_store::AuditFilter { action: "policy.recomputed".into(), ..Default::default() };
        let audited = app.store.list_audit_events(&recomputed, 0, 10).await.unwrap();
        assert_eq!(audited.iter().filter(|e| e.detail.contains(r#""version":2"#)).count(), 1, "{audited:?}");
        let head = app.store.audit_head().await.unwrap();
        let j = app.store.get_bulk_job(&job).await.unwrap().unwrap();
        let again = app.run_recompute(&j).await.unwrap();
        assert_eq!(again.grants_added, 602, "the recorded total (Sales and the owners), not a second round");
        assert_eq!(active_grants(&app, "B00001").await, ["ledger", "lobby", "wiki"]);
        assert_eq!(app.store.audit_head().await.unwrap(), head, "nothing audited by the second run");
        assert_eq!(app.store.list_audit_events(&recomputed, 0, 10).await.unwrap(), audited);
        let after = app.store.get_bulk_job(&job).await.unwrap().unwrap();
        assert_eq!((after.state.as_str(), &after.cursor, after.updated_at), ("done", &j.cursor, j.updated_at));
    }

    async fn a_recompute_taken_over_by_another_process_runs_there_alone(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 1200).await;
        let job = wider_stored_not_run(&app).await;
        let lease = app.store.bulk_job_lease(&job).await.unwrap().unwrap();
        assert_eq!(lease.0, app.bulk_job_holder(), "the job is leased to the process that started it");
        // This process stalls past the lease; another replica takes the job.
        clock.advance(chrono::Duration::seconds(120));
        let now = app.now();
        assert!(
            app.store
                .claim_bulk_job(&job, "replica-b", now, now + chrono::Duration::seconds(60), false)
                .await
                .unwrap()
        );
        // The stalled process wakes up and goes on with its recompute: its
        // first step finds the job taken over and stops, writing nothing.
        let head = app.store.audit_head().await.unwrap();
        let j = app.store.get_bulk_job(&job).await.unwrap().unwrap();
        let answer = app.run_recompute(&j).await;
        assert!(
            matches!(&answer, Err(idgov_server::AppError::GoesOnLater(m)) if m.contains("taken over")),
            "{answer:?}"
        );
        assert_eq!(app.store.audit_head().await.unwrap(), head, "the stalled process wrote a step");
        assert_eq!(active_grants(&app, "B00001").await, ["lobby", "wiki"]);
        assert_eq!(app.store.get_bulk_job(&job).await.unwrap().unwrap(), j, "the job's record changed");
        assert_eq!(app.store.bulk_job_lease(&job).await.unwrap().unwrap().0, "replica-b");
        // Nor does its shutdown give the job up: it is the replica's.
        app.store.release_bulk_job(&job, app.bulk_job_holder()).await.unwrap();
        assert!(app.store.unclaimed_bulk_jobs(now).await.unwrap().is_empty());
        // Once the replica's lease runs out (it stopped too), the job is
        // resumed and done once.
        clock.advance(chrono::Duration::seconds(120));
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 1);
        assert_eq!(app.store.get_bulk_job(&job).await.unwrap().unwrap().state, "done");
        assert_eq!(active_grants(&app, "B01199").await, ["ledger", "lobby", "wiki"]);
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
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
app.sync_roster(roster_sync("big", entries), "service:hr")
                .await
            })
        };
        // Wait until the import is writing, then terminate someone.
        let t0 = Instant::now();
        while app.store.get_identity("J00000").await.unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(60), "the import never started writing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = terminate_now(&app, "t-e1", "E1").await;
        let busy = !import.is_finished();
        let out = import.await.unwrap().unwrap();
        eprintln!("terminate during the import acknowledged in {took:?} (import still running: {busy})");
        assert!(took < Duration::from_secs(2), "the leaver waited {took:?} behind the import");
        assert_eq!(out.counts.joiners, 6000);
        assert_eq!(app.store.get_identity("E1").await.unwrap().unwrap().status, Status::Terminated);
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 6002);
    }
}

/// The `org` roster with only the first `keep` people of B00000.. listed.
fn shorter(keep: usize) -> SyncRequest {
    listing(keep, &format!("short-{keep}"))
}

/// Releases the held change `id` on a task of its own.
fn release_in_background(
    app: &std::sync::Arc<App>,
    id: &str,
) -> tokio::task::JoinHandle<Result<idgov_store::HeldChange, idgov_server::AppError>> {
    let (app, id) = (app.clone(), id.to_string());
    tokio::spawn(async move { app.release_held(&id, "confirmed with HR", "user:sec").await })
}

/// The release's bulk job, once the release committed its decision.
/// Releases held change `held` in the background and stops the release
/// once it has made a step (as a crash or a stall would); returns its job.
async fn release_cut_after_a_step(app: &std::sync::Arc<App>, held: &str) -> idgov_store::BulkJob {
    let release = release_in_background(app, held);
    let t0 = Instant::now();
    loop {
        if let Some(j) = release_job(app, held).await
            && j.cursor.parse::<usize>().unwrap_or(0) > 0
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the release never made a step"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    release.abort();
    let _ = release.await;
    let cut = release_job(app, held).await.unwrap();
    assert_eq!(cut.state, "running", "cut short: {cut:?}");
    cut
}

async fn release_job(app: &App, held: &str) -> Option<idgov_store::BulkJob> {
    app.store
        .get_bulk_job(&format!("release-{held}"))
        .await
        .unwrap()
}

both_backends! {
    async fn a_leaver_is_applied_at_once_during_a_held_roster_release(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 4000).await;
        // 3,500 of 4,002 missing: far above the guard's threshold.
        let held = app.sync_roster(shorter(500), "service:hr").await.unwrap();
        let held_id = held.held_change_id.clone().expect("held");
        assert_eq!(held.counts.leavers, 3500);
        clock.advance(chrono::Duration::seconds(60));
        let release = release_in_background(&app, &held_id);
        // Wait until the release is applying, then a leaver who is still listed.
        let t0 = Instant::now();
        while app.store.get_identity("B00500").await.unwrap().unwrap().status != Status::Terminated {
            assert!(t0.elapsed() < Duration::from_secs(120), "the release never started applying");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = terminate_now(&app, "t-b00001", "B00001").await;
        let busy = !release.is_finished();
        let decided = release.await.unwrap().unwrap();
        eprintln!("terminate during the release acknowledged in {took:?} (release still running: {busy})");
        assert!(took < Duration::from_secs(2), "the leaver waited {took:?} behind the release");
        assert_eq!(decided.state, HeldState::Released);
        // The release applied all of it, and its roster presence (older
        // than the terminate) did not bring the leaver back.
        assert_eq!(app.store.get_identity("B01000").await.unwrap().unwrap().status, Status::Terminated);
        assert_eq!(app.store.get_identity("B03999").await.unwrap().unwrap().status, Status::Terminated);
        assert_eq!(app.store.get_identity("B00001").await.unwrap().unwrap().status, Status::Terminated);
        assert!(active_grants(&app, "B00001").await.is_empty());
        assert_eq!(active_grants(&app, "B00002").await, ["ledger", "lobby", "wiki"]);
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 501);
        let job = release_job(&app, &held_id).await.expect("the release is a bulk job");
        assert_eq!(job.state, "done");
        assert_eq!(job.detail["refused_count"], 0, "{:?}", job.detail);
        let report = app.store.verify_audit_chain().await.unwrap();
        assert!(report.broken.is_none());
    }

    async fn a_release_cut_short_resumes_where_it_stopped(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 5000).await;
        let held = app.sync_roster(shorter(1000), "service:hr").await.unwrap();
        let held_id = held.held_change_id.clone().expect("held");
        clock.advance(chrono::Duration::seconds(60));
        // The process stops after the first step of the release.
        release_cut_after_a_step(&app, &held_id).await;
        let left_active = app.store.count_identities(Status::Active).await.unwrap();
        assert!(left_active > 1002, "some leavers are still to go: {left_active}");
        assert_eq!(
            app.store.get_held_change(&held_id).await.unwrap().unwrap().state,
            HeldState::Released,
            "the decision stands while its application is under way"
        );
        // The lease runs out; a new process goes on from the recorded place.
        let app = restart_after_leases(&t, app, &clock).await;
        let t0 = Instant::now();
        loop {
            let j = release_job(&app, &held_id).await.unwrap();
            if j.state == "done" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "not resumed: {j:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 1002);
        for id in ["B01000", "B02500", "B04999"] {
            assert_eq!(app.store.get_identity(id).await.unwrap().unwrap().status, Status::Terminated, "{id}");
            assert!(active_grants(&app, id).await.is_empty(), "{id}");
        }
        assert_eq!(active_grants(&app, "B00000").await, ["ledger", "lobby", "wiki"]);
        // Each leaver was terminated once: one applied terminate per person.
        let applied = audited(&app.store, "hr.event.applied", 20_000).await;
        let terminates = applied.iter().filter(|e| e.detail.contains("\"to\":\"terminated\"")).count();
        assert_eq!(terminates, 4000, "every leaver once, none twice");
        // Done once: running it again changes nothing.
        let j = release_job(&app, &held_id).await.unwrap();
        let before = app.store.verify_audit_chain().await.unwrap();
        app.run_roster_release(&j).await.unwrap();
        let after = app.store.verify_audit_chain().await.unwrap();
        assert!(after.broken.is_none());
        assert_eq!(before.checked, after.checked, "a finished release writes nothing more");
        let synced = audited(&app.store, "roster.sync", 100).await;
        assert!(
            synced.iter().any(|e| e.detail.contains("released_from") && e.detail.contains(&held_id)),
            "the release's end is audited"
        );
    }

    async fn a_release_taken_over_by_another_process_runs_there_alone(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 3000).await;
        let held = app.sync_roster(shorter(1000), "service:hr").await.unwrap();
        let held_id = held.held_change_id.clone().expect("held");
        clock.advance(chrono::Duration::seconds(60));
        // This process stalls after the release's first step...
        let cut = release_cut_after_a_step(&app, &held_id).await;
        // ...past its lease, and another replica takes the job over.
        clock.advance(chrono::Duration::seconds(120));
        let now = app.now();
        assert!(
            app.store
                .claim_bulk_job(&cut.id, "replica-b", now, now + chrono::Duration::seconds(60), false)
                .await
                .unwrap()
        );
        // The stalled process goes on: its next step stops, writing nothing.
        let head = app.store.audit_head().await.unwrap();
        let active = app.store.count_identities(Status::Active).await.unwrap();
        let answer = app.run_roster_release(&cut).await;
        assert!(
            matches!(&answer, Err(idgov_server::AppError::GoesOnLater(m)) if m.contains("taken over")),
            "{answer:?}"
        );
        assert_eq!(app.store.audit_head().await.unwrap(), head, "the stalled process wrote a step");
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), active);
        assert_eq!(release_job(&app, &held_id).await.unwrap(), cut, "the job's record changed");
        // The replica stops too; once its lease runs out the release is
        // resumed and ends with every leaver terminated once.
        clock.advance(chrono::Duration::seconds(120));
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 1);
        assert_eq!(release_job(&app, &held_id).await.unwrap().state, "done");
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 1002);
        let applied = audited(&app.store, "hr.event.applied", 20_000).await;
        let terminates = applied.iter().filter(|e| e.detail.contains("\"to\":\"terminated\"")).count();
        assert_eq!(terminates, 2000, "every leaver once, none twice");
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }
}

/// A small deterministic generator (no dependency): the same seed, the same case.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

both_backends! {
    async fn a_roster_diffed_a_page_at_a_time_equals_the_diff_over_everyone(t: TestStore) {
        // More people than one page of the walk (2,000), in an order that
        // is not the roster's: joiners, leavers, rehires, movers, updates
        // and the unchanged, for several generated rosters.
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        org(&app, 4500).await;
        let mut rng = Lcg(0x1d60);
        for i in 0..4500 {
            if rng.below(20) == 0 {
                let id = format!("B{i:05}");
                let ev = event(&app, EventKind::Terminate, &format!("t-{id}"), &id, "", AttributesPatch::default());
                app.submit_event(ev, "service:hr").await.unwrap();
            }
        }
        let everyone = app.store.all_identities().await.unwrap();
        for seed in 1..=4u64 {
            let mut rng = Lcg(seed);
            let mut entries: Vec<RosterEntry> = Vec::new();
            for i in 0..4500 {
                let roll = rng.below(100);
                if roll < 4 {
                    continue; // not listed: a leaver (or nobody, if gone already)
                }
                let dept = match roll {
                    4..=7 => "Engineering", // a mover
                    _ => if i % 2 == 0 { "Finance" } else { "Sales" },
                };
                let mut attrs = Person::new("x", dept).patch();
                if roll == 8 {
                    attrs.display_name = Some("Person y".into()); // an update
                }
                entries.push(RosterEntry { employee_id: format!("B{i:05}"), attrs });
            }
            // The last roster makes more changes than an answer shows: its
            // preview must list them all.
            let new_people = if seed == 4 { 1500 } else { rng.below(300) as usize };
            for j in 0..new_people {
                // New people, some sorting before everyone, some after.
                let id = if j % 2 == 0 { format!("A{seed}{j:04}") } else { format!("Z{seed}{j:04}") };
                entries.push(RosterEntry { employee_id: id, attrs: Person::new("x", "Sales").patch() });
            }
            for o in ["O1", "O2"] {
                entries.push(RosterEntry { employee_id: o.into(), attrs: Person::new(o, "Management").patch() });
            }
            // Shuffle: the roster's order is HR's, not ours.
            for k in (1..entries.len()).rev() {
                entries.swap(k, rng.below(k as u64 + 1) as usize);
            }
            let today = idgov_domain::time::local_date(app.now(), app.policy().policy.hr_time_zone);
            let expected = idgov_domain::roster::diff(&entries, &everyone, today);
            let out = app
                .sync_roster(
                    SyncRequest {
                        source: "workday".into(),
                        sync_id: format!("seed-{seed}"),
                        dry_run: true,
                        as_of: String::new(),
                        time_zone: String::new(),
                        entries: entries.clone().into(),
                    },
                    "service:hr",
                )
                .await
                .unwrap();
            assert_eq!(out.counts, expected.counts(), "seed {seed}");
            assert_eq!(out.diff, expected.shown(idgov_server::app::roster::SHOWN_CHANGES), "seed {seed}");
            assert!(out.counts.leavers > 0 && out.counts.rehires > 0 && out.counts.movers > 0 && out.counts.joiners > 0 && out.counts.updates > 0, "seed {seed}: {:?}", out.counts);
            // The preview (a large dry run's whole diff) lists every change
            // once, in the order a sync applies them: leavers first.
            let mut applying = expected.changes.clone();
            applying.sort_by_key(|c| c.kind != idgov_domain::roster::ChangeKind::Leaver);
            match &out.preview_id {
                None => assert!(applying.len() <= idgov_server::app::roster::SHOWN_CHANGES, "seed {seed}"),
                Some(id) => {
                    let mut listed = Vec::new();
                    loop {
                        let page = app.roster_preview(id, listed.len(), 400).await.unwrap();
                        if page.changes.is_empty() {
                            break;
                        }
                        listed.extend(page.changes);
                    }
                    assert_eq!(listed, applying, "seed {seed}");
                }
            }
            if seed == 4 {
                assert!(out.preview_id.is_some(), "{} changes", applying.len());
            }
        }
    }
}

both_backends! {
    async fn a_recompute_beside_leavers_and_joiners_leaves_everyone_as_the_policy_says(t: TestStore) {
        // Leavers and joiners sent while a recompute runs, most of them in
        // the pages it is about to reach, must neither keep nor miss a
        // grant: at the end everyone holds exactly what the new policy
        // gives them, once.
        let (app, _) = org_settled(&t, 6000).await;
        // The ledger moves from Finance to Sales: half the people lose it,
        // half gain it.
        // The guard holds a change that takes this much; its release runs
        // the recompute.
        let swapped = POLICY.replace("when = { department = \"Finance\" }", "when = { department = \"Sales\" }");
        let held = app.apply_policy(&swapped, false, "the ledger goes to Sales", "user:admin").await.unwrap();
        let held_id = held.held_change_id.expect("held by the guard");
        let apply = {
            let app = app.clone();
            tokio::spawn(async move { app.release_held(&held_id, "planned move", "user:sec").await })
        };
        let t0 = Instant::now();
        while app.policy().version < 2 {
            assert!(t0.elapsed() < Duration::from_secs(60), "the apply never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut rng = Lcg(0x9e37);
        let mut left = std::collections::BTreeSet::new();
        let mut joined: Vec<(String, &str)> = Vec::new();
        let mut during = 0;
        while !apply.is_finished() {
            // Most leavers just ahead of the recompute's place: the page
            // planned or about to be.
            let at = match app.store.get_bulk_job("policy-v2").await.unwrap() {
                Some(j) if j.state == "running" => j.cursor.get(1..6).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0),
                _ => 0,
            };
            let i = if rng.below(4) == 0 { rng.below(6000) } else { (at + 1 + rng.below(1000)).min(5999) };
            if rng.below(3) != 0 {
                let id = format!("B{i:05}");
                if left.insert(id.clone()) {
                    terminate_now(&app, &format!("t-{id}"), &id).await;
                }
            } else {
                // A joiner between two people already there.
                let id = format!("B{i:05}j{}", joined.len());
                let dept = if rng.below(2) == 0 { "Finance" } else { "Sales" };
                hire(&app, &Person::new(&id, dept)).await;
                joined.push((id, dept));
            }
            during += 1;
        }
        apply.await.unwrap().unwrap();
        eprintln!("{during} changes sent during the recompute; {} leavers, {} joiners", left.len(), joined.len());
        assert!(during >= 5, "the changes did not overlap the recompute ({during})");
        let expect = |dept: &str| -> Vec<String> {
            let mut v = vec!["lobby".to_string(), "wiki".to_string()];
            if dept == "Sales" {
                v.insert(0, "ledger".into());
            }
            v
        };
        for i in 0..6000 {
            let id = format!("B{i:05}");
            let dept = if i % 2 == 0 { "Finance" } else { "Sales" };
            let want = if left.contains(&id) { vec![] } else { expect(dept) };
            assert_eq!(active_grants(&app, &id).await, want, "{id}");
        }
        for (id, dept) in &joined {
            assert_eq!(active_grants(&app, id).await, expect(dept), "{id} (joined during the recompute)");
        }
        let report = app.store.verify_audit_chain().await.unwrap();
        assert!(report.broken.is_none());
    }
}

/// A held roster released through the API by a client that stops waiting
/// (its deadline passes half-way) is applied all the same, and at once: the
/// change does not wait for its lease to run out.
async fn a_release_whose_caller_gives_up_goes_on(backend: &'static str) {
    use idgov_proto::v1 as pb;
    let Some(s) = idgov_tests::server::start(backend).await else {
        return;
    };
    let app = s.app().clone();
    with_policy(&app).await;
    org(&app, 4000).await;
    let held = app.sync_roster(shorter(500), "service:hr").await.unwrap();
    let held_id = held.held_change_id.clone().expect("held");
    s.clock.advance(chrono::Duration::seconds(60));
    let mut hr = s.hr(&[idgov_authz::Role::SecurityOfficer]).await;
    let mut req = tonic::Request::new(pb::ReleaseHeldChangeRequest {
        id: held_id.clone(),
        reason: "confirmed with HR".into(),
    });
    req.set_timeout(Duration::from_millis(40));
    let answer =
        tokio::time::timeout(Duration::from_millis(400), hr.release_held_change(req)).await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "the release answered within its deadline: nothing was cut short"
    );
    // The manual clock stands still, so a lease never runs out here: only
    // a release that went on by itself finishes.
    let t0 = Instant::now();
    loop {
        if let Some(j) = release_job(&app, &held_id).await
            && j.state == "done"
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the release stopped with its caller"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.store.count_identities(Status::Active).await.unwrap(),
        502
    );
    assert_eq!(
        app.store
            .get_held_change(&held_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        HeldState::Released
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_caller_gives_up_goes_on_sqlite() {
    a_release_whose_caller_gives_up_goes_on("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_caller_gives_up_goes_on_postgres() {
    a_release_whose_caller_gives_up_goes_on("postgres").await;
}

/// The wider policy's recompute (`policy-v2`) once its first step is
/// committed, waiting up to a minute for it.
async fn first_step_of_wider(app: &App) -> idgov_store::BulkJob {
    let t0 = Instant::now();
    loop {
        if let Some(j) = app.store.get_bulk_job("policy-v2").await.unwrap()
            && !j.cursor.is_empty()
        {
            return j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the apply never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The wider policy's recompute `done` ended as a whole run would have:
/// the Sales half and the two owners gained the ledger, each once, and
/// the audit chain verifies.
async fn wider_applied_to_everyone(app: &App, done: &idgov_store::BulkJob) {
    assert_eq!(done.state, "done", "{done:?}");
    assert_eq!(
        done.detail["impact"]["grants_added"], 2502,
        "the Sales half and the two owners gain the ledger, each once: {done:?}"
    );
    for id in ["B00000", "B00001", "B04999", "O1", "O2"] {
        assert_eq!(
            active_grants(app, id).await,
            ["ledger", "lobby", "wiki"],
            "{id}"
        );
    }
    let verified = app.store.verify_audit_chain().await.unwrap();
    assert!(verified.broken.is_none(), "{verified:?}");
}

/// A stop during a large policy apply: the apply ends after the step it is
/// in instead of holding the stop until its end (or being dropped after the
/// grace period), its caller is told that it goes on by itself, and the
/// next start finishes it at once, as if it had run whole.
async fn a_stop_ends_a_policy_apply_after_a_step(backend: &'static str) {
    use idgov_proto::v1 as pb;
    let Some(mut s) = idgov_tests::server::start(backend).await else {
        return;
    };
    let app = s.app().clone();
    with_policy(&app).await;
    org(&app, 5000).await;
    let mut admin = s.policy(&[idgov_authz::Role::ItAdmin]).await;
    let apply = tokio::spawn(async move {
        admin
            .apply_policy(pb::ApplyPolicyRequest {
                document: wider(),
                dry_run: false,
                reason: "everyone gets the ledger".into(),
            })
            .await
    });
    // Once its first step is committed, the service stops.
    let job = first_step_of_wider(&app).await;
    assert_eq!(
        job.state, "running",
        "the apply ended before the stop: {job:?}"
    );
    let report = s.stop_within(Duration::from_secs(30)).await;
    assert!(
        report.forced.is_empty(),
        "the apply stopped by itself: {report:?}"
    );
    let answer = apply.await.unwrap().expect_err("the apply was cut short");
    assert_eq!(answer.code(), tonic::Code::Unavailable, "{answer:?}");
    assert!(
        answer.message().contains("nothing needs to be sent again"),
        "{answer:?}"
    );
    use tonic_types::StatusExt;
    assert_eq!(
        answer
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone()),
        Some(idgov_server::grpc::status::GOES_ON_LATER.to_string()),
        "a client can tell it need not send it again"
    );
    drop(app);

    let store = s.reopen_store().await;
    let stopped = store.get_bulk_job(&job.id).await.unwrap().unwrap();
    assert_eq!(stopped.state, "running", "{stopped:?}");
    assert!(
        stopped.cursor.as_str() < "B04999",
        "stopped between two steps, not run to its end: {stopped:?}"
    );
    // The manual clock stands still, so the lease cannot run out: only a
    // lease given up at the stop lets the next start go on at once.
    let app = App::start(store, s.clock.clone(), None).await.unwrap();
    let t0 = Instant::now();
    let done = loop {
        let j = app.store.get_bulk_job(&job.id).await.unwrap().unwrap();
        if j.state == "done" {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "not resumed: {j:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wider_applied_to_everyone(&app, &done).await;
}

/// Two replicas on one PostgreSQL: the one running a policy apply stops
/// half-way, and the other carries the apply on at once (the stopping one
/// gave up its lease), without waiting for the lease to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_half_way_through_an_apply_hands_it_on_at_once() {
    let Some(mut a) = idgov_tests::server::start("postgres").await else {
        return;
    };
    let app_a = a.app().clone();
    with_policy(&app_a).await;
    org(&app_a, 5000).await;
    let b = idgov_tests::server::start_replica(&a).await;
    let apply = {
        let app = app_a.clone();
        tokio::spawn(async move {
            idgov_server::app::to_the_end(&app, |app| async move {
                app.apply_policy(&wider(), false, "everyone gets the ledger", "user:admin")
                    .await
            })
            .await
        })
    };
    first_step_of_wider(&app_a).await;
    a.running.take().unwrap().stop().await.unwrap();
    let answer = apply.await.unwrap();
    assert!(
        matches!(answer, Err(idgov_server::AppError::GoesOnLater(_))),
        "{answer:?}"
    );
    // B's clock stands still: only a lease given up lets it take the job.
    let app_b = b.app().clone();
    assert_eq!(
        app_b.resume_bulk_jobs().await.unwrap(),
        1,
        "B carries the apply on"
    );
    let done = app_b
        .store
        .get_bulk_job("policy-v2")
        .await
        .unwrap()
        .unwrap();
    wider_applied_to_everyone(&app_b, &done).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_policy_apply_after_a_step_sqlite() {
    a_stop_ends_a_policy_apply_after_a_step("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_policy_apply_after_a_step_postgres() {
    a_stop_ends_a_policy_apply_after_a_step("postgres").await;
}

both_backends! {
    async fn a_large_roster_applies_its_leavers_before_anything_else(t: TestStore) {
        // 2,500 listed people whose names all change (three steps of
        // updates) and three people no longer listed: the leavers are in
        // the first step, not after every update.
        let (app, _) = org_settled(&t, 2503).await;
        let mut entries = listed(2503);
        entries.retain(|e| !["B00100", "B01500", "B02502"].contains(&e.employee_id.as_str()));
        for e in &mut entries {
            e.attrs.display_name = Some(format!("Renamed {}", e.employee_id));
        }
        let out = app.sync_roster(roster_sync("daily", entries), "service:hr").await.unwrap();
        assert_eq!((out.counts.leavers, out.counts.updates), (3, 2502));
        let applied = audited(&app.store, "hr.event.applied", 20_000).await;
        let of_sync: Vec<_> = applied.iter().filter(|e| e.detail.contains("roster:daily:")).collect();
        assert_eq!(of_sync.len(), 2505, "every change of the sync is applied");
        let last_leaver = of_sync.iter().filter(|e| e.detail.contains("\"kind\":\"terminate\"")).map(|e| e.seq).max().unwrap();
        let first_other = of_sync.iter().filter(|e| !e.detail.contains("\"kind\":\"terminate\"")).map(|e| e.seq).min().unwrap();
        assert!(last_leaver < first_other, "a leaver was applied after another change ({last_leaver} > {first_other})");
        for id in ["B00100", "B01500", "B02502"] {
            assert_eq!(app.store.get_identity(id).await.unwrap().unwrap().status, Status::Terminated, "{id}");
        }
    }
}

both_backends! {
    async fn the_events_a_roster_cannot_apply_are_reported_by_the_person_they_name(t: TestStore) {
        // 2,503 people renamed: three steps read back from the staged rows.
        // One person in each step already has an event under the id the
        // roster's event would take, with another payload: those three are
        // refused, the rest applied, and each refusal names its person.
        let (app, _) = org_settled(&t, 2503).await;
        let planted = ["B00500", "B01700", "B02400"];
        plant_roster_events(&app, "clash", &planted).await;
        let out = app.sync_roster(renamed(2503, "clash"), "service:hr").await.unwrap();
        assert_eq!(out.counts.updates, 2505);
        let who: Vec<&str> = out.rejected.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(who, planted, "{:?}", out.rejected);
        for (_, why) in &out.rejected {
            assert!(why.contains("different payload"), "{why}");
        }
        let ended = first_audit_event(
            &app,
            idgov_store::AuditFilter { action: "roster.sync".into(), target: "roster:workday:clash".into(), ..Default::default() },
            "the sync was never recorded",
        ).await;
        let detail: serde_json::Value = serde_json::from_str(&ended.detail).unwrap();
        assert_eq!(detail["rejected_count"], 3, "{detail}");
        let audited_who: Vec<&str> = detail["rejected"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(audited_who, planted, "{detail}");
        for id in planted {
            assert_ne!(app.store.get_identity(id).await.unwrap().unwrap().attrs.display_name, format!("Renamed {id}"));
        }
        for id in ["B00000", "B00501", "B01699", "B02502", "O1"] {
            assert_eq!(app.store.get_identity(id).await.unwrap().unwrap().attrs.display_name, format!("Renamed {id}"));
        }
    }

    async fn more_refusals_than_are_shown_are_all_counted(t: TestStore) {
        // Every second person of 2,503 (1,252, over three steps) already has
        // an event under the id the roster's would take: all are refused
        // and counted; the first 1,000, in the roster's order, are listed.
        let (app, _) = org_settled(&t, 2503).await;
        let planted: Vec<String> = (0..2503).step_by(2).map(|i| format!("B{i:05}")).collect();
        let ids: Vec<&str> = planted.iter().map(String::as_str).collect();
        plant_roster_events(&app, "many", &ids).await;
        let out = app.sync_roster(renamed(2503, "many"), "service:hr").await.unwrap();
        let who: Vec<&str> = out.rejected.iter().map(|(id, _)| id.as_str()).collect();
        let first: Vec<&str> = planted.iter().take(1000).map(String::as_str).collect();
        assert_eq!(who, first);
        let ended = first_audit_event(
            &app,
            idgov_store::AuditFilter { action: "roster.sync".into(), target: "roster:workday:many".into(), ..Default::default() },
            "the sync was never recorded",
        ).await;
        let detail: serde_json::Value = serde_json::from_str(&ended.detail).unwrap();
        assert_eq!(detail["rejected_count"], 1252, "{detail}");
        assert_eq!(detail["rejected"].as_array().unwrap().len(), 1000);
        assert_ne!(app.store.get_identity("B02502").await.unwrap().unwrap().attrs.display_name, "Renamed B02502");
        assert_eq!(app.store.get_identity("B02501").await.unwrap().unwrap().attrs.display_name, "Renamed B02501");
    }
}

/// The field violations of a refused roster sync.
fn refusal(err: idgov_server::AppError) -> Vec<(String, String)> {
    let idgov_server::AppError::Domain(d) = &err else {
        panic!("not a refusal: {err:?}")
    };
    assert_eq!(
        d.code,
        idgov_domain::error::ErrorCode::InvalidArgument,
        "{d:?}"
    );
    d.violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}

both_backends! {
    async fn a_roster_staged_as_it_arrives_is_checked_whole(t: TestStore) {
        // 2,505 entries: three upload steps, so every check crosses them.
        let (app, clock) = org_settled(&t, 2503).await;
        let unchanged = |app: std::sync::Arc<App>| async move {
            for id in ["B00003", "B01800", "B02400"] {
                let name = app.store.get_identity(id).await.unwrap().unwrap().attrs.display_name;
                assert_ne!(name, format!("Renamed {id}"), "part of a refused roster was applied");
            }
        };

        // An id listed again in a later step, and a name missing: both
        // named by place, in place order; nothing applied.
        let mut req = renamed(2503, "dupes");
        let RosterInput::Entries(entries) = &mut req.entries else { unreachable!() };
        entries[2450].employee_id = "B00003".into();
        entries[1800].employee_id = "B00003".into();
        entries[2400].attrs.display_name = None;
        let got = refusal(app.sync_roster(req, "service:hr").await.unwrap_err());
        assert_eq!(
            got,
            vec![
                ("roster[1800].employee_id".to_string(), "employee B00003 appears twice in the roster".to_string()),
                ("roster[2400].display_name".to_string(), "is required".to_string()),
                ("roster[2450].employee_id".to_string(), "employee B00003 appears twice in the roster".to_string()),
            ]
        );
        unchanged(app.clone()).await;
        assert_eq!(roster_stages(&app).await.len(), 0, "the refused roster's stage was kept");

        // More problems than are listed: the first 100 by place, then a
        // line saying more follow. Duplicates (of ids in the reverse of
        // their places) and missing names interleave.
        let mut req = renamed(2503, "many-problems");
        let RosterInput::Entries(entries) = &mut req.entries else { unreachable!() };
        for i in (1000..1300).step_by(2) {
            entries[i].attrs.display_name = None;
            // Ids listed earlier, in the reverse of their order.
            entries[i + 1].employee_id = format!("B{:05}", 999 - (i - 1000) / 2);
        }
        let got = refusal(app.sync_roster(req, "service:hr").await.unwrap_err());
        assert_eq!(got.len(), 101, "{got:?}");
        for (k, (field, _)) in got.iter().take(100).enumerate() {
            let i = 1000 + k;
            let want = if k % 2 == 0 { format!("roster[{i}].display_name") } else { format!("roster[{i}].employee_id") };
            assert_eq!(*field, want, "{got:?}");
        }
        assert_eq!(got[100], ("roster".to_string(), "more problems follow; fix these first".to_string()));
        unchanged(app.clone()).await;

        // A management cycle through a manager the roster names, closed at
        // the far end of the roster.
        let mut req = renamed(2503, "named-loop");
        let RosterInput::Entries(entries) = &mut req.entries else { unreachable!() };
        entries[3].attrs.manager_id = Some(Some("B02400".into()));
        entries[2400].attrs.manager_id = Some(Some("B01800".into()));
        entries[1800].attrs.manager_id = Some(Some("B00003".into()));
        let got = refusal(app.sync_roster(req, "service:hr").await.unwrap_err());
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].0.starts_with("roster[") && got[0].0.ends_with("].manager_employee_id"), "{got:?}");
        assert!(got[0].1.contains("B00003 → B02400 → B01800 → B00003")
            || got[0].1.contains("B01800 → B00003 → B02400 → B01800")
            || got[0].1.contains("B02400 → B01800 → B00003 → B02400"), "{got:?}");
        unchanged(app.clone()).await;

        // A cycle through a manager someone keeps: B00010 is managed by
        // B02410; a roster leaving B00010's manager column out keeps that,
        // and one naming B00010 as B02410's manager closes the loop.
        let mut req = listing(2503, "line");
        let RosterInput::Entries(entries) = &mut req.entries else { unreachable!() };
        entries[10].attrs.manager_id = Some(Some("B02410".into()));
        app.sync_roster(req, "service:hr").await.unwrap();
        // (Later snapshots: of two at one instant, the one with the greater
        // sync id counts as the later.)
        clock.advance(chrono::Duration::minutes(1));
        let mut req = renamed(2503, "kept-loop");
        let RosterInput::Entries(entries) = &mut req.entries else { unreachable!() };
        assert_eq!(entries[10].attrs.manager_id, None, "the column must be left out");
        entries[2410].attrs.manager_id = Some(Some("B00010".into()));
        let got = refusal(app.sync_roster(req, "service:hr").await.unwrap_err());
        assert!(got[0].1.contains("B00010 → B02410 → B00010") || got[0].1.contains("B02410 → B00010 → B02410"), "{got:?}");
        unchanged(app.clone()).await;
        // Leaving it out with B02410 managed by someone else is no cycle.
        let mut req = renamed(2503, "kept-line");
        let RosterInput::Entries(entries) = &mut req.entries else { unreachable!() };
        entries[2410].attrs.manager_id = Some(Some("B00011".into()));
        let out = app.sync_roster(req, "service:hr").await.unwrap();
        assert_eq!(out.outcome, idgov_server::app::roster::Outcome::Applied, "{out:?}");
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let b10 = app.store.get_identity("B00010").await.unwrap().unwrap();
        assert_eq!(b10.attrs.display_name, "Renamed B00010");
        assert_eq!(b10.attrs.manager_id.as_deref(), Some("B02410"), "a left-out manager column keeps the manager");
        assert_eq!(roster_stages(&app).await.len(), 0, "a stage was kept");
    }
}

both_backends! {
    async fn a_roster_sync_cut_short_by_a_crash_is_resumed_where_it_stopped(t: TestStore) {
        let (app, clock) = org_settled(&t, 4000).await;
        // A finished sync leaves no job behind.
        let far = app.now() + chrono::Duration::days(1);
        assert!(app.store.unclaimed_bulk_jobs(far).await.unwrap().is_empty());
        let as_of = app.now();
        let sync = {
            let (app, next) = (app.clone(), renamed(4000, "renames"));
            tokio::spawn(async move { app.sync_roster(next, "service:hr").await })
        };
        // The process stops once the first step is applied.
        let t0 = Instant::now();
        while app.store.get_identity("B00000").await.unwrap().unwrap().attrs.display_name != "Renamed B00000" {
            assert!(t0.elapsed() < Duration::from_secs(120), "the sync never made a step");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sync.abort();
        let _ = sync.await;
        assert_ne!(
            app.store.get_identity("B03999").await.unwrap().unwrap().attrs.display_name,
            "Renamed B03999",
            "the sync finished before it was cut short: nothing was tested"
        );
        // While it is stopped between two steps, HR hires someone the
        // snapshot does not list, dated before its time (and after the one
        // before it): no leaver in its
        // diff, which was made before, yet in effective order the snapshot
        // ends them, once it is applied whole.
        let hire = event(&app, EventKind::Hire, "hire-X1", "X1", &rfc(as_of - chrono::Duration::seconds(30)), Person::new("X1", "Finance").patch());
        app.submit_event(hire, "service:hr").await.unwrap();
        assert_eq!(app.store.get_identity("X1").await.unwrap().unwrap().status, Status::Active);
        // At the next start (or on any replica once its lease ran out) the
        // sync goes on from its place, with nothing sent again.
        let app = restart_after_leases(&t, app, &clock).await;
        let ended = first_audit_event(
            &app,
            idgov_store::AuditFilter { action: "roster.sync".into(), target: "roster:workday:renames".into(), ..Default::default() },
            "the sync cut short was never finished",
        ).await;
        let detail: serde_json::Value = serde_json::from_str(&ended.detail).unwrap();
        assert_eq!(detail["resumed"], true, "{detail}");
        assert_eq!(detail["outcome"], "applied", "{detail}");
        for id in ["B00000", "B02000", "B03999"] {
            assert_eq!(app.store.get_identity(id).await.unwrap().unwrap().attrs.display_name, format!("Renamed {id}"));
        }
        let x1 = app.store.get_identity("X1").await.unwrap().unwrap();
        assert_eq!((x1.status, x1.status_effective_at), (Status::Terminated, as_of), "hired while the sync was stopped");
        assert!(active_grants(&app, "X1").await.is_empty());
        // Every change applied once: none skipped, none replayed.
        let applied = audited(&app.store, "hr.event.applied", 20_000).await;
        assert_eq!(applied.iter().filter(|e| e.detail.contains("roster:renames:")).count(), 4002);
        // Nothing was reported as lost, no job or staged item is left, and
        // the snapshot's receipt answers a second send.
        let lost = audited(&app.store, "roster.sync.interrupted", 10).await;
        assert!(lost.is_empty(), "{lost:?}");
        let far = app.now() + chrono::Duration::days(1);
        assert!(app.store.unclaimed_bulk_jobs(far).await.unwrap().is_empty());
        let job = detail["job"].as_str().unwrap();
        let t0 = Instant::now();
        while !app.store.bulk_job_items(job, -10, 10).await.unwrap().is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(30), "staged items left");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = app.sync_roster(renamed(4000, "renames"), "service:hr").await.unwrap();
        assert_eq!(again.outcome, idgov_server::app::roster::Outcome::Applied);
        assert_eq!(again.counts.updates, 4002);
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 0);
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    async fn a_roster_sync_cut_short_while_it_is_staged_is_reported_and_completed_by_sending_it_again(t: TestStore) {
        let (app, clock) = org_settled(&t, 4000).await;
        // The process stops while the sync's items are written (three
        // transactions), before any change is applied.
        cut_short_while_staging(&app, renamed(4000, "renames")).await;
        let app = restart_after_leases(&t, app, &clock).await;
        let reported = first_audit_event(
            &app,
            idgov_store::AuditFilter { action: "roster.sync.interrupted".into(), ..Default::default() },
            "the interrupted sync was never reported",
        ).await;
        assert!(reported.security, "a sync cut short is a security event");
        assert_eq!(reported.target, "roster:workday:renames");
        assert!(reported.detail.contains("send the roster again"), "{}", reported.detail);
        let detail: serde_json::Value = serde_json::from_str(&reported.detail).unwrap();
        assert_eq!(detail["applied"], "0");
        // Nothing of it was applied, and nothing of it is left.
        assert_ne!(app.store.get_identity("B00000").await.unwrap().unwrap().attrs.display_name, "Renamed B00000");
        let job = detail["job"].as_str().unwrap();
        assert!(app.store.bulk_job_items(job, -10, 10).await.unwrap().is_empty(), "staged items left");
        // Reported once: the job is no longer running.
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 0);
        // Sent again, the roster applies.
        app.sync_roster(renamed(4000, "renames"), "service:hr").await.unwrap();
        for id in ["B00000", "B02000", "B03999"] {
            assert_eq!(app.store.get_identity(id).await.unwrap().unwrap().attrs.display_name, format!("Renamed {id}"));
        }
        let far = app.now() + chrono::Duration::days(1);
        assert!(app.store.unclaimed_bulk_jobs(far).await.unwrap().is_empty());
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }
}

both_backends! {
    async fn a_roster_sync_resumed_after_a_crash_ends_as_the_sync_run_whole(t: TestStore) {
        // Generated rosters (leavers, movers, renames, manager changes and
        // clears, end dates set and taken away, joiners) are applied whole
        // on one store, and on another cut short by a crash after one or
        // more steps and resumed at the next start. Everyone must end the
        // same: status, attributes and active entitlements.
        let backend = if t.url.starts_with("postgres") { "postgres" } else { "sqlite" };
        let whole = idgov_tests::backends::open(backend).await.unwrap();
        let (app, clock) = org_settled(&t, 3000).await;
        let (reference, ref_clock) = org_settled(&whole, 3000).await;
        let mut app = app;
        let mut interrupted = 0;
        for seed in 1..=2u64 {
            let mut rng = Lcg(seed * 7919);
            let sync_id = format!("gen-{seed}");
            let mut entries = listed(3000);
            entries.retain(|_| rng.below(100) >= 2);
            for e in &mut entries {
                match rng.below(10) {
                    0 => e.attrs.department = Some("Engineering".into()),
                    1 => e.attrs.display_name = Some(format!("Renamed {seed} {}", e.employee_id)),
                    2 => e.attrs.manager_id = Some(Some("O1".into())),
                    3 => e.attrs.manager_id = Some(None),
                    4 => e.attrs.end_date = chrono::NaiveDate::from_ymd_opt(2027, 1, 31),
                    5 => e.attrs.clear_end_date = true,
                    _ => {}
                }
            }
            for j in 0..rng.below(400) {
                entries.push(RosterEntry {
                    employee_id: format!("J{seed}{j:04}"),
                    attrs: Person::new("x", "Sales").patch(),
                });
            }
            let next = roster_sync(&sync_id, entries);
            reference.sync_roster(next.clone(), "service:hr").await.unwrap();
            let sync = {
                let (app, next) = (app.clone(), next);
                tokio::spawn(async move { app.sync_roster(next, "service:hr").await })
            };
            // Cut short once the first step (of the leavers and the first
            // 1,000 changes) is recorded: more changes, the presences of
            // the people listed unchanged, and the snapshot's end remain.
            let after = 1000;
            let far = app.now() + chrono::Duration::days(1);
            let t0 = Instant::now();
            loop {
                let jobs = app.store.unclaimed_bulk_jobs(far).await.unwrap();
                let at = jobs.iter().filter(|j| j.kind == "roster_sync" && j.state == "running")
                    .filter_map(|j| j.cursor.parse::<u64>().ok()).max();
                if at.is_some_and(|c| c >= after) || sync.is_finished() {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(120), "the sync never made {after} changes");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            sync.abort();
            let _ = sync.await;
            let cut = app.store.unclaimed_bulk_jobs(far).await.unwrap().iter().any(|j| j.kind == "roster_sync");
            interrupted += usize::from(cut);
            ref_clock.advance(chrono::Duration::seconds(120));
            app = restart_after_leases(&t, app, &clock).await;
            let t0 = Instant::now();
            while !app.store.unclaimed_bulk_jobs(far + chrono::Duration::days(1)).await.unwrap().is_empty() {
                assert!(t0.elapsed() < Duration::from_secs(120), "the cut sync was never finished");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (got, want) = (app.store.all_identities().await.unwrap(), reference.store.all_identities().await.unwrap());
            assert_eq!(got.len(), want.len(), "seed {seed}");
            for (id, w) in &want {
                let g = &got[id];
                assert_eq!(
                    (g.status, &g.attrs, &g.history, g.attrs_effective_at, g.status_effective_at),
                    (w.status, &w.attrs, &w.history, w.attrs_effective_at, w.status_effective_at),
                    "seed {seed}: {id}"
                );
            }
            let (got, want) = (app.store.all_active_grants().await.unwrap(), reference.store.all_active_grants().await.unwrap());
            let ents = |m: &std::collections::HashMap<String, Vec<idgov_domain::grant::Grant>>| {
                let mut v: Vec<(String, String)> = m.iter()
                    .flat_map(|(id, gs)| gs.iter().map(move |g| (id.clone(), g.entitlement_id.clone())))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(ents(&got), ents(&want), "seed {seed}");
            let lost = audited(&app.store, "roster.sync.interrupted", 10).await;
            assert!(lost.is_empty(), "seed {seed}: {lost:?}");
        }
        assert!(interrupted > 0, "no sync was cut short: nothing was tested");
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }
}

/// The held roster sync of `sync_id` on the `org` of 4,000: the first
/// 1,000 listed (every fifth renamed), 100 joiners, 3,000 leavers.
fn held_roster(sync_id: &str) -> SyncRequest {
    let mut entries = listed(1000);
    // Every fifth of B00000..B00999 renamed: 200 updates.
    for e in entries[..1000].iter_mut().step_by(5) {
        e.attrs.display_name = Some(format!("Renamed {}", e.employee_id));
    }
    for j in 0..100 {
        entries.push(RosterEntry {
            employee_id: format!("J{j:04}"),
            attrs: Person::new("joiner", "Finance").patch(),
        });
    }
    roster_sync(sync_id, entries)
}

/// Sends `sync` and stops it (as a crash would) while its rows are being
/// staged, before anything is applied or held.
async fn cut_short_while_staging(app: &std::sync::Arc<App>, sync: SyncRequest) {
    let task = {
        let app = app.clone();
        tokio::spawn(async move { app.sync_roster(sync, "service:hr").await })
    };
    let far = app.now() + chrono::Duration::days(1);
    let t0 = Instant::now();
    while !app
        .store
        .unclaimed_bulk_jobs(far)
        .await
        .unwrap()
        .iter()
        .any(|j| j.state == "staging")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the sync was never staged"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
    let jobs = app.store.unclaimed_bulk_jobs(far).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.state == "staging"),
        "staged before it was cut short: nothing was tested ({jobs:?})"
    );
}

/// Every change `read(from, limit)` lists (with the total it reports),
/// read `page` at a time.
async fn all_changes<F, Fut>(page: usize, read: F) -> Vec<idgov_domain::roster::RosterChange>
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = (Vec<idgov_domain::roster::RosterChange>, usize)>,
{
    let mut all = Vec::new();
    loop {
        let (got, total) = read(all.len(), page).await;
        assert!(got.len() <= page);
        if got.is_empty() {
            assert_eq!(all.len(), total);
            return all;
        }
        all.extend(got);
    }
}

/// Every change of held roster `id`, read `page` at a time.
async fn all_held_changes(
    app: &App,
    id: &str,
    page: usize,
) -> Vec<idgov_domain::roster::RosterChange> {
    all_changes(page, |from, limit| async move {
        app.held_roster_changes(id, from, limit).await.unwrap()
    })
    .await
}

both_backends! {
    async fn a_held_roster_lists_every_change_once_and_keeps_its_rows_until_it_is_decided(t: TestStore) {
        let (app, _clock) = org_settled(&t, 4000).await;
        let out = app.sync_roster(held_roster("held-a"), "service:hr").await.unwrap();
        let held_id = out.held_change_id.clone().expect("held by the guard");
        assert_eq!((out.counts.leavers, out.counts.joiners, out.counts.total), (3000, 100, 3300));
        // The held change shows the first 1,000 and counts all of them.
        let held = app.store.get_held_change(&held_id).await.unwrap().unwrap();
        let (shown, counts) = idgov_server::app::held::held_diff(&held).expect("a roster diff");
        assert_eq!((shown.changes.len(), counts.total, counts.leavers), (1000, 3300, 3000));
        // Its changes and the people present are staged in rows, 2,000 to
        // a row: 3,300 changes and 1,002 present people.
        let job = format!("release-{held_id}");
        assert_eq!(app.store.bulk_job_items(&job, 0, 100).await.unwrap().len(), 3);
        assert_eq!(app.store.get_bulk_job(&job).await.unwrap().unwrap().state, "held");
        // A restart neither drops the staged rows nor applies anything.
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 0);
        // Every change once, leavers first, in any page size.
        for page in [1000, 333, 2000] {
            let all = all_held_changes(&app, &held_id, page).await;
            assert_eq!(all.len(), 3300, "page {page}");
            let ids: std::collections::HashSet<&str> = all.iter().map(|c| c.employee_id.as_str()).collect();
            assert_eq!(ids.len(), 3300, "page {page}: a change listed twice");
            assert!(all[..3000].iter().all(|c| c.kind == idgov_domain::roster::ChangeKind::Leaver));
            assert!(all[3000..].iter().all(|c| c.kind != idgov_domain::roster::ChangeKind::Leaver));
            assert!(ids.contains("B03999") && ids.contains("J0099") && ids.contains("B00995"));
            assert!(!ids.contains("B00001"), "an unchanged person is not a change");
        }
        assert!(app.store.get_identity("B03999").await.unwrap().unwrap().status == Status::Active);
        // Released: applied as staged, and its rows go.
        app.release_held(&held_id, "confirmed with HR", "user:sec").await.unwrap();
        assert_eq!(app.store.get_bulk_job(&job).await.unwrap().unwrap().state, "done");
        assert!(app.store.bulk_job_items(&job, -10, 10).await.unwrap().is_empty(), "staged rows left");
        assert_eq!(app.store.get_identity("B03999").await.unwrap().unwrap().status, Status::Terminated);
        assert_eq!(app.store.get_identity("B00995").await.unwrap().unwrap().attrs.display_name, "Renamed B00995");
        assert_eq!(app.store.get_identity("J0099").await.unwrap().unwrap().status, Status::Active);
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 1102);
        let e = app.held_roster_changes(&held_id, 0, 10).await.unwrap_err();
        assert!(e.to_string().contains("released"), "{e}");
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    async fn a_discarded_roster_applies_nothing_and_its_rows_go(t: TestStore) {
        let (app, _clock) = org_settled(&t, 4000).await;
        let out = app.sync_roster(held_roster("held-b"), "service:hr").await.unwrap();
        let held_id = out.held_change_id.clone().expect("held by the guard");
        let job = format!("release-{held_id}");
        app.discard_held(&held_id, "a truncated export", "user:sec").await.unwrap();
        assert_eq!(app.store.get_bulk_job(&job).await.unwrap().unwrap().state, "discarded");
        assert!(app.store.bulk_job_items(&job, -10, 10).await.unwrap().is_empty(), "staged rows left");
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 4002);
        assert!(app.store.get_identity("J0000").await.unwrap().is_none());
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 0);
        let e = app.held_roster_changes(&held_id, 0, 10).await.unwrap_err();
        assert!(e.to_string().contains("discarded"), "{e}");
    }

    async fn a_roster_cut_short_while_it_is_staged_to_be_held_is_reported_and_held_when_sent_again(t: TestStore) {
        let (app, clock) = org_settled(&t, 4000).await;
        // The process stops while the held sync's rows are written.
        cut_short_while_staging(&app, held_roster("held-c")).await;
        assert!(app.store.list_held_changes(HeldState::Held, "", 10).await.unwrap().is_empty());
        let app = restart_after_leases(&t, app, &clock).await;
        let reported = first_audit_event(
            &app,
            idgov_store::AuditFilter { action: "roster.sync.interrupted".into(), ..Default::default() },
            "the interrupted sync was never reported",
        ).await;
        assert_eq!(reported.target, "roster:workday:held-c");
        let detail: serde_json::Value = serde_json::from_str(&reported.detail).unwrap();
        assert_eq!(detail["applied"], "0");
        let job = detail["job"].as_str().unwrap();
        assert!(app.store.bulk_job_items(job, -10, 10).await.unwrap().is_empty(), "staged rows left");
        assert!(app.store.list_held_changes(HeldState::Held, "", 10).await.unwrap().is_empty());
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 4002);
        // Sent again, it is held, and lists all its changes.
        let again = app.sync_roster(held_roster("held-c"), "service:hr").await.unwrap();
        let held_id = again.held_change_id.expect("held by the guard");
        assert_eq!(all_held_changes(&app, &held_id, 1000).await.len(), 3300);
    }
}

/// Every change of roster preview `id`, read `page` at a time.
async fn all_preview_changes(
    app: &App,
    id: &str,
    page: usize,
) -> Vec<idgov_domain::roster::RosterChange> {
    all_changes(page, |from, limit| async move {
        let p = app.roster_preview(id, from, limit).await.unwrap();
        (p.changes, p.total)
    })
    .await
}

/// [`held_roster`] as a dry run.
fn dry_roster(sync_id: &str) -> SyncRequest {
    SyncRequest {
        dry_run: true,
        ..held_roster(sync_id)
    }
}

both_backends! {
    async fn a_dry_run_keeps_its_whole_diff_as_a_preview_for_a_day_and_applies_nothing(t: TestStore) {
        let (app, clock) = org_settled(&t, 4000).await;
        let head = app.store.audit_head().await.unwrap();
        let out = app.sync_roster(dry_roster("dry-a"), "service:hr").await.unwrap();
        assert_eq!(out.outcome, idgov_server::app::roster::Outcome::DryRun);
        assert_eq!((out.counts.leavers, out.counts.joiners, out.counts.total), (3000, 100, 3300));
        assert_eq!(out.diff.changes.len(), 1000);
        let id = out.preview_id.clone().expect("a dry run shown in part has a preview");
        // Every change once, leavers first, in any page size; the answer
        // showed the first thousand of them.
        for page in [1000, 333, 2000] {
            let all = all_preview_changes(&app, &id, page).await;
            assert_eq!(all.len(), 3300, "page {page}");
            let ids: std::collections::HashSet<&str> = all.iter().map(|c| c.employee_id.as_str()).collect();
            assert_eq!(ids.len(), 3300, "page {page}: a change listed twice");
            assert!(all[..3000].iter().all(|c| c.kind == idgov_domain::roster::ChangeKind::Leaver));
            assert!(all[3000..].iter().all(|c| c.kind != idgov_domain::roster::ChangeKind::Leaver));
            assert_eq!(all[..1000], out.diff.changes[..], "page {page}");
            assert!(ids.contains("B03999") && ids.contains("J0099") && ids.contains("B00995"));
        }
        // Nothing applied, held or audited.
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 4002);
        assert!(app.store.get_identity("J0000").await.unwrap().is_none());
        assert!(app.store.list_held_changes(HeldState::Held, "", 10).await.unwrap().is_empty());
        assert_eq!(app.store.audit_head().await.unwrap(), head, "a dry run changes nothing");
        assert!(app.store.get_sync("workday", "dry-a").await.unwrap().is_none());
        // A restart resumes nothing of it, and it is still there.
        let app = restart_after_leases(&t, app, &clock).await;
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 0);
        assert_eq!(app.expire_previews().await.unwrap(), 0);
        let job = format!("preview-{id}");
        assert_eq!(app.store.bulk_job_items(&job, 0, 100).await.unwrap().len(), 2);
        // A dry run shown whole keeps nothing.
        let small = app.sync_roster(SyncRequest { dry_run: true, ..listing(4000, "dry-b") }, "service:hr").await.unwrap();
        assert_eq!(small.counts.total, 0);
        assert!(small.preview_id.is_none());
        // A day on, it is gone, and the sweep removes its rows.
        clock.advance(chrono::Duration::hours(23));
        assert_eq!(all_preview_changes(&app, &id, 1000).await.len(), 3300);
        assert_eq!(app.expire_previews().await.unwrap(), 0);
        clock.advance(chrono::Duration::hours(1) - chrono::Duration::seconds(120));
        let e = app.roster_preview(&id, 0, 10).await.unwrap_err();
        assert!(e.to_string().contains("kept for 24 hours"), "{e}");
        assert_eq!(app.expire_previews().await.unwrap(), 1);
        assert!(app.store.get_bulk_job(&job).await.unwrap().is_none());
        assert!(app.store.bulk_job_items(&job, -10, 10).await.unwrap().is_empty(), "staged rows left");
        // The roster itself is then held as usual.
        let held = app.sync_roster(held_roster("dry-a"), "service:hr").await.unwrap();
        assert!(held.held_change_id.is_some());
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    async fn a_dry_run_cut_short_while_its_preview_is_staged_leaves_nothing_after_a_day(t: TestStore) {
        let (app, clock) = org_settled(&t, 4000).await;
        cut_short_while_staging(&app, dry_roster("dry-c")).await;
        let far = app.now() + chrono::Duration::days(1);
        let jobs = app.store.unclaimed_bulk_jobs(far).await.unwrap();
        let job = jobs.iter().find(|j| j.kind == idgov_server::app::preview::ROSTER_PREVIEW).expect("a preview staged").id.clone();
        let app = restart_after_leases(&t, app, &clock).await;
        // Not resumed (nothing asked for it any more), not applied.
        assert_eq!(app.resume_bulk_jobs().await.unwrap(), 0);
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 4002);
        let id = job.trim_start_matches("preview-");
        assert!(app.roster_preview(id, 0, 10).await.is_err(), "a half-staged preview is not shown");
        clock.advance(chrono::Duration::hours(25));
        assert_eq!(app.expire_previews().await.unwrap(), 1);
        assert!(app.store.get_bulk_job(&job).await.unwrap().is_none());
        assert!(app.store.bulk_job_items(&job, -10, 10).await.unwrap().is_empty(), "staged rows left");
    }
}
