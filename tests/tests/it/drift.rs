//! Directory sync against a real slapd seeded with drift: drift is reported
//! exactly for the seeded cases, and remediation closes what it may.

use crate::common::*;
use crate::provisioning::{LDAP_POLICY, config};
use idgov_directory::{Directory, DriftAction};
use idgov_domain::drift::DriftKind;
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_server::App;
use idgov_store::DirOpState;
use idgov_tests::both_backends;
use idgov_tests::slapd::{GROUPS, PEOPLE, Slapd};
use std::sync::Arc;
use std::time::Duration;

/// The LDIF of a person's account, correlated by employee number.
fn account(id: &str) -> String {
    format!(
        "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {id}\nsn: {id}\nemployeeNumber: {id}\n\n",
        uid = id.to_lowercase()
    )
}

/// The LDIF of group `g` with the accounts of `members`.
fn group<S: AsRef<str>>(g: &str, members: &[S]) -> String {
    let mut e =
        format!("dn: cn={g},{GROUPS}\nobjectClass: groupOfNames\ncn: {g}\nmember: cn=nobody\n");
    for m in members {
        e.push_str(&format!(
            "member: uid={},{PEOPLE}\n",
            m.as_ref().to_lowercase()
        ));
    }
    e + "\n"
}

/// An application on `t` that syncs with the directory of `s`, importing
/// unmanaged memberships as grants.
async fn importing(t: &idgov_tests::backends::TestStore, s: &Slapd) -> Arc<App> {
    let mut cfg = config(s);
    cfg.drift
        .insert(DriftKind::UnmanagedMembership, DriftAction::Import);
    App::start(
        t.store.clone(),
        Arc::new(idgov_server::SystemClock),
        Some(cfg),
    )
    .await
    .unwrap()
}

/// The owner O1 and the policy whose entitlements are directory groups.
async fn with_ldap_policy(app: &App) {
    hire(app, &Person::new("O1", "Management")).await;
    app.apply_policy(LDAP_POLICY, false, "test", "user:admin")
        .await
        .unwrap();
}

fn seeded() -> String {
    let mut s = String::new();
    for id in ["O1", "E1", "E2", "L1"] {
        s.push_str(&account(id));
    }
    // An account nobody in HR owns.
    s.push_str(&account("X99"));
    s.push_str(&group("staff", &["O1", "E1", "E2"]));
    s.push_str(&group("finance", &["E1"])); // E2's finance membership is missing
    s.push_str(&group::<&str>("sales", &[]));
    s.push_str(&group("vpn", &["E1"])); // granted by nobody
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_exactly_and_remediated_where_configured() {
    let Some(s) = Slapd::start_with(&seeded()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    // idgov's truth, built without a directory (nothing provisioned).
    {
        let (app, _) = app_on(&t).await;
        with_ldap_policy(&app).await;
        for (id, dept) in [
            ("E1", "Finance"),
            ("E2", "Finance"),
            ("L1", "Sales"),
            ("E3", "Sales"),
        ] {
            hire(&app, &Person::new(id, dept)).await;
        }
        let term = event(
            &app,
            EventKind::Terminate,
            "t-l1",
            "L1",
            "",
            AttributesPatch::default(),
        );
        app.submit_event(term, "service:hr").await.unwrap();
    }
    let mut cfg = config(&s);
    for kind in [
        DriftKind::EnabledLeaver,
        DriftKind::UnmanagedMembership,
        DriftKind::MissingMembership,
    ] {
        cfg.drift.insert(kind, DriftAction::Remediate);
    }
    let app = App::start(
        t.store.clone(),
        Arc::new(idgov_server::SystemClock),
        Some(cfg),
    )
    .await
    .unwrap();

    let expected = [
        (DriftKind::OrphanAccount, Some("X99"), None),
        (DriftKind::EnabledLeaver, Some("L1"), None),
        (
            DriftKind::UnmanagedMembership,
            Some("E1"),
            Some(format!("cn=vpn,{GROUPS}")),
        ),
        (
            DriftKind::MissingMembership,
            Some("E2"),
            Some(format!("cn=finance,{GROUPS}")),
        ),
        (DriftKind::MissingAccount, Some("E3"), None),
    ];
    let shape =
        |rows: &[idgov_store::DriftRow]| -> Vec<(DriftKind, Option<String>, Option<String>)> {
            rows.iter()
                .map(|r| {
                    (
                        r.drift.kind,
                        r.drift.employee_id.clone(),
                        r.drift.group_dn.clone(),
                    )
                })
                .collect()
        };
    let want: Vec<(DriftKind, Option<String>, Option<String>)> = expected
        .iter()
        .map(|(k, e, g)| (*k, e.map(String::from), g.clone()))
        .collect();

    let (dry, found) = app.sync_directory(true, "user:admin").await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(
        shape(&found),
        want,
        "exactly the seeded drift, and none other"
    );
    assert!(
        app.store.latest_sync_run().await.unwrap().is_none(),
        "a dry run records nothing"
    );

    let (run, found) = app.sync_directory(false, "user:admin").await.unwrap();
    assert_eq!(shape(&found), want);
    assert_eq!((run.accounts, run.groups), (5, 4));
    let actions: Vec<&str> = found.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "reported",
            "remediated",
            "remediated",
            "remediated",
            "reported"
        ]
    );
    let stored = app.store.list_drift(&run.id, None, 0, 100).await.unwrap();
    assert_eq!(shape(&stored), want);
    let security = app
        .store
        .list_audit_events(&idgov_store::AuditFilter::default(), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.security && e.action.starts_with("directory."))
        .map(|e| e.action)
        .collect::<Vec<_>>();
    assert_eq!(
        security,
        ["directory.orphan_account", "directory.enabled_leaver"]
    );

    // The remediations apply; a second sync finds only what cannot be remediated.
    let t0 = std::time::Instant::now();
    while !app
        .store
        .list_directory_ops(Some(DirOpState::Pending), "", 0, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "remediations did not apply"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, after) = app.sync_directory(false, "user:admin").await.unwrap();
    let kinds: Vec<DriftKind> = after.iter().map(|r| r.drift.kind).collect();
    assert_eq!(kinds, [DriftKind::OrphanAccount, DriftKind::MissingAccount]);
    let mut d = Directory::connect(
        &config(&s).connection,
        idgov_directory::Preset::Openldap.schema(),
    )
    .await
    .unwrap();
    assert!(
        d.is_disabled(&format!("uid=l1,{PEOPLE}")).await.unwrap(),
        "the enabled leaver was disabled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_onboarding_imports_memberships_for_review_within_the_rules() {
    // The directory already has E2 (Sales) in finance, and P1 (background
    // check pending) in finance too.
    let mut ldif = String::new();
    for id in ["O1", "E2", "P1"] {
        ldif.push_str(&account(id));
    }
    ldif.push_str(&group("staff", &["O1", "E2", "P1"]));
    ldif.push_str(&group("finance", &["E2", "P1"]));
    ldif.push_str(&group("sales", &["E2"]));
    let Some(s) = Slapd::start_with(&ldif) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    {
        let (app, _) = app_on(&t).await;
        with_ldap_policy(&app).await;
        hire(&app, &Person::new("E2", "Sales")).await;
        let mut pending = Person::new("P1", "Sales");
        pending.check = idgov_domain::identity::BackgroundCheck::Pending;
        hire(&app, &pending).await;
    }
    let app = importing(&t, &s).await;
    let (run, found) = app.sync_directory(false, "user:admin").await.unwrap();
    let actions: Vec<(Option<&str>, &str)> = found
        .iter()
        .map(|r| (r.drift.employee_id.as_deref(), r.action.as_str()))
        .collect();
    // P1's finance membership is above their ceiling (public until the
    // check clears): reported, never imported.
    assert_eq!(
        actions,
        [(Some("E2"), "imported"), (Some("P1"), "reported")]
    );
    assert_eq!(run.summary["grants_imported"], 1);
    let e2: Vec<_> = app.store.list_grants("E2", false, "", 100).await.unwrap();
    let imported = e2
        .iter()
        .find(|(g, _)| g.entitlement_id == "group.finance")
        .expect("imported grant");
    assert_eq!(imported.0.source, idgov_domain::grant::SourceKind::Imported);
    assert!(imported.0.review_pending, "imported for review");
    // Adopted: the next sync finds nothing about E2.
    let (_, again) = app.sync_directory(false, "user:admin").await.unwrap();
    assert!(
        again
            .iter()
            .all(|r| r.drift.employee_id.as_deref() != Some("E2")),
        "{again:?}"
    );
}

/// A first sync of a directory nobody managed: every person is in a group
/// idgov did not grant, and each membership is imported. That much drift is
/// recorded in short steps (each row with its grant and audit event), not
/// in one transaction that would hold HR intake for its whole length; and
/// the recorded run is whole: every row, every grant, every audit event,
/// the sync's own event last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_imports_a_grant_per_person_records_it_in_short_steps() {
    const N: usize = 1300;
    let ids: Vec<String> = (0..N).map(|i| format!("M{i:04}")).collect();
    let mut ldif = String::new();
    for id in ids.iter().map(String::as_str).chain(["O1"]) {
        ldif.push_str(&account(id));
    }
    let mut staff = ids.clone();
    staff.push("O1".into());
    ldif.push_str(&group("staff", &staff));
    ldif.push_str(&group("sales", &ids));
    ldif.push_str(&group("finance", &ids));
    let Some(s) = Slapd::start_with(&ldif) else {
        return;
    };
    let t = brownfield_store(&ids).await;
    let app = importing(&t, &s).await;
    let (run, shown) = app.sync_directory(false, "user:admin").await.unwrap();
    assert_eq!(run.summary["grants_imported"], N, "{}", run.summary);
    // Recorded whole: every row, every grant, every audit event; the
    // answer shows the first 1,000.
    let stored = app
        .store
        .list_drift(&run.id, None, 0, 10_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), N, "one unmanaged finance membership each");
    assert!(stored.iter().all(|r| r.action == "imported"));
    assert_eq!(shown.len(), 1000);
    assert_eq!(shown[..], stored[..1000]);
    for id in [&ids[0], &ids[N / 2], &ids[N - 1]] {
        let grants = app.store.list_grants(id, false, "", 100).await.unwrap();
        assert!(
            grants
                .iter()
                .any(|(g, _)| g.entitlement_id == "group.finance" && g.review_pending),
            "{id}: {grants:?}"
        );
    }
    let imported = audited(&app.store, "grant.imported", 10_000).await;
    assert_eq!(imported.len(), N);
    let synced = audited(&app.store, "directory.sync", 10).await;
    assert_eq!(synced.len(), 1);
    assert!(
        imported.iter().all(|e| e.seq < synced[0].seq),
        "the sync's own event comes once all it did is recorded"
    );
    // In steps: the imports were committed at several instants (each
    // transaction stamps its events with its own time). Steps are sized by
    // time, starting at 500 rows and at most doubling each step, so however
    // fast this machine is there are at least as many as 500, 1,000, 2,000,
    // 4,000, 4,000, … rows a step would make.
    let mut least = 0;
    let (mut left, mut step) = (N, 500);
    while left > 0 {
        least += 1;
        left = left.saturating_sub(step);
        step = (step * 2).min(4_000);
    }
    let instants: std::collections::BTreeSet<_> = imported.iter().map(|e| e.occurred_at).collect();
    assert!(
        least >= 2 && instants.len() >= least,
        "recorded in {} transaction(s), fewer than {least}",
        instants.len()
    );
    assert!(
        app.store
            .verify_audit_chain()
            .await
            .unwrap()
            .broken
            .is_none()
    );
    // The steps are sized by time, not fixed at 500: under a target no
    // step meets they halve to their floor of 50 (500, 250, 125, 62, then
    // 50 at a time: 12 steps for 1,300 rows, where fixed steps take 3).
    let t = brownfield_store(&ids).await;
    let app = importing(&t, &s).await;
    app.set_step_target_for_test(std::time::Duration::ZERO);
    let (run, _) = app.sync_directory(false, "user:admin").await.unwrap();
    assert_eq!(run.summary["grants_imported"], N, "{}", run.summary);
    let imported = audited(&app.store, "grant.imported", 10_000).await;
    let instants: std::collections::BTreeSet<_> = imported.iter().map(|e| e.occurred_at).collect();
    assert!(
        instants.len() >= 10,
        "recorded in {} transaction(s) under a zero target",
        instants.len()
    );
}

/// A SQLite store where `ids` (in Sales) and the owner O1 work, under the
/// directory policy, and nothing was provisioned.
async fn brownfield_store(ids: &[String]) -> idgov_tests::backends::TestStore {
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let (app, _) = app_on(&t).await;
    with_ldap_policy(&app).await;
    let mut entries: Vec<idgov_domain::roster::RosterEntry> = ids
        .iter()
        .map(|id| idgov_domain::roster::RosterEntry {
            employee_id: id.clone(),
            attrs: Person::new(id, "Sales").patch(),
        })
        .collect();
    entries.push(idgov_domain::roster::RosterEntry {
        employee_id: "O1".into(),
        attrs: Person::new("O1", "Management").patch(),
    });
    app.sync_roster(roster_sync("brownfield", entries), "service:hr")
        .await
        .unwrap();
    t
}

/// An account's LDIF: `uid` under people, correlated by `employee` (none
/// when None).
fn account_entry(uid: &str, employee: Option<&str>) -> String {
    let mut e = format!(
        "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
    );
    if let Some(id) = employee {
        e.push_str(&format!("employeeNumber: {id}\n"));
    }
    e + "\n"
}

/// The same DN spelled as a group may list it: as is, upper-cased, or with
/// a space after each comma.
fn spelled(dn: &str, how: u8) -> String {
    match how {
        0 => dn.to_string(),
        1 => dn.to_uppercase(),
        _ => dn.replace(',', ", "),
    }
}

both_backends! {
    /// The sync stages the directory and pages through both sides; on
    /// generated organisations larger than its pages and steps (people
    /// without accounts or with two, accounts nobody owns or naming nobody,
    /// leavers, memberships spelled differently, of accounts nobody owns,
    /// of unmanaged groups), it finds exactly what the same check over
    /// everything at once finds, records it in kind order, and leaves no
    /// stage behind.
    async fn a_paged_sync_finds_what_the_whole_check_finds(t: idgov_tests::backends::TestStore) {
        use idgov_domain::drift::{self, AccountView, GroupView};
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(0x5eed_d1f7);
        const N: usize = 2_300;
        let ids: Vec<String> = (0..N).map(|i| format!("P{i:04}")).collect();
        let depts = ["Finance", "Sales", "Legal"];
        let dept: Vec<&str> = ids.iter().map(|_| depts[rng.random_range(0..3)]).collect();
        // The directory.
        let mut ldif = String::new();
        let mut uids: Vec<(String, usize)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let n = match rng.random_range(0..20) {
                0 | 1 => 0,
                2 => 2,
                _ => 1,
            };
            for k in 0..n {
                let uid = if k == 0 { id.to_lowercase() } else { format!("x{}", id.to_lowercase()) };
                ldif.push_str(&account_entry(&uid, Some(id)));
                uids.push((uid, i));
            }
        }
        for i in 0..150 {
            ldif.push_str(&account_entry(&format!("z{i}"), Some(&format!("Z{i:04}"))));
        }
        for i in 0..40 {
            ldif.push_str(&account_entry(&format!("n{i}"), None));
        }
        let dn = |uid: &str| format!("uid={uid},{PEOPLE}");
        for g in ["staff", "finance", "sales", "vpn"] {
            let mut members: Vec<String> = Vec::new();
            for (uid, i) in &uids {
                let p = match g {
                    "staff" => 0.9,
                    "vpn" => 0.1,
                    _ if dept[*i].eq_ignore_ascii_case(g) => 0.85,
                    _ => 0.04,
                };
                if rng.random_bool(p) {
                    members.push(spelled(&dn(uid), rng.random_range(0..3)));
                }
            }
            for i in 0..150 {
                if rng.random_bool(0.2) {
                    members.push(dn(&format!("z{i}")));
                }
            }
            for i in 0..30 {
                if rng.random_bool(0.3) {
                    members.push(dn(&format!("ghost{i}")));
                }
            }
            let mut e = format!("dn: cn={g},{GROUPS}\nobjectClass: groupOfNames\ncn: {g}\nmember: cn=nobody\n");
            for m in members {
                e.push_str(&format!("member: {m}\n"));
            }
            ldif.push_str(&(e + "\n"));
        }
        let Some(s) = Slapd::start_with(&ldif) else {
            return;
        };
        // idgov's truth: everyone joins, then a tenth leave.
        {
            let (app, _) = app_on(&t).await;
            with_ldap_policy(&app).await;
            let mut entries: Vec<_> = ids
                .iter()
                .zip(&dept)
                .map(|(id, dept)| idgov_domain::roster::RosterEntry {
                    employee_id: id.clone(),
                    attrs: Person::new(id, dept).patch(),
                })
                .collect();
            entries.push(idgov_domain::roster::RosterEntry {
                employee_id: "O1".into(),
                attrs: Person::new("O1", "Management").patch(),
            });
            app.sync_roster(roster_sync("all", entries), "service:hr")
                .await
                .unwrap();
            for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 10 == 3) {
                let term = event(
                    &app,
                    EventKind::Terminate,
                    &format!("t-{i}"),
                    id,
                    "",
                    AttributesPatch::default(),
                );
                app.submit_event(term, "service:hr").await.unwrap();
            }
        }
        let app = App::start(
            t.store.clone(),
            Arc::new(idgov_server::SystemClock),
            Some(config(&s)),
        )
        .await
        .unwrap();

        // The same check over everything at once.
        let mut d = Directory::connect(&config(&s).connection, idgov_directory::Preset::Openldap.schema())
            .await
            .unwrap();
        let mut accounts: Vec<AccountView> = Vec::new();
        let mut reader = d.read_accounts(PEOPLE, 100).await.unwrap();
        loop {
            let batch = reader.next_batch(500).await.unwrap();
            if batch.is_empty() {
                break;
            }
            accounts.extend(batch);
        }
        let mut groups: Vec<GroupView> = Vec::new();
        let mut reader = d.read_groups(GROUPS, 100).await.unwrap();
        while let Some(g) = reader.next().await.unwrap() {
            groups.push(g);
        }
        let mut people = std::collections::HashMap::new();
        let mut grants = std::collections::HashMap::new();
        let mut after = String::new();
        loop {
            let page = app.store.identities_with_grants_page(&after, 700).await.unwrap();
            let Some((last, _)) = page.last() else { break };
            after = last.employee_id.clone();
            for (p, g) in page {
                grants.insert(p.employee_id.clone(), g);
                people.insert(p.employee_id.clone(), p);
            }
        }
        assert_eq!(people.len(), N + 1);
        let policy = app.policy();
        let mut want = drift::compute(&people, &grants, &policy.policy, &accounts, &groups);
        want.sort();
        for kind in DriftKind::ALL {
            assert!(want.iter().any(|d| d.kind == *kind), "the generated case has no {kind:?}");
        }

        let (dry, shown) = app.sync_directory(true, "user:admin").await.unwrap();
        let (run, first) = app.sync_directory(false, "user:admin").await.unwrap();
        let stored = app.store.list_drift(&run.id, None, 0, 100_000).await.unwrap();
        let mut got: Vec<_> = stored.iter().map(|r| r.drift.clone()).collect();
        got.sort();
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want, "the paged sync finds what the whole check finds");
        // Recorded in kind order, numbered from 1; the answers show the
        // first 1,000, the dry run's the same as the recorded run's.
        assert!(stored.windows(2).all(|w| w[0].drift.kind <= w[1].drift.kind && w[1].seq == w[0].seq + 1));
        assert_eq!(stored[0].seq, 1);
        assert_eq!(first[..], stored[..1000]);
        assert_eq!(shown, first);
        assert_eq!((run.accounts, run.groups), (accounts.len() as i64, 4));
        assert_eq!((dry.accounts, dry.groups), (run.accounts, run.groups));
        for kind in DriftKind::ALL {
            let n = want.iter().filter(|d| d.kind == *kind).count();
            assert_eq!(run.summary["drift"][kind.as_str()], n, "{kind:?}");
            assert_eq!(dry.summary["drift"][kind.as_str()], n, "{kind:?}");
        }
        assert!(run.complete && dry.complete);
        let latest = app.store.latest_sync_run().await.unwrap().expect("the run");
        assert_eq!((latest.id.as_str(), latest.complete), (run.id.as_str(), true));
        // No stage left behind.
        let later = chrono::Utc::now() + chrono::Duration::days(2);
        assert!(app.store.stale_directory_stages(later).await.unwrap().is_empty());
        assert!(app.store.staged_drift(&run.id, (-1, 0), 10).await.unwrap().is_empty());
        // The security events: one per enabled leaver and orphan account,
        // up to 100 each, then one event telling how many more.
        let orphans = want.iter().filter(|d| d.kind == DriftKind::OrphanAccount).count();
        let events = audited(&app.store, "directory.orphan_account", 10_000).await;
        assert_eq!(events.len(), 101);
        let more: serde_json::Value = serde_json::from_str(&events[100].detail).unwrap();
        assert_eq!(more["more"], orphans - 100);
    }
}

/// A sync that fails half-way (the directory goes away) answers with the
/// error, records no run and leaves no stage behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_against_a_directory_that_went_away_fails_and_leaves_nothing() {
    let Some(mut s) = Slapd::start_with(&seeded()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    {
        let (app, _) = app_on(&t).await;
        with_ldap_policy(&app).await;
    }
    let app = App::start(
        t.store.clone(),
        Arc::new(idgov_server::SystemClock),
        Some(config(&s)),
    )
    .await
    .unwrap();
    s.stop();
    let err = app.sync_directory(false, "user:admin").await.unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
    assert!(app.store.latest_sync_run().await.unwrap().is_none());
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    assert!(
        app.store
            .stale_directory_stages(later)
            .await
            .unwrap()
            .is_empty(),
        "the failed sync's stage was dropped"
    );
}
