use super::*;
use std::collections::HashMap;

struct O(HashMap<&'static str, &'static str>, Vec<&'static str>);

impl Org for O {
    fn manager_of(&self, e: &str) -> Option<String> {
        self.0.get(e).map(|m| m.to_string())
    }
    fn available(&self, e: &str) -> bool {
        !self.1.contains(&e)
    }
}

fn org(gone: Vec<&'static str>) -> O {
    O(
        HashMap::from([("E1", "M1"), ("M1", "B1"), ("OW", "B1"), ("E2", "M1")]),
        gone,
    )
}

fn item(class: Classification, strategy: ReviewerStrategy) -> ReviewItem {
    ReviewItem {
        id: "i1".into(),
        campaign_id: "c1".into(),
        grant_id: "g1".into(),
        employee_id: "E1".into(),
        entitlement_id: "x".into(),
        classification: class,
        source: SourceKind::Request,
        source_ref: "r1".into(),
        granted_at: DateTime::<Utc>::MIN_UTC,
        approvers: vec![],
        last_decision: None,
        last_reviewed_at: None,
        peers_holding: 0,
        peers_total: 0,
        recommendation: Recommendation::Certify,
        reason: String::new(),
        strategy,
        stage: Stage::Manager,
        reviewer: "M1".into(),
        note: String::new(),
        state: ItemState::Open,
        decided_by: None,
        decided_at: None,
        justification: String::new(),
        first_stage_by: None,
        version: 0,
    }
}

fn who(id: &str) -> Reviewer {
    Reviewer {
        employee_id: id.into(),
        security_officer: false,
    }
}

#[test]
fn reviewers_escalate_away_from_themselves_and_sole_approvers() {
    let o = org(vec![]);
    let r = resolve_reviewer(Stage::Manager, "E1", Some("M1"), "OW", &[], None, None, &o);
    assert_eq!(r, ("M1".into(), String::new()));
    // The owner holds it themselves: up to B1.
    let r = resolve_reviewer(Stage::Owner, "OW", Some("B1"), "OW", &[], None, None, &o);
    assert_eq!(r.0, "B1");
    assert!(r.1.contains("their own access"), "{}", r.1);
    // The manager approved the grant alone.
    let r = resolve_reviewer(
        Stage::Manager,
        "E1",
        Some("M1"),
        "OW",
        &["M1".into()],
        None,
        None,
        &o,
    );
    assert_eq!(r.0, "B1");
    assert!(r.1.contains("approved it alone"));
    // Two approvers: the manager may review.
    let r = resolve_reviewer(
        Stage::Manager,
        "E1",
        Some("M1"),
        "OW",
        &["M1".into(), "OW".into()],
        None,
        None,
        &o,
    );
    assert_eq!(r.0, "M1");
    // The manager left: their manager.
    let r = resolve_reviewer(
        Stage::Manager,
        "E1",
        Some("M1"),
        "OW",
        &[],
        None,
        None,
        &org(vec!["M1"]),
    );
    assert_eq!(r.0, "B1");
    assert!(r.1.contains("not active"));
    // Nobody above: the fallback, else any security officer.
    let r = resolve_reviewer(Stage::Manager, "X", None, "OW", &[], None, Some("F1"), &o);
    assert_eq!(r.0, "F1");
    let r = resolve_reviewer(Stage::Manager, "X", None, "OW", &[], None, None, &o);
    assert_eq!(r.0, SECURITY_POOL);
    // The owner stage never goes to who reviewed the first.
    let r = resolve_reviewer(
        Stage::Owner,
        "E1",
        Some("M1"),
        "M1",
        &[],
        Some("M1"),
        None,
        &o,
    );
    assert_eq!(r.0, "B1");
}

#[test]
fn decisions_follow_the_rules() {
    let now = DateTime::<Utc>::MIN_UTC;
    let mut i = item(Classification::Confidential, ReviewerStrategy::Manager);
    assert_eq!(
        decide(&mut i, &who("E1"), Verdict::Certify, "", now)
            .unwrap_err()
            .code,
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        decide(&mut i, &who("E2"), Verdict::Certify, "", now)
            .unwrap_err()
            .code,
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        decide(&mut i, &who("M1"), Verdict::Revoke, "", now)
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        decide(&mut i, &who("M1"), Verdict::Certify, "", now).unwrap(),
        Decided::Certified
    );
    assert_eq!(
        decide(&mut i, &who("M1"), Verdict::Revoke, "late", now)
            .unwrap_err()
            .code,
        ErrorCode::FailedPrecondition
    );

    // Restricted: two stages, a justification to certify, two people.
    let mut r = item(
        Classification::Restricted,
        ReviewerStrategy::ManagerThenOwner,
    );
    assert_eq!(
        decide(&mut r, &who("M1"), Verdict::Certify, "", now)
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        decide(&mut r, &who("M1"), Verdict::Certify, "still on call", now).unwrap(),
        Decided::NextStage
    );
    assert_eq!((r.stage, r.state), (Stage::Owner, ItemState::Open));
    r.reviewer = "M1".into(); // even if routed back to them
    assert_eq!(
        decide(&mut r, &who("M1"), Verdict::Certify, "ok", now)
            .unwrap_err()
            .code,
        ErrorCode::PermissionDenied
    );
    r.reviewer = "OW".into();
    assert_eq!(
        decide(&mut r, &who("OW"), Verdict::Revoke, "not needed", now).unwrap(),
        Decided::Revoked
    );
    assert_eq!(r.state, ItemState::Revoked);

    // The security pool: any officer.
    let mut p = item(Classification::Internal, ReviewerStrategy::Manager);
    p.reviewer = SECURITY_POOL.into();
    assert!(decide(&mut p, &who("S1"), Verdict::Certify, "", now).is_err());
    let s1 = Reviewer {
        employee_id: "S1".into(),
        security_officer: true,
    };
    assert_eq!(
        decide(&mut p, &s1, Verdict::Certify, "", now).unwrap(),
        Decided::Certified
    );
}

#[test]
fn unanswered_items_take_the_level_default_but_protected_people_keep_theirs() {
    let policy = Policy::parse("").unwrap();
    let none = BTreeSet::new();
    let i = item(Classification::Internal, ReviewerStrategy::Manager);
    assert_eq!(unanswered(&policy, &i, false, &none), ItemState::Flagged);
    let c = item(Classification::Confidential, ReviewerStrategy::Manager);
    assert_eq!(unanswered(&policy, &c, false, &none), ItemState::Revoked);
    let protected: BTreeSet<String> = ["E1".to_string()].into();
    assert_eq!(
        unanswered(&policy, &c, false, &protected),
        ItemState::Flagged
    );
    let p = item(Classification::Public, ReviewerStrategy::Manager);
    assert_eq!(unanswered(&policy, &p, false, &none), ItemState::Kept);
    assert_eq!(
        unanswered(&policy, &p, true, &none),
        ItemState::Revoked,
        "mover reviews revoke"
    );
}

#[test]
fn recommendations_say_why() {
    let base = Context {
        source: SourceKind::Request,
        source_ref: "r",
        review_pending: false,
        approvers: &[],
        last_decision: None,
        peers_holding: 1,
        peers_total: 14,
        classification: Classification::Confidential,
    };
    assert_eq!(
        recommend(&base),
        (Recommendation::Revoke, "held by 1 of 14 peers".into())
    );
    let many = Context {
        peers_holding: 12,
        ..base.clone()
    };
    assert_eq!(recommend(&many).0, Recommendation::Certify);
    let imported = Context {
        source: SourceKind::Imported,
        ..base.clone()
    };
    assert_eq!(
        recommend(&imported),
        (
            Recommendation::LookClosely,
            "imported, never reviewed".into()
        )
    );
    let moved = Context {
        review_pending: true,
        source: SourceKind::Birthright,
        ..base.clone()
    };
    assert_eq!(
        recommend(&moved),
        (Recommendation::LookClosely, "kept after a move".into())
    );
}

#[test]
fn physical_areas_are_reviewed_at_least_yearly() {
    let doc = r#"
[levels.internal]
review_every_months = 24
[[systems]]
id = "site"
kind = "physical_site"
owner = "O"
[[entitlements]]
id = "floor"
system = "site"
classification = "internal"
kind = "physical_area"
[[campaigns]]
id = "areas"
kinds = ["physical_area"]
[[campaigns]]
id = "manual"
scheduled = false
"#;
    let p = Policy::parse(doc).unwrap();
    assert_eq!(p.campaigns[0].every_months(&p), Some(12));
    assert_eq!(p.campaigns[1].every_months(&p), None);
    let bad = Policy::parse("[[campaigns]]\nid = \"x\"\nsystems = [\"nope\"]\nduration_days = 0\n")
        .unwrap_err();
    assert!(bad.violations.len() >= 2, "{bad:?}");
}

#[test]
fn a_reassignment_names_every_problem_at_once() {
    let i = item(Classification::Confidential, ReviewerStrategy::Manager);
    let fields = |to: &str, reason: &str| -> Vec<String> {
        check_reassign(&i, to, reason)
            .err()
            .map(|e| e.violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    };
    assert_eq!(fields("E1", " "), ["to", "reason"]);
    assert_eq!(fields("E1", &"x".repeat(5000)), ["to", "reason"]);
    assert_eq!(fields("O1", ""), ["reason"]);
    assert!(fields("O1", "knows the ledger").is_empty());
}
