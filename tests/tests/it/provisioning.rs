//! Provisioning through the outbox into a real slapd: the leaver fast path,
//! rehires, and an outage that loses and duplicates nothing.

use crate::common::*;
use idgov_directory::client::Connection;
use idgov_directory::{Directory, DirectoryConfig, Preset};
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_server::{App, SystemClock};
use idgov_store::DirOpState;
use idgov_tests::backends::TestStore;
use idgov_tests::slapd::{ADMIN_DN, ADMIN_PW, GROUPS, PEOPLE, Slapd};
use std::sync::Arc;
use std::time::Duration;

pub const LDAP_POLICY: &str = r#"
[[systems]]
id = "dir"
kind = "directory"
owner = "O1"

[[entitlements]]
id = "group.staff"
system = "dir"
classification = "public"
kind = "ldap_group"
ldap_group_dn = "cn=staff,ou=groups,dc=example,dc=com"

[[entitlements]]
id = "group.finance"
system = "dir"
classification = "internal"
kind = "ldap_group"
ldap_group_dn = "cn=finance,ou=groups,dc=example,dc=com"

[[entitlements]]
id = "group.sales"
system = "dir"
classification = "internal"
kind = "ldap_group"
ldap_group_dn = "cn=sales,ou=groups,dc=example,dc=com"

[[roles]]
id = "staff"
entitlements = ["group.staff"]

[[roles]]
id = "finance"
entitlements = ["group.finance"]

[[roles]]
id = "sales"
entitlements = ["group.sales"]

[[birthright]]
role = "staff"

[[birthright]]
role = "finance"
when = { department = "Finance" }

[[birthright]]
role = "sales"
when = { department = "Sales" }
"#;

fn seed() -> String {
    seed_with(&["O1", "E1", "E2", "E3"])
}

/// The directory's starting content with an account for each of `people`.
fn seed_with(people: &[&str]) -> String {
    let mut s = String::new();
    for id in people {
        let uid = id.to_lowercase();
        s.push_str(&format!(
            "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {id}\nsn: {id}\n\
             employeeNumber: {id}\nuserPassword: pw-{uid}\n\n"
        ));
    }
    for g in ["staff", "finance", "sales"] {
        s.push_str(&format!(
            "dn: cn={g},{GROUPS}\nobjectClass: groupOfNames\ncn: {g}\nmember: cn=placeholder,dc=example,dc=com\n\n"
        ));
    }
    // A membership idgov never granted: a leaver loses it too.
    s.push_str(&format!(
        "dn: cn=vpn,{GROUPS}\nobjectClass: groupOfNames\ncn: vpn\nmember: uid=e1,{PEOPLE}\n\n"
    ));
    s
}

pub fn config(s: &Slapd) -> DirectoryConfig {
    DirectoryConfig {
        connection: Connection {
            url: s.url(),
            starttls: false,
            bind_dn: ADMIN_DN.into(),
            password: ADMIN_PW.into(),
            timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(30),
        },
        accounts_base: PEOPLE.into(),
        groups_base: GROUPS.into(),
        preset: Preset::Openldap,
        schema: Preset::Openldap.schema(),
        page_size: 100,
        workers: 4,
        drift: Default::default(),
        accounts: Default::default(),
    }
}

async fn app_with_directory(t: &TestStore, s: &Slapd) -> Arc<App> {
    let app = App::start(t.store.clone(), Arc::new(SystemClock), Some(config(s)))
        .await
        .unwrap();
    hire(&app, &Person::new("O1", "Management")).await;
    app.apply_policy(LDAP_POLICY, false, "test", "user:admin")
        .await
        .unwrap();
    app
}

async fn admin(s: &Slapd) -> Directory {
    Directory::connect(&config(s).connection, Preset::Openldap.schema())
        .await
        .unwrap()
}

/// Waits until no directory operation is pending.
async fn settled(app: &App, within: Duration) {
    let t = std::time::Instant::now();
    loop {
        let pending = app
            .store
            .list_directory_ops(Some(DirOpState::Pending), "", 0, 1000)
            .await
            .unwrap();
        if pending.is_empty() {
            return;
        }
        assert!(
            t.elapsed() < within,
            "still pending after {within:?}: {pending:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dn(id: &str) -> String {
    format!("uid={},{PEOPLE}", id.to_lowercase())
}

fn group(g: &str) -> String {
    format!("cn={g},{GROUPS}")
}

async fn groups(d: &mut Directory, id: &str) -> Vec<String> {
    let mut v = d.groups_of(GROUPS, &dn(id)).await.unwrap();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_is_locked_out_and_a_rehire_gets_nothing_old_back() {
    let Some(s) = Slapd::start_with(&seed()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let app = app_with_directory(&t, &s).await;
    hire(&app, &Person::new("E1", "Finance")).await;
    settled(&app, Duration::from_secs(10)).await;
    let mut d = admin(&s).await;
    assert_eq!(
        groups(&mut d, "E1").await,
        [group("finance"), group("staff"), group("vpn")]
    );

    let term = event(
        &app,
        EventKind::Terminate,
        "t1",
        "E1",
        "",
        AttributesPatch::default(),
    );
    app.submit_event(term, "service:hr").await.unwrap();
    settled(&app, Duration::from_secs(10)).await;
    assert!(
        !Directory::can_bind(&s.url(), &dn("E1"), "pw-e1")
            .await
            .unwrap(),
        "a leaver cannot bind"
    );
    assert!(
        groups(&mut d, "E1").await.is_empty(),
        "a leaver is in no managed group, granted or not"
    );

    // A rehire is checked again; HR reports the new check cleared with it
    // (dated on the new start: an older clearance would not count).
    let today = app.now().date_naive();
    let back = AttributesPatch {
        department: Some("Sales".into()),
        background_check: Some(idgov_domain::identity::BackgroundCheck::Cleared),
        background_check_date: Some(today),
        start_date: Some(today),
        ..Default::default()
    };
    app.submit_event(
        event(&app, EventKind::Rehire, "r1", "E1", "", back),
        "service:hr",
    )
    .await
    .unwrap();
    settled(&app, Duration::from_secs(10)).await;
    assert!(
        Directory::can_bind(&s.url(), &dn("E1"), "pw-e1")
            .await
            .unwrap(),
        "a rehire can bind again"
    );
    assert_eq!(
        groups(&mut d, "E1").await,
        [group("sales"), group("staff")],
        "no old membership back"
    );

    // Every operation was applied once and recorded.
    let ops = app
        .store
        .list_directory_ops(None, "E1", 0, 100)
        .await
        .unwrap();
    let kinds: Vec<String> = ops
        .iter()
        .map(|o| format!("{} {}", o.kind, o.group_dn.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        kinds,
        [
            format!("add_member {}", group("finance")),
            format!("add_member {}", group("staff")),
            // The leaver's lock, then one operation that strips every
            // group: no removals queued one by one.
            "disable ".to_string(),
            "strip_groups ".to_string(),
            "enable ".to_string(),
            format!("add_member {}", group("sales")),
            format!("add_member {}", group("staff")),
        ],
        "{ops:#?}"
    );
    assert!(
        ops.iter()
            .all(|o| o.state == DirOpState::Done && o.attempts == 1),
        "{ops:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_reach_everyone_they_touch_in_the_directory() {
    let Some(s) = Slapd::start_with(&seed()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    // O1 was hired before any policy: the first policy grants the staff group.
    let app = app_with_directory(&t, &s).await;
    hire(&app, &Person::new("E1", "Finance")).await;
    settled(&app, Duration::from_secs(10)).await;
    let mut d = admin(&s).await;
    assert_eq!(groups(&mut d, "O1").await, [group("staff")]);

    // Everyone's role gains the sales group.
    let wider = LDAP_POLICY.replace(
        r#"entitlements = ["group.staff"]"#,
        r#"entitlements = ["group.staff", "group.sales"]"#,
    );
    app.apply_policy(&wider, false, "sales for all", "user:admin")
        .await
        .unwrap();
    settled(&app, Duration::from_secs(10)).await;
    assert_eq!(groups(&mut d, "O1").await, [group("sales"), group("staff")]);
    assert_eq!(
        groups(&mut d, "E1").await,
        [
            group("finance"),
            group("sales"),
            group("staff"),
            group("vpn")
        ],
        "the unmanaged vpn membership is left alone"
    );

    // Taking it back strips everyone: held, then released.
    let held = app
        .apply_policy(LDAP_POLICY, false, "sales back", "user:admin")
        .await
        .unwrap();
    let id = held
        .held_change_id
        .expect("a change stripping everyone is held");
    settled(&app, Duration::from_secs(10)).await;
    assert_eq!(groups(&mut d, "O1").await, [group("sales"), group("staff")]);
    app.release_held(&id, "approved", "user:sec").await.unwrap();
    settled(&app, Duration::from_secs(10)).await;
    assert_eq!(groups(&mut d, "O1").await, [group("staff")]);
    assert_eq!(
        groups(&mut d, "E1").await,
        [group("finance"), group("staff"), group("vpn")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_outage_loses_and_duplicates_nothing() {
    let Some(mut s) = Slapd::start_with(&seed()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let app = app_with_directory(&t, &s).await;
    hire(&app, &Person::new("E1", "Finance")).await;
    hire(&app, &Person::new("E2", "Sales")).await;
    settled(&app, Duration::from_secs(10)).await;
    let before = app
        .store
        .list_directory_ops(None, "", 0, 1000)
        .await
        .unwrap()
        .len();

    s.stop();
    let term = event(
        &app,
        EventKind::Terminate,
        "t1",
        "E1",
        "",
        AttributesPatch::default(),
    );
    app.submit_event(term, "service:hr").await.unwrap();
    hire(&app, &Person::new("E3", "Finance")).await;
    // Meanwhile the operations show as pending, with their failed attempts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pending = app
        .store
        .list_directory_ops(Some(DirOpState::Pending), "", 0, 100)
        .await
        .unwrap();
    assert_eq!(
        pending.len(),
        4,
        "E1: the lock and the strip of every group; E3: 2 adds — {pending:#?}"
    );
    assert!(
        pending
            .iter()
            .any(|o| o.attempts >= 1 && o.last_error.is_some()),
        "{pending:#?}"
    );

    s.start();
    settled(&app, Duration::from_secs(30)).await;
    let mut d = admin(&s).await;
    assert!(
        !Directory::can_bind(&s.url(), &dn("E1"), "pw-e1")
            .await
            .unwrap()
    );
    assert!(groups(&mut d, "E1").await.is_empty());
    assert_eq!(
        groups(&mut d, "E3").await,
        [group("finance"), group("staff")]
    );
    assert_eq!(
        groups(&mut d, "E2").await,
        [group("sales"), group("staff")],
        "others untouched"
    );
    let all = app
        .store
        .list_directory_ops(None, "", 0, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), before + 4, "nothing queued twice");
    assert!(
        all.iter().all(|o| o.state == DirOpState::Done),
        "every operation applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_get_an_account_from_the_template_then_their_groups() {
    let Some(s) = Slapd::start_with(&seed()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let mut cfg = config(&s);
    cfg.accounts = idgov_directory::account::AccountTemplate {
        create: true,
        dn: format!("uid={{email_local}},{PEOPLE}"),
        attributes: [
            ("uid", "{email_local}"),
            ("cn", "{display_name}"),
            ("sn", "{family_name}"),
            ("givenName", "{given_name}"),
            ("mail", "{email}"),
            ("employeeNumber", "not-this"),
        ]
        .into_iter()
        .map(|(a, v)| (a.to_string(), v.to_string()))
        .collect(),
    };
    let app = App::start(t.store.clone(), Arc::new(SystemClock), Some(cfg))
        .await
        .unwrap();
    hire(&app, &Person::new("O1", "Management")).await;
    app.apply_policy(LDAP_POLICY, false, "test", "user:admin")
        .await
        .unwrap();
    let mut j = Person::new("J1", "Finance").patch();
    j.display_name = Some("Jane Doe, Jr.".into());
    j.email = Some("jane.doe+x@example.com".into());
    app.submit_event(
        event(&app, EventKind::Hire, "hire-j1", "J1", "", j),
        "service:hr",
    )
    .await
    .unwrap();
    hire(&app, &Person::new("E1", "Sales")).await; // already has an account
    settled(&app, Duration::from_secs(10)).await;

    let mut d = admin(&s).await;
    let dn = d
        .find_account(PEOPLE, "J1")
        .await
        .unwrap()
        .expect("account created");
    assert_eq!(
        dn.to_lowercase(),
        format!(r"uid=jane.doe\2bx,{PEOPLE}"),
        "the DN value is escaped"
    );
    assert_eq!(
        d.groups_of(GROUPS, &dn).await.unwrap().len(),
        2,
        "then its birthright groups (finance, staff)"
    );
    let ops = app
        .store
        .list_directory_ops(None, "J1", 0, 10)
        .await
        .unwrap();
    assert_eq!(
        (ops[0].kind, ops[0].outcome.as_deref()),
        (idgov_store::DirOpKind::CreateAccount, Some("applied"))
    );
    let e1 = app
        .store
        .list_directory_ops(None, "E1", 0, 10)
        .await
        .unwrap();
    assert_eq!(
        e1[0].outcome.as_deref(),
        Some("already"),
        "an existing account is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_pending_fifteen_minutes_raises_a_security_event() {
    let Some(mut s) = Slapd::start_with(&seed()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let clock = Arc::new(idgov_server::ManualClock::new(idgov_tests::server::t0()));
    let app = App::start(t.store.clone(), clock.clone(), Some(config(&s)))
        .await
        .unwrap();
    hire(&app, &Person::new("O1", "Management")).await;
    app.apply_policy(LDAP_POLICY, false, "test", "user:admin")
        .await
        .unwrap();
    s.stop();
    hire(&app, &Person::new("E1", "Finance")).await;
    let stuck = |app: &App| {
        let store = app.store.clone();
        async move {
            store
                .list_audit_events(
                    &idgov_store::AuditFilter {
                        action: "provisioning.stuck".into(),
                        ..Default::default()
                    },
                    0,
                    100,
                )
                .await
                .unwrap()
        }
    };
    clock.advance(chrono::Duration::minutes(14));
    assert_eq!(app.alert_stuck_provisioning().await.unwrap(), 0, "not yet");
    clock.advance(chrono::Duration::minutes(2));
    let n = app.alert_stuck_provisioning().await.unwrap();
    assert!(n >= 2, "E1's pending operations are stuck: {n}");
    let events = stuck(&app).await;
    assert_eq!(events.len(), n);
    assert!(
        events
            .iter()
            .all(|e| e.security && (e.target == "identity:E1" || e.target == "identity:O1"))
    );
    assert_eq!(
        app.alert_stuck_provisioning().await.unwrap(),
        0,
        "each operation alerts once"
    );
}

/// An approved request for a directory group reaches slapd through the
/// outbox; the owner's revocation takes the membership away again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_group_reaches_the_directory_and_a_revocation_removes_it() {
    use idgov_authz::{Caller, Rpc, check_rpc};
    use idgov_domain::access::{RequestState, TargetKind};
    use idgov_server::app::access::CreateRequest;
    let ldif = format!(
        "{}dn: cn=audit,{GROUPS}\nobjectClass: groupOfNames\ncn: audit\nmember: cn=placeholder,dc=example,dc=com\n\n",
        seed()
    );
    let Some(s) = Slapd::start_with(&ldif) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let app = App::start(t.store.clone(), Arc::new(SystemClock), Some(config(&s)))
        .await
        .unwrap();
    hire(&app, &Person::new("O1", "Management")).await;
    let mut e1 = Person::new("E1", "Sales");
    e1.manager = Some("E2");
    hire(&app, &Person::new("E2", "Management")).await;
    hire(&app, &e1).await;
    let policy = format!(
        "{LDAP_POLICY}\n[[entitlements]]\nid = \"group.audit\"\nsystem = \"dir\"\nclassification = \"confidential\"\n\
         kind = \"ldap_group\"\nldap_group_dn = \"cn=audit,{GROUPS}\"\nrequestable = true\n"
    );
    app.apply_policy(&policy, false, "test", "user:admin")
        .await
        .unwrap();
    let who = |id: &str, rpc: Rpc| {
        let c = Caller {
            subject: id.into(),
            employee_id: Some(id.into()),
            roles: Default::default(),
            method: "test".into(),
        };
        check_rpc(&c, rpc).unwrap()
    };
    let r = app
        .create_request(
            &who("E1", Rpc::CreateAccessRequest),
            CreateRequest {
                beneficiary: String::new(),
                target_kind: Some(TargetKind::Entitlement),
                target_id: "group.audit".into(),
                justification: "quarterly audit support".into(),
                duration_days: Some(7),
                extends_grant_id: None,
            },
        )
        .await
        .unwrap();
    let mut d = admin(&s).await;
    for approver in ["E2", "O1"] {
        assert!(!groups(&mut d, "E1").await.contains(&group("audit")));
        app.decide_request(&who(approver, Rpc::ApproveAccessRequest), &r.id, true, "ok")
            .await
            .unwrap();
    }
    let done = app
        .request(&who("E1", Rpc::GetAccessRequest), &r.id)
        .await
        .unwrap();
    assert_eq!(done.state, RequestState::Approved);
    settled(&app, Duration::from_secs(10)).await;
    assert!(
        groups(&mut d, "E1").await.contains(&group("audit")),
        "the approved group is in the directory"
    );
    app.revoke_grant(
        &who("O1", Rpc::RevokeGrant),
        &done.grant_ids[0],
        "audit finished early",
    )
    .await
    .unwrap();
    settled(&app, Duration::from_secs(10)).await;
    assert_eq!(
        groups(&mut d, "E1").await,
        [group("sales"), group("staff"), group("vpn")],
        "the revoked membership is gone; birthright and the unmanaged vpn stay"
    );
}

/// A revocation decided in an access review reaches slapd through the
/// outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_revocation_removes_the_membership_in_the_directory() {
    use idgov_authz::{Caller, Rpc, check_rpc};
    use idgov_domain::review::Verdict;
    use idgov_server::app::review::ItemDecision;
    let Some(s) = Slapd::start_with(&seed()) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let app = App::start(t.store.clone(), Arc::new(SystemClock), Some(config(&s)))
        .await
        .unwrap();
    hire(&app, &Person::new("O1", "Management")).await;
    let mut e1 = Person::new("E1", "Finance");
    e1.manager = Some("E2");
    hire(&app, &Person::new("E2", "Management")).await;
    hire(&app, &e1).await;
    let policy = format!(
        "{LDAP_POLICY}\n[[campaigns]]\nid = \"finance\"\nlevels = [\"internal\"]\nscheduled = false\n"
    );
    app.apply_policy(&policy, false, "test", "user:admin")
        .await
        .unwrap();
    settled(&app, Duration::from_secs(10)).await;
    let mut d = admin(&s).await;
    assert!(groups(&mut d, "E1").await.contains(&group("finance")));
    let c = app.start_campaign("finance", "user:admin").await.unwrap();
    let who = |id: &str, rpc: Rpc| {
        let c = Caller {
            subject: id.into(),
            employee_id: Some(id.into()),
            roles: Default::default(),
            method: "test".into(),
        };
        check_rpc(&c, rpc).unwrap()
    };
    let items = app
        .review_items(
            &who("E2", Rpc::ListReviewItems),
            true,
            Some(c.id.clone()),
            None,
            None,
            "",
            100,
        )
        .await
        .unwrap();
    let item = items
        .iter()
        .find(|i| i.employee_id == "E1" && i.entitlement_id == "group.finance")
        .expect("E1's finance group is under review by E2");
    let out = app
        .decide_items(
            &who("E2", Rpc::DecideReviewItems),
            vec![ItemDecision {
                item_id: item.id.clone(),
                verdict: Verdict::Revoke,
                justification: "no longer needs the finance share".into(),
            }],
        )
        .await
        .unwrap();
    out[0].result.as_ref().unwrap();
    settled(&app, Duration::from_secs(10)).await;
    let now = groups(&mut d, "E1").await;
    assert!(
        !now.contains(&group("finance")),
        "revoked in review: {now:?}"
    );
    assert!(now.contains(&group("staff")), "the rest stays: {now:?}");
}

/// Two replicas on one PostgreSQL, both provisioning the same directory
/// (issue 9): every operation is applied by exactly one of them — none is
/// found "already" done, as a second application would find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_apply_each_directory_operation_once() {
    let Some(s) = Slapd::start_with(&seed()) else {
        return;
    };
    let Some(t) = idgov_tests::backends::open("postgres").await else {
        return;
    };
    let a = app_with_directory(&t, &s).await;
    let store_b = idgov_store::Store::open(&t.url).await.unwrap();
    let b = App::start(store_b, Arc::new(SystemClock), Some(config(&s)))
        .await
        .unwrap();
    hire(&a, &Person::new("E1", "Finance")).await;
    hire(&b, &Person::new("E2", "Sales")).await;
    hire(&a, &Person::new("E3", "Finance")).await;
    settled(&a, Duration::from_secs(20)).await;
    let term = event(
        &b,
        EventKind::Terminate,
        "t-e3",
        "E3",
        "",
        AttributesPatch::default(),
    );
    b.submit_event(term, "service:hr").await.unwrap();
    settled(&b, Duration::from_secs(20)).await;
    let ops = a.store.list_directory_ops(None, "", 0, 1000).await.unwrap();
    assert!(ops.len() >= 6, "{ops:#?}");
    for op in &ops {
        assert!(
            matches!(op.state, DirOpState::Done | DirOpState::Superseded),
            "{op:#?}"
        );
        if op.state == DirOpState::Done {
            assert_ne!(
                op.outcome.as_deref(),
                Some("already"),
                "applied twice: {op:#?}"
            );
        }
    }
    let mut d = admin(&s).await;
    assert_eq!(
        groups(&mut d, "E1").await,
        [group("finance"), group("staff"), group("vpn")]
    );
    assert_eq!(groups(&mut d, "E2").await, [group("sales"), group("staff")]);
    assert!(groups(&mut d, "E3").await.is_empty());
}

/// Stopping the application stops its provisioning lanes by themselves, and
/// never leaves a directory change applied but unrecorded: a leaver's
/// disable is either done (and recorded as done) or still pending for the
/// next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_the_provisioning_lanes_without_losing_a_result() {
    const N: usize = 60;
    let people: Vec<String> = (0..N).map(|i| format!("E{i}")).collect();
    let mut accounts: Vec<&str> = people.iter().map(String::as_str).collect();
    accounts.push("O1");
    let Some(s) = Slapd::start_with(&seed_with(&accounts)) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let app = app_with_directory(&t, &s).await;
    assert_eq!(
        app.workers.running().get("provisioning lane"),
        Some(&3),
        "{:?}",
        app.workers.running()
    );
    for i in 0..N {
        hire(&app, &Person::new(&format!("E{i}"), "Finance")).await;
    }
    settled(&app, Duration::from_secs(20)).await;
    // Leavers, and the stop right behind them.
    for i in 0..N {
        let term = event(
            &app,
            EventKind::Terminate,
            &format!("t{i}"),
            &format!("E{i}"),
            "",
            AttributesPatch::default(),
        );
        app.submit_event(term, "service:hr").await.unwrap();
    }
    let report = app.shutdown(Duration::from_secs(15)).await;
    assert!(report.forced.is_empty(), "{report:?}");
    assert!(
        app.workers.running().is_empty(),
        "{:?}",
        app.workers.running()
    );
    let ops = app
        .store
        .list_directory_ops(None, "", 0, 10_000)
        .await
        .unwrap();
    let mut disables = 0;
    for i in 0..N {
        let id = format!("E{i}");
        let op = ops
            .iter()
            .find(|o| o.employee_id == id && o.kind == idgov_store::DirOpKind::Disable)
            .unwrap_or_else(|| panic!("no disable queued for {id}"));
        let can_bind =
            Directory::can_bind(&s.url(), &dn(&id), &format!("pw-{}", id.to_lowercase()))
                .await
                .unwrap();
        match op.state {
            DirOpState::Done => {
                disables += 1;
                assert!(!can_bind, "{id}'s disable is recorded done but it can bind");
            }
            DirOpState::Pending => assert!(
                can_bind,
                "{id} is disabled in the directory but its operation is still pending: {op:?}"
            ),
            other => panic!("{id}: {other:?}"),
        }
    }
    eprintln!("{disables} of {N} disables were applied before the stop");
}
