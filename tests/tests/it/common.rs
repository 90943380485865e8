//! Helpers shared by the integration tests.

use chrono::{DateTime, Duration, Utc};
use idgov_domain::Classification;
use idgov_domain::hr::{EventKind, HrEvent, HrEventInput};
use idgov_domain::identity::{AttributesPatch, BackgroundCheck, EmploymentType};
use idgov_server::{App, ManualClock};
use idgov_tests::backends::TestStore;
use idgov_tests::server::t0;
use std::sync::Arc;

/// A small policy with entitlements at every level. Owners are O1 and O2.
pub const POLICY: &str = r#"
[hr]
time_zone = "Europe/Oslo"

[[systems]]
id = "app"
kind = "application"
owner = "O1"

[[systems]]
id = "site"
kind = "physical_site"
owner = "O2"

[[entitlements]]
id = "lobby"
system = "site"
classification = "public"
kind = "physical_area"

[[entitlements]]
id = "wiki"
system = "app"
classification = "internal"
kind = "app_role"

[[entitlements]]
id = "ledger"
system = "app"
classification = "confidential"
kind = "ldap_group"
ldap_group_dn = "cn=ledger,ou=groups,dc=example,dc=com"

[[entitlements]]
id = "vault"
system = "site"
classification = "restricted"
kind = "physical_area"

[[roles]]
id = "everyone"
entitlements = ["lobby", "wiki"]

[[roles]]
id = "finance"
entitlements = ["ledger"]

[[roles]]
id = "vault-keepers"
entitlements = ["vault"]

[[birthright]]
role = "everyone"

[[birthright]]
role = "finance"
when = { department = "Finance" }
"#;

/// An app over a fresh store, with a manual clock at `t0()`.
pub async fn app_on(t: &TestStore) -> (Arc<App>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let app = App::start(t.store.clone(), clock.clone(), None)
        .await
        .expect("app");
    (app, clock)
}

pub struct Person<'a> {
    pub id: &'a str,
    pub dept: &'a str,
    pub manager: Option<&'a str>,
    pub check: BackgroundCheck,
    pub clearance: Classification,
    pub kind: EmploymentType,
}

impl<'a> Person<'a> {
    pub fn new(id: &'a str, dept: &'a str) -> Self {
        Person {
            id,
            dept,
            manager: None,
            check: BackgroundCheck::Cleared,
            clearance: Classification::Confidential,
            kind: EmploymentType::Employee,
        }
    }

    pub fn patch(&self) -> AttributesPatch {
        AttributesPatch {
            display_name: Some(format!("Person {}", self.id)),
            department: Some(self.dept.into()),
            manager_id: self.manager.map(|m| Some(m.to_string())),
            background_check: Some(self.check),
            clearance: Some(self.clearance),
            employment_type: Some(self.kind),
            ..Default::default()
        }
    }
}

/// A validated event. `effective` is RFC 3339, a date, or "" for now.
pub fn event(
    app: &App,
    kind: EventKind,
    event_id: &str,
    employee: &str,
    effective: &str,
    attrs: AttributesPatch,
) -> HrEvent {
    let input = HrEventInput {
        source: "workday".into(),
        event_id: event_id.into(),
        kind: Some(kind),
        employee_id: employee.into(),
        effective_at: effective.into(),
        attrs,
        ..Default::default()
    };
    HrEvent::parse(input, app.policy().policy.hr_time_zone, app.now()).expect("valid event")
}

/// Hires `p` now.
pub async fn hire(app: &App, p: &Person<'_>) {
    let ev = event(
        app,
        EventKind::Hire,
        &format!("hire-{}", p.id),
        p.id,
        "",
        p.patch(),
    );
    app.submit_event(ev, "service:test").await.expect("hire");
}

/// Hires the policy's owners and applies [`POLICY`].
pub async fn with_policy(app: &App) {
    for o in ["O1", "O2"] {
        hire(app, &Person::new(o, "Management")).await;
    }
    app.apply_policy(POLICY, false, "test policy", "user:admin")
        .await
        .expect("policy applies");
}

/// Active grants of `id`, as entitlement ids, sorted.
pub async fn active_grants(app: &App, id: &str) -> Vec<String> {
    let mut v: Vec<String> = app
        .store
        .list_grants(id, false, "", 10_000)
        .await
        .expect("grants")
        .into_iter()
        .map(|(g, _)| g.entitlement_id)
        .collect();
    v.sort();
    v
}

pub fn days(n: i64) -> Duration {
    Duration::days(n)
}

pub fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// What an attacker with database access does first: removes the
/// append-only guard of the audit log.
pub async fn drop_audit_guard(t: &TestStore, c: &mut sqlx::AnyConnection) {
    let drop_guard: &[&str] = if t.url.starts_with("postgres") {
        &["ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update"]
    } else {
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
        ]
    };
    for q in drop_guard {
        sqlx::query(sqlx::AssertSqlSafe(q.to_string()))
            .execute(&mut *c)
            .await
            .unwrap();
    }
}

/// Terminates `employee` now (event `event_id`); how long until it was
/// acknowledged (durably applied).
pub async fn terminate_now(app: &App, event_id: &str, employee: &str) -> std::time::Duration {
    let ev = event(
        app,
        EventKind::Terminate,
        event_id,
        employee,
        "",
        AttributesPatch::default(),
    );
    let sent = std::time::Instant::now();
    app.submit_event(ev, "service:hr").await.expect("terminate");
    sent.elapsed()
}

/// A roster snapshot from `workday` listing `entries`, applied now.
pub fn roster_sync(
    sync_id: &str,
    entries: Vec<idgov_domain::roster::RosterEntry>,
) -> idgov_server::app::roster::SyncRequest {
    idgov_server::app::roster::SyncRequest {
        source: "workday".into(),
        sync_id: sync_id.into(),
        dry_run: false,
        as_of: String::new(),
        time_zone: String::new(),
        entries: entries.into(),
    }
}

/// Up to `limit` audit events of `action`, oldest first.
pub async fn audited(
    store: &idgov_store::Store,
    action: &str,
    limit: i64,
) -> Vec<idgov_domain::audit::AuditRecord> {
    store
        .list_audit_events(
            &idgov_store::AuditFilter {
                action: action.into(),
                ..Default::default()
            },
            0,
            limit,
        )
        .await
        .expect("audit events")
}

/// The runs of the roster stages left in `app`'s store.
pub async fn roster_stages(app: &App) -> Vec<String> {
    let later = app.now() + Duration::days(2);
    app.store.stale_roster_stages(later).await.unwrap()
}
