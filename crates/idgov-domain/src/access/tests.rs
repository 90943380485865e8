use super::*;
use crate::identity::{Attributes, BackgroundCheck, History, Status};
use chrono::TimeZone;
use std::collections::HashMap;

const POLICY: &str = r#"
[requests]
fallback_approver = "FB"

[[systems]]
id = "app"
kind = "application"
owner = "OWN"

[[entitlements]]
id = "wiki"
system = "app"
classification = "internal"
kind = "app_role"
requestable = true

[[entitlements]]
id = "pay"
system = "app"
classification = "confidential"
kind = "app_role"
requestable = true

[[entitlements]]
id = "vault"
system = "app"
classification = "restricted"
kind = "app_role"
requestable = true

[[entitlements]]
id = "audit"
system = "app"
classification = "confidential"
kind = "app_role"
requestable = true

[[entitlements]]
id = "hidden"
system = "app"
classification = "internal"
kind = "app_role"

[[sod]]
id = "pay-vs-audit"
entitlements = ["pay", "audit"]
"#;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).single().unwrap()
}

fn person(id: &str) -> Identity {
    Identity {
        employee_id: id.into(),
        attrs: Attributes {
            background_check: BackgroundCheck::Cleared,
            clearance: Classification::Restricted,
            ..Attributes::new_person(Classification::Internal)
        },
        status: Status::Active,
        attrs_effective_at: now(),
        status_effective_at: now(),
        created_at: now(),
        updated_at: now(),
        history: History::default(),
    }
}

fn managers() -> HashMap<&'static str, &'static str> {
    // B reports to M, M to D; OWN reports to D; R reports to M.
    HashMap::from([
        ("B", "M"),
        ("M", "D"),
        ("OWN", "D"),
        ("R", "M"),
        ("D", "CEO"),
    ])
}

fn new(requester: &str, beneficiary: &str, target: &str, days: Option<u32>) -> NewRequest {
    NewRequest {
        requester: requester.into(),
        beneficiary: beneficiary.into(),
        target_kind: TargetKind::Entitlement,
        target_id: target.into(),
        justification: "needed for the quarter close".into(),
        duration_days: days,
        extends_grant_id: None,
    }
}

fn planned(n: &NewRequest) -> Result<AccessRequest, DomainError> {
    planned_for(n, &person(&n.beneficiary))
}

/// [`planned`] for a beneficiary as given.
fn planned_for(n: &NewRequest, beneficiary: &Identity) -> Result<AccessRequest, DomainError> {
    let policy = Policy::parse(POLICY).unwrap();
    let m = managers();
    plan(
        n,
        beneficiary,
        &[],
        false,
        &policy,
        &|p: &str| m.get(p).map(|s| s.to_string()),
        &[],
        now(),
    )
}

fn assignees(r: &AccessRequest) -> Vec<&str> {
    r.steps.iter().map(|s| s.assignee.as_str()).collect()
}

#[test]
fn steps_follow_the_level_and_nobody_approves_for_themselves() {
    let r = planned(&new("B", "B", "vault", Some(30))).unwrap();
    assert_eq!(assignees(&r), ["M", "OWN", SECURITY_POOL]);
    // The manager asks for their report: the manager step goes up.
    let r = planned(&new("M", "B", "pay", Some(30))).unwrap();
    assert_eq!(assignees(&r), ["D", "OWN"]);
    // The owner asks for themselves: their manager approves as manager,
    // and the owner step (the owner is the beneficiary) goes up — but D is
    // already the manager step: up again.
    let r = planned(&new("OWN", "OWN", "pay", Some(30))).unwrap();
    assert_eq!(assignees(&r), ["D", "CEO"]);
    assert!(r.steps[1].note.contains("escalated"));
}

#[test]
fn every_problem_with_what_is_asked_is_named_at_once() {
    let fields =
        |e: DomainError| -> Vec<String> { e.violations.into_iter().map(|v| v.field).collect() };
    // Confidential access with neither a justification nor a duration.
    let mut n = new("B", "B", "pay", None);
    n.justification = String::new();
    assert_eq!(
        fields(planned(&n).unwrap_err()),
        ["justification", "duration_days"]
    );
    // A target that cannot be asked for: what it needs is not looked at,
    // but what is wrong whatever it is still is.
    let mut n = new("B", "B", "hidden", Some(0));
    n.justification = "x".repeat(3000);
    assert_eq!(
        fields(planned(&n).unwrap_err()),
        ["target_id", "justification", "duration_days"]
    );
    // An unknown one is not found, unless the request is wrong anyway.
    n.target_id = "nope".into();
    assert_eq!(
        fields(planned(&n).unwrap_err()),
        ["justification", "duration_days"]
    );
    n.justification = "fine".into();
    n.duration_days = Some(3);
    assert_eq!(planned(&n).unwrap_err().code, ErrorCode::NotFound);
    // Above the beneficiary's ceiling, and too long.
    let mut b = person("B");
    b.attrs.background_check = BackgroundCheck::Pending;
    let e = planned_for(&new("B", "B", "vault", Some(500)), &b).unwrap_err();
    assert_eq!(fields(e), ["beneficiary", "duration_days"]);
}

#[test]
fn what_cannot_be_asked_is_refused_with_the_reason() {
    let e = planned(&new("B", "B", "hidden", None)).unwrap_err();
    assert!(e.violations[0].description.contains("not requestable"));
    let e = planned(&new("B", "B", "pay", None)).unwrap_err();
    assert_eq!(e.violations[0].field, "duration_days");
    let e = planned(&new("B", "B", "pay", Some(500))).unwrap_err();
    assert!(e.violations[0].description.contains("at most 180"));
    let mut n = new("B", "B", "pay", Some(30));
    n.justification = " ".into();
    assert_eq!(
        planned(&n).unwrap_err().violations[0].field,
        "justification"
    );
    n.justification = "x".repeat(3000);
    assert_eq!(
        planned(&n).unwrap_err().violations[0].field,
        "justification"
    );
    // Above the ceiling.
    let mut b = person("B");
    b.attrs.background_check = BackgroundCheck::Pending;
    let e = planned_for(&new("B", "B", "wiki", None), &b).unwrap_err();
    assert!(e.violations[0].description.contains("ceiling"), "{e:?}");
}

fn decider(id: &str, security: bool) -> Decider {
    Decider {
        employee_id: id.into(),
        security_officer: security,
    }
}

#[test]
fn the_hard_rules_of_deciding() {
    let mut r = planned(&new("R", "B", "vault", Some(30))).unwrap();
    // Out of order, the wrong person, the requester, the beneficiary.
    assert!(decide(&mut r, &decider("OWN", false), true, "", now()).is_err());
    assert!(
        decide(&mut r, &decider("R", true), true, "", now()).is_err(),
        "requester"
    );
    assert!(
        decide(&mut r, &decider("B", true), true, "", now()).is_err(),
        "beneficiary"
    );
    assert_eq!(
        decide(&mut r, &decider("M", false), true, "", now()).unwrap(),
        Decided::Advanced
    );
    assert_eq!(
        decide(&mut r, &decider("OWN", false), true, "", now()).unwrap(),
        Decided::Advanced
    );
    // A security officer who already filled a step may not fill another.
    assert!(decide(&mut r, &decider("OWN", true), true, "", now()).is_err());
    assert!(
        decide(&mut r, &decider("S1", false), true, "", now()).is_err(),
        "not a security officer"
    );
    assert_eq!(
        decide(&mut r, &decider("S1", true), true, "", now()).unwrap(),
        Decided::Approved
    );
    assert_eq!(r.approvers(), ["M", "OWN", "S1"]);
    // Decided once.
    assert!(decide(&mut r, &decider("S2", true), true, "", now()).is_err());
}

#[test]
fn a_denial_ends_it_and_needs_a_reason() {
    let mut r = planned(&new("B", "B", "pay", Some(30))).unwrap();
    assert!(
        decide(&mut r, &decider("M", false), false, "", now()).is_err(),
        "a reason"
    );
    assert_eq!(
        decide(&mut r, &decider("M", false), false, "not needed", now()).unwrap(),
        Decided::Denied
    );
    assert_eq!(r.state, RequestState::Denied);
    assert!(decide(&mut r, &decider("OWN", false), true, "", now()).is_err());
}

#[test]
fn separation_of_duties_needs_an_exception() {
    let policy = Policy::parse(POLICY).unwrap();
    let m = managers();
    let held = vec![crate::grant::Grant {
        id: "g1".into(),
        employee_id: "B".into(),
        entitlement_id: "pay".into(),
        source: crate::grant::SourceKind::Request,
        source_ref: "r0".into(),
        granted_at: now(),
        expires_at: None,
        approvers: vec![],
        justification: String::new(),
        revoked_at: None,
        revoke_reason: None,
        review_pending: false,
        exception_id: None,
    }];
    let n = new("B", "B", "audit", Some(30));
    let e = plan(
        &n,
        &person("B"),
        &held,
        false,
        &policy,
        &|p: &str| m.get(p).map(|s| s.to_string()),
        &[],
        now(),
    )
    .unwrap_err();
    assert!(
        e.violations[0].description.contains("pay-vs-audit"),
        "{e:?}"
    );
    let r = plan(
        &n,
        &person("B"),
        &held,
        false,
        &policy,
        &|p: &str| m.get(p).map(|s| s.to_string()),
        &[SodException {
            id: "x1".into(),
            employee_id: "B".into(),
            rule_id: "pay-vs-audit".into(),
            justification: "quarter close".into(),
            granted_by: "S".into(),
            granted_at: now(),
            expires_at: now() + chrono::Duration::days(3),
            state: ExceptionState::Active,
            ended_at: None,
        }],
        now(),
    )
    .unwrap();
    assert_eq!(r.sod_exception_id.as_deref(), Some("x1"));
}

/// An oracle over random sequences: whatever is tried, an approved request
/// was approved by every step's rightful assignee, nobody twice, never the
/// requester or the beneficiary.
#[test]
fn no_approved_request_breaks_a_hard_rule() {
    use rand::{Rng, SeedableRng};
    let people = ["B", "M", "D", "OWN", "R", "CEO", "FB", "S1", "S2"];
    let targets = ["wiki", "pay", "vault"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..3000 {
        let requester = people[rng.random_range(0..people.len())];
        let beneficiary = ["B", "R", "OWN", "M"][rng.random_range(0..4)];
        let target = targets[rng.random_range(0..3)];
        let Ok(mut r) = planned(&new(requester, beneficiary, target, Some(30))) else {
            continue;
        };
        for _ in 0..12 {
            let who = people[rng.random_range(0..people.len())];
            let sec = who.starts_with('S') || rng.random_bool(0.2);
            let _ = decide(
                &mut r,
                &decider(who, sec),
                rng.random_bool(0.9),
                "because",
                now(),
            );
        }
        if r.state == RequestState::Approved {
            let approvers = r.approvers();
            assert_eq!(approvers.len(), r.steps.len());
            let uniq: BTreeSet<&String> = approvers.iter().collect();
            assert_eq!(uniq.len(), approvers.len(), "{r:?}");
            assert!(
                !approvers.contains(&r.requester) && !approvers.contains(&r.beneficiary),
                "{r:?}"
            );
            for s in &r.steps {
                if s.assignee != SECURITY_POOL {
                    assert_eq!(s.decided_by.as_ref(), Some(&s.assignee));
                }
            }
        }
    }
}
