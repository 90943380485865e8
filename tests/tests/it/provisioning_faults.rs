//! Provisioning when the directory misbehaves (issue 8): connections that
//! go dead without closing, refusals that retrying cannot fix, values the
//! directory could never hold.

use crate::common::*;
use crate::provisioning::LDAP_POLICY;
use idgov_directory::client::Connection;
use idgov_directory::{Directory, DirectoryConfig, Preset};
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_server::{App, AppError, SystemClock};
use idgov_store::{AuditFilter, DirOpState};
use idgov_tests::backends::TestStore;
use idgov_tests::proxy::FreezingProxy;
use idgov_tests::slapd::{ADMIN_DN, ADMIN_PW, GROUPS, PEOPLE, Slapd};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn people(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("P{i:02}")).collect()
}

fn seed(ids: &[String]) -> String {
    let mut s = String::new();
    for id in ids.iter().map(String::as_str).chain(["O1"]) {
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
    s
}

fn config(url: String) -> DirectoryConfig {
    DirectoryConfig {
        connection: Connection {
            url,
            starttls: false,
            bind_dn: ADMIN_DN.into(),
            password: ADMIN_PW.into(),
            timeout: Duration::from_secs(1),
            op_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(5),
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

async fn app_on(t: &TestStore, cfg: DirectoryConfig, policy: &str) -> Arc<App> {
    let app = App::start(t.store.clone(), Arc::new(SystemClock), Some(cfg))
        .await
        .unwrap();
    hire(&app, &Person::new("O1", "Management")).await;
    app.apply_policy(policy, false, "test", "user:admin")
        .await
        .unwrap();
    app
}

async fn pending(app: &App) -> usize {
    app.store
        .list_directory_ops(Some(DirOpState::Pending), "", 0, 10_000)
        .await
        .unwrap()
        .len()
}

async fn settled(app: &App, within: Duration) {
    let t = Instant::now();
    while pending(app).await > 0 {
        assert!(
            t.elapsed() < within,
            "operations still pending after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dn(id: &str) -> String {
    format!("uid={},{PEOPLE}", id.to_lowercase())
}

fn target(s: &Slapd) -> std::net::SocketAddr {
    s.url()
        .trim_start_matches("ldap://")
        .parse()
        .expect("slapd address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_are_disabled_when_the_open_connections_go_dead() {
    let all = people(22);
    let Some(s) = Slapd::start_with(&seed(&all)) else {
        return;
    };
    let proxy = FreezingProxy::start(target(&s)).await;
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let app = app_on(&t, config(proxy.url()), LDAP_POLICY).await;
    for id in &all {
        hire(&app, &Person::new(id, "Finance")).await;
    }
    settled(&app, Duration::from_secs(20)).await;
    // Two early leavers: the leavers' lane holds open connections now.
    let (early, ids) = all.split_at(2);
    for id in early {
        let ev = event(
            &app,
            EventKind::Terminate,
            &format!("t-{id}"),
            id,
            "",
            AttributesPatch::default(),
        );
        app.submit_event(ev, "service:hr").await.unwrap();
    }
    settled(&app, Duration::from_secs(20)).await;
    let before = proxy.connections();

    // Every connection idgov holds now forwards nothing and never closes;
    // new connections work.
    proxy.freeze_existing();
    let start = Instant::now();
    for id in ids {
        let ev = event(
            &app,
            EventKind::Terminate,
            &format!("t-{id}"),
            id,
            "",
            AttributesPatch::default(),
        );
        app.submit_event(ev, "service:hr").await.unwrap();
    }
    let direct = config(s.url());
    let mut d = Directory::connect(&direct.connection, Preset::Openldap.schema())
        .await
        .unwrap();
    loop {
        let mut done = 0;
        for id in ids {
            let locked = d.is_disabled(&dn(id)).await.unwrap();
            let groups = d.groups_of(GROUPS, &dn(id)).await.unwrap();
            done += usize::from(locked && groups.is_empty());
        }
        if done == ids.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{done} of {} leavers locked and stripped after {:?}",
            ids.len(),
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "20 leavers locked and stripped {:?} after the connections went dead",
        start.elapsed()
    );
    assert!(
        proxy.connections() > before,
        "dead connections were replaced"
    );
    settled(&app, Duration::from_secs(10)).await;
    // Each disable was applied once, on a replacement connection.
    let ops = app
        .store
        .list_directory_ops(None, "", 0, 10_000)
        .await
        .unwrap();
    assert!(
        ops.iter()
            .filter(|o| o.kind.as_str() == "disable")
            .all(|o| o.state == DirOpState::Done && o.outcome.as_deref() == Some("applied")),
        "{ops:#?}"
    );
}

const GHOST_POLICY_EXTRA: &str = r#"
[[entitlements]]
id = "group.ghost"
system = "dir"
classification = "public"
kind = "ldap_group"
ldap_group_dn = "cn=ghost,ou=groups,dc=example,dc=com"

[[roles]]
id = "ghosts"
entitlements = ["group.ghost"]

[[birthright]]
role = "ghosts"
when = { department = "Finance" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_fails_at_once_and_blocks_nothing() {
    let ids = people(1);
    let Some(s) = Slapd::start_with(&seed(&ids)) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let policy = format!("{LDAP_POLICY}\n{GHOST_POLICY_EXTRA}");
    let app = app_on(&t, config(s.url()), &policy).await;
    hire(&app, &Person::new("P00", "Finance")).await;
    settled(&app, Duration::from_secs(10)).await;

    // The group does not exist: noSuchObject (32) cannot go away by itself.
    let ops = app
        .store
        .list_directory_ops(None, "P00", 0, 100)
        .await
        .unwrap();
    let ghost = ops
        .iter()
        .find(|o| {
            o.group_dn
                .as_deref()
                .is_some_and(|g| g.starts_with("cn=ghost"))
        })
        .expect("the ghost op");
    assert_eq!(ghost.state, DirOpState::Failed, "{ghost:?}");
    assert_eq!(ghost.attempts, 1, "failed at once, not retried");
    assert!(
        ghost.last_error.as_deref().unwrap_or("").contains("32"),
        "{ghost:?}"
    );
    // The person's other operations went on.
    let mut d = Directory::connect(&config(s.url()).connection, Preset::Openldap.schema())
        .await
        .unwrap();
    let groups = d.groups_of(GROUPS, &dn("P00")).await.unwrap();
    assert!(
        groups.iter().any(|g| g.starts_with("cn=staff")),
        "{groups:?}"
    );
    assert!(
        groups.iter().any(|g| g.starts_with("cn=finance")),
        "{groups:?}"
    );
    // A security event says so at once.
    let events = app
        .store
        .list_audit_events(
            &AuditFilter {
                action: "provisioning.failed".into(),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0].security);

    // An admin fixes the cause and retries it.
    d.add_entry(
        &format!("cn=ghost,{GROUPS}"),
        vec![
            ("objectClass".into(), vec!["groupOfNames".into()]),
            ("cn".into(), vec!["ghost".into()]),
            (
                "member".into(),
                vec!["cn=placeholder,dc=example,dc=com".into()],
            ),
        ],
    )
    .await
    .unwrap();
    let retried = app
        .retry_directory_op(ghost.id, "user:admin")
        .await
        .unwrap();
    assert_eq!(retried.state, DirOpState::Pending);
    settled(&app, Duration::from_secs(10)).await;
    let groups = d.groups_of(GROUPS, &dn("P00")).await.unwrap();
    assert!(
        groups.iter().any(|g| g.starts_with("cn=ghost")),
        "{groups:?}"
    );
    // Only failed operations are retried.
    let err = app
        .retry_directory_op(ghost.id, "user:admin")
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::Domain(_)), "{err:?}");

    // The leaver's disable goes through.
    d.close().await;
    let ev = event(
        &app,
        EventKind::Terminate,
        "t1",
        "P00",
        "",
        AttributesPatch::default(),
    );
    app.submit_event(ev, "service:hr").await.unwrap();
    settled(&app, Duration::from_secs(10)).await;
    let mut d = Directory::connect(&config(s.url()).connection, Preset::Openldap.schema())
        .await
        .unwrap();
    assert!(d.is_disabled(&dn("P00")).await.unwrap());
    assert!(d.groups_of(GROUPS, &dn("P00")).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_directory_cannot_hold_is_refused_at_intake() {
    let ids = people(1);
    let Some(s) = Slapd::start_with(&seed(&ids)) else {
        return;
    };
    let t = idgov_tests::backends::open("sqlite").await.unwrap();
    let mut cfg = config(s.url());
    cfg.accounts = toml::from_str(
        "create = true\ndn = \"uid={email_local},ou=people,dc=example,dc=com\"\n\
         [attributes]\nuid = \"{email_local}\"\ncn = \"{display_name}\"\nsn = \"{family_name}\"\nmail = \"{email}\"\n",
    )
    .unwrap();
    let app = app_on(&t, cfg, LDAP_POLICY).await;
    let mut p = Person::new("N1", "Sales").patch();
    p.email = Some("bjørn@example.com".into());
    let err = app
        .submit_event(
            event(&app, EventKind::Hire, "h-n1", "N1", "", p.clone()),
            "service:hr",
        )
        .await
        .unwrap_err();
    let AppError::Domain(d) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(d.violations[0].field, "event.attributes.email", "{d:?}");
    assert!(d.violations[0].description.contains("ASCII"), "{d:?}");
    assert!(
        app.store.get_identity("N1").await.unwrap().is_none(),
        "nothing applied"
    );
    // An ASCII address goes through and the account is created.
    p.email = Some("bjorn@example.com".into());
    app.submit_event(
        event(&app, EventKind::Hire, "h-n1b", "N1", "", p),
        "service:hr",
    )
    .await
    .unwrap();
    settled(&app, Duration::from_secs(10)).await;
    let ops = app
        .store
        .list_directory_ops(None, "N1", 0, 100)
        .await
        .unwrap();
    assert!(ops.iter().all(|o| o.state == DirOpState::Done), "{ops:#?}");
}

/// `/readyz/directory` reads `App::directory_backlog`: with the directory
/// down, operations wait, and once the oldest has waited more than five
/// minutes the backlog says so (the endpoint then answers 503); without a
/// directory there is no backlog to report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_backlog_shows_a_directory_that_is_down() {
    let Some(t) = idgov_tests::backends::open("sqlite").await else {
        return;
    };
    let clock = Arc::new(idgov_server::ManualClock::new(idgov_tests::server::t0()));
    // Nothing listens on port 1: every connection is refused.
    let cfg = config("ldap://127.0.0.1:1".into());
    let app = App::start(t.store.clone(), clock.clone(), Some(cfg))
        .await
        .unwrap();
    hire(&app, &Person::new("O1", "Management")).await;
    app.apply_policy(LDAP_POLICY, false, "test", "user:admin")
        .await
        .unwrap();
    hire(&app, &Person::new("E1", "Finance")).await;
    assert!(pending(&app).await > 0, "operations wait for the directory");
    let (n, age) = app.directory_backlog().await.unwrap().unwrap();
    assert!(n > 0 && age <= 300, "{n} pending, {age} s");
    clock.advance(chrono::Duration::minutes(6));
    let (n, age) = app.directory_backlog().await.unwrap().unwrap();
    assert!(n > 0 && age > 300, "{n} pending, {age} s: behind");

    let Some(t2) = idgov_tests::backends::open("sqlite").await else {
        return;
    };
    let plain = App::start(t2.store.clone(), clock, None).await.unwrap();
    assert_eq!(plain.directory_backlog().await.unwrap(), None);
}
