use super::*;
use crate::hr::{EventKind, HrEventInput};
use crate::identity::{AttributesPatch, BackgroundCheck, EmploymentType};
use chrono::TimeZone;

const POLICY: &str = r#"
[[systems]]
id = "erp"
kind = "application"
owner = "OWNER"

[[entitlements]]
id = "wiki"
system = "erp"
classification = "public"
kind = "app_role"

[[entitlements]]
id = "erp.read"
system = "erp"
classification = "internal"
kind = "app_role"

[[entitlements]]
id = "erp.pay"
system = "erp"
classification = "confidential"
kind = "app_role"

[[entitlements]]
id = "erp.admin"
system = "erp"
classification = "restricted"
kind = "app_role"

[[entitlements]]
id = "crm.read"
system = "erp"
classification = "internal"
kind = "app_role"

[[roles]]
id = "everyone"
entitlements = ["wiki"]

[[roles]]
id = "finance"
entitlements = ["erp.read", "erp.pay"]

[[birthright]]
role = "everyone"

[[birthright]]
role = "finance"
when = { department = "Finance" }
"#;

fn policy() -> Policy {
    Policy::parse(POLICY).unwrap_or_default()
}

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn event(kind: EventKind, id: &str, effective: DateTime<Utc>, attrs: AttributesPatch) -> HrEvent {
    let input = HrEventInput {
        source: "hr".into(),
        event_id: id.into(),
        kind: Some(kind),
        employee_id: "E1".into(),
        effective_at: effective.to_rfc3339(),
        attrs,
        ..Default::default()
    };
    match HrEvent::parse(input, chrono_tz::UTC, effective) {
        Ok(e) => e,
        Err(e) => panic!("test event invalid: {e}"),
    }
}

fn finance(bg: BackgroundCheck) -> AttributesPatch {
    AttributesPatch {
        display_name: Some("Ada".into()),
        department: Some("Finance".into()),
        background_check: Some(bg),
        clearance: Some(Classification::Restricted),
        ..Default::default()
    }
}

fn applied(d: Decision) -> Transition {
    match d {
        Decision::Apply(t) => *t,
        other => panic!("expected Apply, got {other:?}"),
    }
}

/// Applies grant changes the way the store does, for multi-step tests.
fn commit(grants: &mut Vec<Grant>, t: &Transition, now: DateTime<Utc>) {
    for c in &t.grant_changes {
        match c {
            GrantChange::Add(n) => grants.push(Grant {
                id: format!("g{}", grants.len() + 1),
                employee_id: t.identity.employee_id.clone(),
                entitlement_id: n.entitlement_id.clone(),
                source: n.source,
                source_ref: n.source_ref.clone(),
                granted_at: now,
                expires_at: None,
                approvers: vec![],
                justification: n.justification.clone(),
                revoked_at: None,
                revoke_reason: None,
                review_pending: false,
                exception_id: None,
            }),
            GrantChange::Revoke {
                grant_id, reason, ..
            } => {
                if let Some(g) = grants.iter_mut().find(|g| &g.id == grant_id) {
                    g.revoked_at = Some(now);
                    g.revoke_reason = Some(*reason);
                }
            }
            GrantChange::MarkMoverReview { grant_id, .. } => {
                if let Some(g) = grants.iter_mut().find(|g| &g.id == grant_id) {
                    g.review_pending = true;
                }
            }
        }
    }
}

fn active_ents(grants: &[Grant]) -> Vec<&str> {
    let mut v: Vec<_> = grants
        .iter()
        .filter(|g| g.is_active())
        .map(|g| g.entitlement_id.as_str())
        .collect();
    v.sort();
    v
}

fn requested(grants: &mut Vec<Grant>, ent: &str, now: DateTime<Utc>) {
    grants.push(Grant {
        id: format!("r-{ent}"),
        employee_id: "E1".into(),
        entitlement_id: ent.into(),
        source: SourceKind::Request,
        source_ref: "req-1".into(),
        granted_at: now,
        expires_at: None,
        approvers: vec!["M".into()],
        justification: "needed".into(),
        revoked_at: None,
        revoke_reason: None,
        review_pending: false,
        exception_id: None,
    });
}

#[test]
fn nothing_above_public_before_the_background_check_clears() {
    let p = policy();
    let mut grants = vec![];
    let hire = applied(decide(
        None,
        &grants,
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Pending),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    commit(&mut grants, &hire, at(1));
    assert_eq!(active_ents(&grants), ["wiki"]);
    assert_eq!(
        hire.withheld.len(),
        2,
        "erp.read and erp.pay withheld: {:?}",
        hire.withheld
    );

    let clear = AttributesPatch {
        background_check: Some(BackgroundCheck::Cleared),
        ..Default::default()
    };
    let t = applied(decide(
        Some(&hire.identity),
        &grants,
        &event(EventKind::Update, "2", at(2), clear),
        None,
        &[],
        &p,
        at(2),
    ));
    commit(&mut grants, &t, at(2));
    assert_eq!(active_ents(&grants), ["erp.pay", "erp.read", "wiki"]);
    assert!(!t.mover);
}

#[test]
fn nobody_holds_above_their_clearance_and_contractors_never_restricted() {
    let p = policy();
    let mut grants = vec![];
    let hire = applied(decide(
        None,
        &grants,
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    commit(&mut grants, &hire, at(1));
    requested(&mut grants, "erp.admin", at(1));

    let contractor = AttributesPatch {
        employment_type: Some(EmploymentType::Contractor),
        ..Default::default()
    };
    let t = applied(decide(
        Some(&hire.identity),
        &grants,
        &event(EventKind::Update, "2", at(2), contractor),
        None,
        &[],
        &p,
        at(2),
    ));
    assert!(t.grant_changes.contains(&GrantChange::Revoke {
        grant_id: "r-erp.admin".into(),
        entitlement_id: "erp.admin".into(),
        reason: RevokeReason::Clearance
    }));
    commit(&mut grants, &t, at(2));
    assert_eq!(active_ents(&grants), ["erp.pay", "erp.read", "wiki"]);

    let lower = AttributesPatch {
        clearance: Some(Classification::Internal),
        ..Default::default()
    };
    let t2 = applied(decide(
        Some(&t.identity),
        &grants,
        &event(EventKind::Update, "3", at(3), lower),
        None,
        &[],
        &p,
        at(3),
    ));
    commit(&mut grants, &t2, at(3));
    assert_eq!(active_ents(&grants), ["erp.read", "wiki"]);
    for g in grants.iter().filter(|g| g.is_active()) {
        let c = p.entitlements[&g.entitlement_id].classification;
        assert!(c <= t2.identity.attrs.access_ceiling());
    }
}

#[test]
fn mover_loses_old_birthright_and_other_grants_follow_the_level() {
    let p = policy();
    let mut grants = vec![];
    let hire = applied(decide(
        None,
        &grants,
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    commit(&mut grants, &hire, at(1));
    requested(&mut grants, "crm.read", at(1)); // internal: keep, in mover review
    requested(&mut grants, "erp.admin", at(1)); // restricted: revoke

    let mv = AttributesPatch {
        department: Some("Sales".into()),
        ..Default::default()
    };
    let t = applied(decide(
        Some(&hire.identity),
        &grants,
        &event(EventKind::Move, "2", at(2), mv),
        None,
        &[],
        &p,
        at(2),
    ));
    assert!(t.mover);
    commit(&mut grants, &t, at(2));
    assert_eq!(active_ents(&grants), ["crm.read", "wiki"]);
    let reasons: Vec<_> = grants
        .iter()
        .filter_map(|g| g.revoke_reason.map(|r| (g.entitlement_id.as_str(), r)))
        .collect();
    assert_eq!(
        reasons,
        [
            ("erp.pay", RevokeReason::Mover),
            ("erp.read", RevokeReason::Mover),
            ("erp.admin", RevokeReason::Mover)
        ]
    );
    assert!(
        grants
            .iter()
            .any(|g| g.entitlement_id == "crm.read" && g.review_pending)
    );
}

#[test]
fn a_leaver_holds_nothing_and_nothing_is_deleted() {
    let p = policy();
    let mut grants = vec![];
    let hire = applied(decide(
        None,
        &grants,
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    commit(&mut grants, &hire, at(1));
    requested(&mut grants, "crm.read", at(1));
    let t = applied(decide(
        Some(&hire.identity),
        &grants,
        &event(EventKind::Terminate, "2", at(2), AttributesPatch::default()),
        None,
        &[],
        &p,
        at(2),
    ));
    commit(&mut grants, &t, at(2));
    assert_eq!(t.identity.status, Status::Terminated);
    assert!(active_ents(&grants).is_empty());
    assert_eq!(grants.len(), 4);
    assert!(
        grants
            .iter()
            .all(|g| g.revoke_reason == Some(RevokeReason::Leaver))
    );
    assert_eq!(t.identity.attrs.end_date, Some(at(2).date_naive()));
}

#[test]
fn an_older_event_never_overwrites_newer_state() {
    let p = policy();
    let hire = applied(decide(
        None,
        &[],
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    let newer = AttributesPatch {
        title: Some("Controller".into()),
        ..Default::default()
    };
    let t = applied(decide(
        Some(&hire.identity),
        &[],
        &event(EventKind::Update, "3", at(5), newer),
        None,
        &[],
        &p,
        at(6),
    ));
    let older = AttributesPatch {
        title: Some("Clerk".into()),
        ..Default::default()
    };
    let late = event(EventKind::Update, "2", at(3), older);
    let d = decide(Some(&t.identity), &[], &late, None, &[], &p, at(6));
    assert_eq!(d, Decision::NeedsHistory);
    let (h1, h2) = (
        event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        event(
            EventKind::Update,
            "3",
            at(5),
            AttributesPatch {
                title: Some("Controller".into()),
                ..Default::default()
            },
        ),
    );
    let replayed = applied(decide(
        Some(&t.identity),
        &[],
        &late,
        Some(&[&h1, &h2]),
        &[],
        &p,
        at(6),
    ));
    assert!(replayed.replayed);
    assert_eq!(replayed.identity.attrs.title, "Controller");
    assert!(
        crate::history::same_state(&replayed.identity, &t.identity),
        "{replayed:?}"
    );
}

#[test]
fn a_late_termination_still_terminates_when_no_newer_status_exists() {
    let p = policy();
    let hire = applied(decide(
        None,
        &[],
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    let newer = AttributesPatch {
        title: Some("Controller".into()),
        ..Default::default()
    };
    let t = applied(decide(
        Some(&hire.identity),
        &[],
        &event(EventKind::Update, "3", at(5), newer),
        None,
        &[],
        &p,
        at(6),
    ));
    // The termination effective on day 4 arrives after the day-5 update.
    let h1 = event(
        EventKind::Hire,
        "1",
        at(1),
        finance(BackgroundCheck::Cleared),
    );
    let h3 = event(
        EventKind::Update,
        "3",
        at(5),
        AttributesPatch {
            title: Some("Controller".into()),
            ..Default::default()
        },
    );
    let late_term = event(EventKind::Terminate, "2", at(4), AttributesPatch::default());
    let term = applied(decide(
        Some(&t.identity),
        &[],
        &late_term,
        Some(&[&h1, &h3]),
        &[],
        &p,
        at(6),
    ));
    assert_eq!(term.identity.status, Status::Terminated);
    assert_eq!(
        term.identity.attrs.title, "Controller",
        "the newer title applies to the departed person too"
    );
    // A termination older than a rehire leaves the rehired person active.
    let h4 = event(EventKind::Rehire, "4", at(8), AttributesPatch::default());
    let rehire = applied(decide(Some(&term.identity), &[], &h4, None, &[], &p, at(8)));
    assert_eq!(rehire.identity.status, Status::Active);
    let stale = event(EventKind::Terminate, "5", at(7), AttributesPatch::default());
    let again = applied(decide(
        Some(&rehire.identity),
        &[],
        &stale,
        Some(&[&h1, &h3, &late_term, &h4]),
        &[],
        &p,
        at(9),
    ));
    assert_eq!(again.identity.status, Status::Active);
    assert!(
        crate::history::same_state(&again.identity, &rehire.identity),
        "{again:?}"
    );
}

#[test]
fn future_events_are_scheduled_and_a_future_hire_is_a_pre_hire() {
    let p = policy();
    let d = decide(
        None,
        &[],
        &event(
            EventKind::Hire,
            "1",
            at(10),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    );
    let Decision::Schedule {
        pre_hire: Some(pre),
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(pre.status, Status::PreHire);
    // When due it activates, with birthright.
    let t = applied(decide(
        Some(&pre),
        &[],
        &event(
            EventKind::Hire,
            "1",
            at(10),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(10),
    ));
    assert_eq!(t.identity.status, Status::Active);
    assert_eq!(t.grant_changes.len(), 3);
    let later = decide(
        Some(&t.identity),
        &[],
        &event(
            EventKind::Terminate,
            "2",
            at(20),
            AttributesPatch::default(),
        ),
        None,
        &[],
        &p,
        at(11),
    );
    assert_eq!(later, Decision::Schedule { pre_hire: None });
}

#[test]
fn a_rehire_starts_from_nothing() {
    let p = policy();
    let mut grants = vec![];
    let hire = applied(decide(
        None,
        &grants,
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    commit(&mut grants, &hire, at(1));
    requested(&mut grants, "crm.read", at(1));
    let term = applied(decide(
        Some(&hire.identity),
        &grants,
        &event(EventKind::Terminate, "2", at(2), AttributesPatch::default()),
        None,
        &[],
        &p,
        at(2),
    ));
    commit(&mut grants, &term, at(2));
    let re = applied(decide(
        Some(&term.identity),
        &grants,
        &event(EventKind::Rehire, "3", at(9), AttributesPatch::default()),
        None,
        &[],
        &p,
        at(9),
    ));
    commit(&mut grants, &re, at(9));
    assert_eq!(re.identity.status, Status::Active);
    assert_eq!(
        re.identity.attrs.background_check,
        BackgroundCheck::Pending,
        "a returning person is checked again"
    );
    assert_eq!(active_ents(&grants), ["wiki"], "no old grant comes back");
    assert_eq!(re.identity.attrs.end_date, None);
}

#[test]
fn events_for_people_in_another_state_are_kept_and_read_sensibly() {
    let p = policy();
    // An update before the hire: kept, the person is a pre-hire.
    let upd = event(
        EventKind::Update,
        "0",
        at(1),
        finance(BackgroundCheck::Cleared),
    );
    let pre = applied(decide(None, &[], &upd, None, &[], &p, at(1)));
    assert_eq!(pre.identity.status, Status::PreHire);
    assert!(pre.grant_changes.is_empty());
    // The hire then starts them, keeping the update's attributes.
    let hire = applied(decide(
        Some(&pre.identity),
        &[],
        &event(
            EventKind::Hire,
            "1",
            at(2),
            AttributesPatch {
                display_name: Some("Ada".into()),
                ..Default::default()
            },
        ),
        None,
        &[],
        &p,
        at(2),
    ));
    assert_eq!(hire.identity.status, Status::Active);
    assert_eq!(hire.identity.attrs.department, "Finance");
    // A rehire of an active person is an update, with a note.
    let d = applied(decide(
        Some(&hire.identity),
        &[],
        &event(EventKind::Rehire, "2", at(3), AttributesPatch::default()),
        None,
        &[],
        &p,
        at(3),
    ));
    assert_eq!(d.identity.status, Status::Active);
    assert!(!d.new_employment);
    assert!(d.note.is_some());
}

#[test]
fn a_policy_change_revokes_birthright_with_reason_policy() -> Result<(), crate::DomainError> {
    let p = policy();
    let mut grants = vec![];
    let hire = applied(decide(
        None,
        &grants,
        &event(
            EventKind::Hire,
            "1",
            at(1),
            finance(BackgroundCheck::Cleared),
        ),
        None,
        &[],
        &p,
        at(1),
    ));
    commit(&mut grants, &hire, at(1));
    let narrower = Policy::parse(&POLICY.replace(r#"["erp.read", "erp.pay"]"#, r#"["erp.read"]"#))?;
    let (changes, _) = reconcile_access(&hire.identity, &grants, &narrower, Cause::Policy);
    assert_eq!(
        changes,
        [GrantChange::Revoke {
            grant_id: "g1".into(),
            entitlement_id: "erp.pay".into(),
            reason: RevokeReason::Policy
        }]
    );
    Ok(())
}
