//! Joiner, mover and leaver end to end through the application, on both
//! backends: idempotency, ordering, scheduling, the hard rules, the roster
//! guard and the audit trail.

use crate::common::*;
use idgov_domain::Classification;
use idgov_domain::guard::HeldState;
use idgov_domain::hr::{EventKind, EventState};
use idgov_domain::identity::{AttributesPatch, BackgroundCheck, EmploymentType, Status};
use idgov_domain::roster::RosterEntry;
use idgov_server::AppError;
use idgov_server::app::policy::PolicyOutcome;
use idgov_server::app::roster::Outcome;
use idgov_store::AuditFilter;
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;

fn entry(id: &str, dept: &str) -> RosterEntry {
    RosterEntry {
        employee_id: id.into(),
        attrs: AttributesPatch {
            display_name: Some(format!("Person {id}")),
            department: Some(dept.into()),
            background_check: Some(BackgroundCheck::Cleared),
            clearance: Some(Classification::Confidential),
            ..Default::default()
        },
    }
}

/// Everything observable about the store, for "changed nothing" checks.
async fn snapshot(app: &idgov_server::App) -> (Vec<String>, i64) {
    let ids = app.store.all_identities().await.unwrap();
    let mut rows: Vec<String> = ids.values().map(|i| format!("{i:?}")).collect();
    let grants = app.store.all_active_grants().await.unwrap();
    rows.extend(grants.values().flatten().map(|g| format!("{g:?}")));
    rows.sort();
    (rows, app.store.audit_head().await.unwrap().0)
}

both_backends! {
    async fn a_duplicate_event_changes_nothing(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        let p = Person::new("E1", "Finance");
        let ev = event(&app, EventKind::Hire, "hire-1", "E1", "", p.patch());
        let first = app.submit_event(ev.clone(), "service:hr").await.unwrap();
        assert_eq!((first.state, first.duplicate, first.grants_added), (EventState::Applied, false, 3));
        let before = snapshot(&app).await;
        let again = app.submit_event(ev.clone(), "service:hr").await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.state, EventState::Applied);
        assert_eq!(snapshot(&app).await, before, "no identity, grant or audit change");

        // The same key with another payload is a conflict, not a duplicate.
        let mut other = p.patch();
        other.department = Some("Sales".into());
        let forged = event(&app, EventKind::Hire, "hire-1", "E1", "", other);
        let err = app.submit_event(forged, "service:hr").await.unwrap_err();
        assert!(matches!(&err, AppError::Domain(d) if d.code == idgov_domain::ErrorCode::IdempotencyConflict), "{err:?}");
        assert_eq!(snapshot(&app).await, before);
    }

    async fn a_manager_clear_accepted_before_the_upgrade_is_the_same_event_when_sent_again(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        hire(&app, &Person::new("M1", "Finance")).await;
        let mut p = Person::new("E1", "Finance").patch();
        p.manager_id = Some(Some("M1".into()));
        app.submit_event(event(&app, EventKind::Hire, "hire-e1", "E1", "", p), "service:hr").await.unwrap();
        let clear = AttributesPatch { manager_id: Some(None), title: Some("Analyst".into()), ..Default::default() };
        let ev = event(&app, EventKind::Update, "clear-1", "E1", "", clear.clone());
        let earlier = ev.earlier_fingerprint.clone().expect("a cleared manager had another fingerprint");
        assert_ne!(earlier, ev.fingerprint);
        app.submit_event(ev.clone(), "service:hr").await.unwrap();
        // As a version before 2026-12-01 stored it: the manager written as
        // null, in the payload and in the fingerprint over it.
        let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&t.url).await.unwrap();
        let stored: String = sqlx::Row::get(
            &sqlx::query("SELECT payload FROM hr_events WHERE event_id = 'clear-1'").fetch_one(&mut c).await.unwrap(),
            "payload",
        );
        let mut payload: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(payload["attrs"]["manager_id"], "", "{payload}");
        payload["attrs"]["manager_id"] = serde_json::Value::Null;
        payload["fingerprint"] = serde_json::Value::String(earlier.clone());
        let updated = sqlx::query("UPDATE hr_events SET fingerprint = $1, payload = $2 WHERE event_id = 'clear-1'")
            .bind(&earlier)
            .bind(payload.to_string())
            .execute(&mut c)
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 1);
        let before = snapshot(&app).await;
        // The HR system retries it after the upgrade: a duplicate.
        let again = app.submit_event(ev.clone(), "service:hr").await.unwrap();
        assert!(again.duplicate, "{again:?}");
        assert_eq!(snapshot(&app).await, before, "nothing applied twice");
        // Another payload under the key is still a conflict.
        let other = AttributesPatch { title: Some("Lead".into()), ..clear };
        let err = app
            .submit_event(event(&app, EventKind::Update, "clear-1", "E1", "", other), "service:hr")
            .await
            .unwrap_err();
        assert!(matches!(&err, AppError::Domain(d) if d.code == idgov_domain::ErrorCode::IdempotencyConflict), "{err:?}");
        assert_eq!(app.store.get_identity("E1").await.unwrap().unwrap().attrs.manager_id, None);
    }

    async fn an_older_event_after_a_newer_one_changes_nothing(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        hire(&app, &Person::new("E1", "Finance")).await;
        clock.advance(days(10));
        let t0 = app.now();
        let newer = AttributesPatch { department: Some("Sales".into()), title: Some("Account Executive".into()), ..Default::default() };
        app.submit_event(event(&app, EventKind::Move, "move-new", "E1", &rfc(t0 - days(1)), newer), "service:hr").await.unwrap();
        assert_eq!(active_grants(&app, "E1").await, ["lobby", "wiki"], "the mover lost finance birthright");
        let before = app.store.get_identity("E1").await.unwrap().unwrap();
        let grants_before = active_grants(&app, "E1").await;

        // Arrives later, effective earlier.
        let older = AttributesPatch { department: Some("Finance".into()), title: Some("Clerk".into()), ..Default::default() };
        let out = app.submit_event(event(&app, EventKind::Move, "move-old", "E1", &rfc(t0 - days(3)), older), "service:hr").await.unwrap();
        assert_eq!(out.state, EventState::Superseded);
        assert_eq!(app.store.get_identity("E1").await.unwrap().unwrap(), before);
        assert_eq!(active_grants(&app, "E1").await, grants_before);
    }

    async fn a_future_dated_terminate_applies_at_its_effective_time(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        hire(&app, &Person::new("E1", "Finance")).await;
        // t0 is 2026-03-02 09:00Z; the last day is 2026-03-05 in Oslo, so the
        // termination takes effect at 2026-03-05T23:00Z (midnight in Oslo).
        let out = app
            .submit_event(event(&app, EventKind::Terminate, "term-1", "E1", "2026-03-05", AttributesPatch::default()), "service:hr")
            .await
            .unwrap();
        assert_eq!(out.state, EventState::Scheduled);
        assert_eq!(rfc(out.effective_at), "2026-03-05T23:00:00+00:00");

        clock.set(out.effective_at - chrono::Duration::seconds(1));
        assert_eq!(app.run_due().await.unwrap(), 0);
        assert_eq!(app.store.get_identity("E1").await.unwrap().unwrap().status, Status::Active);
        assert_eq!(active_grants(&app, "E1").await.len(), 3);

        clock.set(out.effective_at);
        assert_eq!(app.run_due().await.unwrap(), 1);
        let person = app.store.get_identity("E1").await.unwrap().unwrap();
        assert_eq!(person.status, Status::Terminated);
        assert_eq!(person.attrs.end_date.map(|d| d.to_string()).as_deref(), Some("2026-03-05"));
        assert!(active_grants(&app, "E1").await.is_empty(), "a leaver holds zero active grants");
        let history = app.store.list_grants("E1", true, "", 100).await.unwrap();
        assert_eq!(history.len(), 3, "nothing deleted");
        assert!(history.iter().all(|(g, _)| g.revoke_reason == Some(idgov_domain::grant::RevokeReason::Leaver)));
        assert_eq!(app.store.get_hr_event("workday", "term-1").await.unwrap().unwrap().state, EventState::Applied);
        assert_eq!(app.run_due().await.unwrap(), 0, "applied once");
    }

    async fn a_rescinded_future_hire_never_starts(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        let p = Person::new("E7", "Finance");
        let hire_ev = event(&app, EventKind::Hire, "hire-7", "E7", "2026-04-01", p.patch());
        assert_eq!(app.submit_event(hire_ev, "service:hr").await.unwrap().state, EventState::Scheduled);
        assert_eq!(app.store.get_identity("E7").await.unwrap().unwrap().status, Status::PreHire);
        assert!(active_grants(&app, "E7").await.is_empty(), "a pre-hire holds nothing");

        let mut rescind = idgov_domain::hr::HrEventInput {
            source: "workday".into(), event_id: "rescind-7".into(), kind: Some(EventKind::Rescind),
            employee_id: "E7".into(), rescinds_event_id: "hire-7".into(), ..Default::default()
        };
        let ev = idgov_domain::hr::HrEvent::parse(rescind.clone(), chrono_tz::UTC, app.now()).unwrap();
        app.submit_event(ev, "service:hr").await.unwrap();
        assert_eq!(app.store.get_hr_event("workday", "hire-7").await.unwrap().unwrap().state, EventState::Rescinded);
        clock.set(chrono::DateTime::parse_from_rfc3339("2026-04-02T00:00:00Z").unwrap().into());
        assert_eq!(app.run_due().await.unwrap(), 0);
        assert_ne!(app.store.get_identity("E7").await.unwrap().unwrap().status, Status::Active);

        // Rescinding what already applied is refused: send a compensating event.
        rescind.event_id = "rescind-again".into();
        rescind.rescinds_event_id = "hire-O1".into();
        rescind.employee_id = "O1".into();
        let ev = idgov_domain::hr::HrEvent::parse(rescind, chrono_tz::UTC, app.now()).unwrap();
        let err = app.submit_event(ev, "service:hr").await.unwrap_err();
        assert!(err.to_string().contains("compensating"), "{err}");
    }

    async fn nobody_holds_above_their_ceiling(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        // A pending background check: public only, whatever the clearance.
        let mut p = Person::new("E1", "Finance");
        p.check = BackgroundCheck::Pending;
        p.clearance = Classification::Restricted;
        hire(&app, &p).await;
        assert_eq!(active_grants(&app, "E1").await, ["lobby"]);
        // Cleared: birthright up to the clearance.
        clock.advance(days(1));
        let cleared = AttributesPatch { background_check: Some(BackgroundCheck::Cleared), ..Default::default() };
        app.submit_event(event(&app, EventKind::Update, "bg-1", "E1", "", cleared), "service:hr").await.unwrap();
        assert_eq!(active_grants(&app, "E1").await, ["ledger", "lobby", "wiki"]);
        // Clearance lowered to internal: the confidential grant goes.
        clock.advance(days(1));
        let lower = AttributesPatch { clearance: Some(Classification::Internal), ..Default::default() };
        app.submit_event(event(&app, EventKind::Update, "cl-1", "E1", "", lower), "service:hr").await.unwrap();
        assert_eq!(active_grants(&app, "E1").await, ["lobby", "wiki"]);
        // A contractor with restricted clearance is capped at confidential.
        let mut c = Person::new("C1", "Finance");
        c.kind = EmploymentType::Contractor;
        c.clearance = Classification::Restricted;
        hire(&app, &c).await;
        let identity = app.store.get_identity("C1").await.unwrap().unwrap();
        assert_eq!(identity.attrs.access_ceiling(), Classification::Confidential);
        assert_invariants(&app).await;
    }

    async fn random_histories_keep_the_hard_rules(t: TestStore) {
        // An oracle test: a seeded random history of HR events, then the
        // invariants every state must satisfy.
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng % n };
        let depts = ["Finance", "Sales", "Engineering"];
        let checks = [BackgroundCheck::Pending, BackgroundCheck::Cleared, BackgroundCheck::Failed];
        let kinds = [EmploymentType::Employee, EmploymentType::Contractor, EmploymentType::Intern];
        for step in 0..150 {
            clock.advance(chrono::Duration::minutes(1 + next(90) as i64));
            let id = format!("R{}", next(12));
            let patch = AttributesPatch {
                display_name: Some(format!("Random {id}")),
                department: Some(depts[next(3) as usize].into()),
                background_check: Some(checks[next(3) as usize]),
                clearance: Some(Classification::ALL[next(4) as usize]),
                employment_type: Some(kinds[next(3) as usize]),
                ..Default::default()
            };
            let kind = [EventKind::Hire, EventKind::Update, EventKind::Move, EventKind::Terminate, EventKind::Rehire][next(5) as usize];
            // Some events arrive late: effective up to two hours in the past.
            let effective = rfc(app.now() - chrono::Duration::minutes(next(120) as i64));
            let ev = event(&app, kind, &format!("rnd-{step}"), &id, &effective, patch);
            match app.submit_event(ev, "service:hr").await {
                Ok(_) => {}
                Err(AppError::Domain(_)) => {} // e.g. an update of someone never hired
                Err(e) => panic!("step {step}: {e}"),
            }
        }
        assert_invariants(&app).await;
        assert!(app.store.verify_audit_chain().await.unwrap().broken.is_none());
    }

    /// A roster that drops future starters withdraws their starts, and the
    /// guard counts them with the leavers: a roster that lost its future
    /// starters (an export filtered by start date) is held, not applied.
    async fn a_roster_withdrawing_many_future_starts_is_held(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        let everyone: Vec<RosterEntry> = (0..38).map(|i| entry(&format!("E{i:03}"), "Finance"))
            .chain(["O1", "O2"].iter().map(|o| entry(o, "Management")))
            .collect();
        let starters: Vec<RosterEntry> = (0..3).map(|i| {
            let mut e = entry(&format!("N{i}"), "Finance");
            e.attrs.start_date = Some(app.now().date_naive() + chrono::Days::new(30));
            e
        }).collect();
        let first = app.sync_roster(roster_sync("s1", [everyone.clone(), starters].concat()), "service:hr").await.unwrap();
        assert_eq!((first.outcome, first.counts.joiners), (Outcome::Applied, 41));
        clock.advance(chrono::Duration::days(1));
        let held = app.sync_roster(roster_sync("s2", everyone.clone()), "service:hr").await.unwrap();
        assert_eq!(held.outcome, Outcome::Held, "{:?}", held.counts);
        assert_eq!((held.counts.withdrawals, held.counts.leavers), (3, 0));
        assert_eq!((held.guard.active, held.guard.affected, held.guard.threshold), (40, 3, 2));
        for i in 0..3 {
            assert_eq!(app.store.get_identity(&format!("N{i}")).await.unwrap().unwrap().status, Status::PreHire, "held: nothing applied");
        }
        // Released: the starts are withdrawn.
        let id = held.held_change_id.clone().unwrap();
        let changes = app.held_roster_changes(&id, 0, 10).await.unwrap().0;
        assert!(changes.iter().all(|c| c.kind == idgov_domain::roster::ChangeKind::Withdrawal), "{changes:?}");
        assert_eq!(changes[0].changes[0].field, "start_date", "it shows the start that goes");
        app.release_held(&id, "offers withdrawn", "user:sec").await.unwrap();
        for i in 0..3 {
            let p = app.store.get_identity(&format!("N{i}")).await.unwrap().unwrap();
            assert_eq!((p.status, p.history.employments), (Status::Terminated, 0));
        }
        let filter = idgov_store::EventFilter { state: Some(EventState::Scheduled), ..Default::default() };
        assert!(app.store.list_hr_events(&filter, 0, 10).await.unwrap().is_empty(), "no start left scheduled");
    }

    async fn a_roster_missing_ten_percent_is_held_and_nothing_applied(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        let everyone: Vec<RosterEntry> = (0..38).map(|i| entry(&format!("E{i:03}"), "Finance"))
            .chain(["O1", "O2"].iter().map(|o| entry(o, "Management")))
            .collect();
        let first = app.sync_roster(roster_sync("s1", everyone.clone()), "service:hr").await.unwrap();
        assert_eq!(first.outcome, Outcome::Applied);
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 40);
        let before = snapshot(&app).await;

        // 4 of 40 active people (10%) are missing: above min(5%, 500) = 2.
        let short: Vec<RosterEntry> = everyone[4..].to_vec();
        let held = app.sync_roster(roster_sync("s2", short.clone()), "service:hr").await.unwrap();
        assert_eq!(held.outcome, Outcome::Held);
        assert_eq!((held.guard.active, held.guard.affected, held.guard.threshold), (40, 4, 2));
        let (rows, audit_seq) = snapshot(&app).await;
        assert_eq!(rows, before.0, "no identity or grant changed");
        assert!(audit_seq > before.1, "the hold itself is audited");
        let sec = app.store.list_audit_events(&AuditFilter { action: "roster.sync.held".into(), ..Default::default() }, 0, 10).await.unwrap();
        assert!(sec[0].security, "a held sync is a security event");
        // Re-sending the same snapshot is idempotent: the same hold.
        let again = app.sync_roster(roster_sync("s2", short.clone()), "service:hr").await.unwrap();
        assert_eq!(again.held_change_id, held.held_change_id);
        assert_eq!(app.store.list_held_changes(HeldState::Held, "", 10).await.unwrap().len(), 1);

        // Discarding applies nothing.
        let id = held.held_change_id.clone().unwrap();
        app.discard_held(&id, "wrong export", "user:sec").await.unwrap();
        assert_eq!(snapshot(&app).await.0, before.0);
        assert!(app.release_held(&id, "changed my mind", "user:sec").await.is_err(), "decided once");

        // Held again, then released: the leavers go, and lose everything.
        let held = app.sync_roster(roster_sync("s3", short), "service:hr").await.unwrap();
        assert_eq!(held.outcome, Outcome::Held);
        app.release_held(held.held_change_id.as_deref().unwrap(), "confirmed with HR", "user:sec").await.unwrap();
        assert_eq!(app.store.count_identities(Status::Active).await.unwrap(), 36);
        for i in 0..4 {
            let id = format!("E{i:03}");
            assert_eq!(app.store.get_identity(&id).await.unwrap().unwrap().status, Status::Terminated);
            assert!(active_grants(&app, &id).await.is_empty());
        }
        assert_invariants(&app).await;
    }

    async fn a_small_roster_change_applies_and_dry_run_changes_nothing(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        let mut people: Vec<RosterEntry> = (0..40).map(|i| entry(&format!("E{i:03}"), "Finance"))
            .chain(["O1", "O2"].iter().map(|o| entry(o, "Management")))
            .collect();
        app.sync_roster(roster_sync("s1", people.clone()), "service:hr").await.unwrap();
        people.remove(0); // one leaver: within the guard
        people[0].attrs.department = Some("Sales".into()); // one mover
        people.push(entry("N1", "Sales")); // one joiner
        let mut dry = roster_sync("s2", people.clone());
        dry.dry_run = true;
        let before = snapshot(&app).await;
        let d = app.sync_roster(dry, "service:hr").await.unwrap();
        assert_eq!(d.outcome, Outcome::DryRun);
        let kinds: Vec<_> = d.diff.changes.iter().map(|c| (c.employee_id.as_str(), c.kind)).collect();
        use idgov_domain::roster::ChangeKind::*;
        // Leavers first, as they apply; the rest in roster order.
        assert_eq!(kinds, [("E000", Leaver), ("E001", Mover), ("N1", Joiner)]);
        assert_eq!(snapshot(&app).await, before, "a dry run writes nothing");
        let applied = app.sync_roster(roster_sync("s2", people), "service:hr").await.unwrap();
        assert_eq!(applied.outcome, Outcome::Applied);
        assert_eq!(active_grants(&app, "E001").await, ["lobby", "wiki"]);
        assert_eq!(app.store.get_identity("E000").await.unwrap().unwrap().status, Status::Terminated);
        assert_invariants(&app).await;
    }

    async fn policy_changes_are_validated_guarded_and_audited(t: TestStore) {
        let (app, _) = app_on(&t).await;
        // Owners must be known identities.
        let err = app.apply_policy(POLICY, false, "r", "user:admin").await.unwrap_err();
        let AppError::Domain(d) = &err else { panic!("{err:?}") };
        assert!(d.violations.iter().any(|v| v.field == "systems (app).owner"), "{d:?}");
        with_policy(&app).await;
        for i in 0..20 {
            hire(&app, &Person::new(&format!("F{i}"), "Finance")).await;
        }
        // Dropping the ledger from the finance role strips 20 of 22 people.
        let narrower = POLICY.replace("entitlements = [\"ledger\"]", "entitlements = []");
        let dry = app.apply_policy(&narrower, true, "r", "user:admin").await.unwrap();
        assert_eq!((dry.outcome, dry.impact.grants_revoked), (PolicyOutcome::DryRun, 20));
        let held = app.apply_policy(&narrower, false, "tidy up", "user:admin").await.unwrap();
        assert_eq!(held.outcome, PolicyOutcome::Held);
        assert_eq!(active_grants(&app, "F0").await, ["ledger", "lobby", "wiki"], "nothing applied while held");
        app.release_held(held.held_change_id.as_deref().unwrap(), "approved by CFO", "user:sec").await.unwrap();
        assert_eq!(active_grants(&app, "F0").await, ["lobby", "wiki"]);
        assert_eq!(app.policy().version, 2);
        let revoked = app.store.list_grants("F0", true, "", 10).await.unwrap();
        assert!(revoked.iter().any(|(g, _)| g.revoke_reason == Some(idgov_domain::grant::RevokeReason::Policy)));
        let applied = app.store.list_audit_events(&AuditFilter { action: "policy.applied".into(), ..Default::default() }, 0, 10).await.unwrap();
        assert_eq!(applied.len(), 2);
        let detail: serde_json::Value = serde_json::from_str(&applied[1].detail).unwrap();
        assert_eq!(applied[1].actor, "user:sec", "who released it");
        assert_eq!(detail["requested_by"], "user:admin", "who proposed it");
        assert_eq!(detail["reason"], "tidy up");
        assert_eq!(detail["changes"]["changed_roles"], serde_json::json!(["finance"]), "what changed");
        // The same document again changes nothing.
        let same = app.apply_policy(&narrower, false, "again", "user:admin").await.unwrap();
        assert_eq!(same.outcome, PolicyOutcome::Unchanged);
    }

    async fn a_departing_owner_raises_a_security_event(t: TestStore) {
        let (app, _) = app_on(&t).await;
        with_policy(&app).await;
        let leave = event(&app, EventKind::Terminate, "o1-leaves", "O1", "", AttributesPatch::default());
        app.submit_event(leave, "service:hr").await.unwrap();
        let left = app.store.list_audit_events(&AuditFilter { action: "catalog.owner_left".into(), ..Default::default() }, 0, 10).await.unwrap();
        assert_eq!(left.len(), 1, "one event for the one owner who left");
        assert!(left[0].security, "a security event");
        assert_eq!(left[0].target, "identity:O1");
        let detail: serde_json::Value = serde_json::from_str(&left[0].detail).unwrap();
        assert_eq!(detail["owns"], serde_json::json!(["ledger", "wiki", "app"]), "names what is left without an owner: the system and its entitlements");
        // A leaver who owns nothing raises none.
        hire(&app, &Person::new("E1", "Sales")).await;
        let leave = event(&app, EventKind::Terminate, "e1-leaves", "E1", "", AttributesPatch::default());
        app.submit_event(leave, "service:hr").await.unwrap();
        let after = app.store.list_audit_events(&AuditFilter { action: "catalog.owner_left".into(), ..Default::default() }, 0, 10).await.unwrap();
        assert_eq!(after.len(), 1);
    }

    /// An end date can be taken away: by an event sending an empty end date
    /// (a contractor made permanent), and by a roster listing the person
    /// without one. The person then stays past the old date.
    async fn an_end_date_taken_away_no_longer_terminates(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        let ends = chrono::NaiveDate::from_ymd_opt(2026, 3, 10);
        for id in ["C1", "C2"] {
            let mut p = Person::new(id, "Finance").patch();
            p.end_date = ends;
            app.submit_event(event(&app, EventKind::Hire, &format!("hire-{id}"), id, "", p), "service:hr").await.unwrap();
            assert_eq!(app.store.get_identity(id).await.unwrap().unwrap().attrs.end_date, ends);
        }
        // C1: an update whose end date is sent empty.
        let input = idgov_domain::hr::HrEventInput {
            source: "workday".into(),
            event_id: "c1-permanent".into(),
            kind: Some(EventKind::Update),
            employee_id: "C1".into(),
            end_date: Some(String::new()),
            ..Default::default()
        };
        let ev = idgov_domain::hr::HrEvent::parse(input, app.policy().policy.hr_time_zone, app.now()).unwrap();
        assert!(ev.attrs.clear_end_date);
        app.submit_event(ev, "service:hr").await.unwrap();
        assert_eq!(app.store.get_identity("C1").await.unwrap().unwrap().attrs.end_date, None);
        // C2: a roster that lists everyone, C2 with an empty end date.
        let mut entries = Vec::new();
        for (id, dept) in [("O1", "Management"), ("O2", "Management"), ("C1", "Finance"), ("C2", "Finance")] {
            let mut attrs = Person::new(id, dept).patch();
            attrs.clear_end_date = id == "C2";
            entries.push(RosterEntry { employee_id: id.into(), attrs });
        }
        clock.advance(chrono::Duration::minutes(1));
        let out = app.sync_roster(roster_sync("permanent", entries), "service:hr").await.unwrap();
        assert_eq!(out.counts.updates, 1, "{out:?}");
        assert_eq!(app.store.get_identity("C2").await.unwrap().unwrap().attrs.end_date, None);
        // Past the old last day, both still work here.
        clock.set(chrono::DateTime::parse_from_rfc3339("2026-03-11T12:00:00Z").unwrap().into());
        assert_eq!(app.run_due().await.unwrap(), 0);
        for id in ["C1", "C2"] {
            let person = app.store.get_identity(id).await.unwrap().unwrap();
            assert_eq!(person.status, Status::Active, "{id}");
            assert!(!active_grants(&app, id).await.is_empty(), "{id}");
        }
        // A later event that sets an end date again is obeyed.
        let p = AttributesPatch { end_date: chrono::NaiveDate::from_ymd_opt(2026, 3, 20), ..Default::default() };
        app.submit_event(event(&app, EventKind::Update, "c1-ends-again", "C1", "", p), "service:hr").await.unwrap();
        clock.set(chrono::DateTime::parse_from_rfc3339("2026-03-21T12:00:00Z").unwrap().into());
        assert_eq!(app.run_due().await.unwrap(), 1);
        assert_eq!(app.store.get_identity("C1").await.unwrap().unwrap().status, Status::Terminated);
    }

    async fn an_end_date_that_passes_terminates(t: TestStore) {
        let (app, clock) = app_on(&t).await;
        with_policy(&app).await;
        let mut p = Person::new("C1", "Finance").patch();
        p.end_date = chrono::NaiveDate::from_ymd_opt(2026, 3, 10);
        app.submit_event(event(&app, EventKind::Hire, "c1", "C1", "", p), "service:hr").await.unwrap();
        clock.set(chrono::DateTime::parse_from_rfc3339("2026-03-10T22:00:00Z").unwrap().into());
        assert_eq!(app.run_due().await.unwrap(), 0, "the last day (Oslo) is not over yet");
        clock.set(chrono::DateTime::parse_from_rfc3339("2026-03-10T23:00:00Z").unwrap().into());
        assert_eq!(app.run_due().await.unwrap(), 1);
        assert_eq!(app.store.get_identity("C1").await.unwrap().unwrap().status, Status::Terminated);
        assert!(active_grants(&app, "C1").await.is_empty());
        assert_eq!(app.run_due().await.unwrap(), 0);
    }
}

/// The hard rules, checked over the whole store.
async fn assert_invariants(app: &idgov_server::App) {
    let ids = app.store.all_identities().await.unwrap();
    let policy = app.policy();
    for (id, grants) in app.store.all_active_grants().await.unwrap() {
        let person = &ids[&id];
        assert!(
            person.may_hold_access(),
            "{id} is {} yet holds {} grants",
            person.status,
            grants.len()
        );
        let ceiling = person.attrs.access_ceiling();
        for g in grants {
            let class = policy.policy.entitlements[&g.entitlement_id].classification;
            assert!(
                class <= ceiling,
                "{id} holds {} ({class}) above ceiling {ceiling}",
                g.entitlement_id
            );
            if person.attrs.employment_type == EmploymentType::Contractor {
                assert!(
                    class < Classification::Restricted,
                    "contractor {id} holds restricted {}",
                    g.entitlement_id
                );
            }
        }
    }
    assert_eq!(
        app.store.count_active_grants_of_inactive().await.unwrap(),
        0
    );
}
