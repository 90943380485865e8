//! Access requests, approval steps, time-bound grants, separation of duties
//! and manual revocation (issue 10), through the application services on
//! both backends, plus a random-sequence oracle for the hard rules.

use crate::common::*;
use idgov_authz::{Caller, Role, Rpc, check_rpc};
use idgov_domain::access::{AccessRequest, RequestState, StepState, TargetKind};
use idgov_domain::grant::{RevokeReason, SourceKind};
use idgov_domain::hr::EventKind;
use idgov_domain::identity::AttributesPatch;
use idgov_domain::{Classification, ErrorCode};
use idgov_server::app::access::{CreateRequest, RequestView};
use idgov_server::{App, AppError};
use idgov_store::AuditFilter;
use idgov_tests::backends::TestStore;
use idgov_tests::both_backends;
use std::sync::Arc;

/// [`POLICY`] with requestable entitlements, a separation-of-duties rule
/// and a fallback approver. Owners: O1 (app), O2 (site).
pub(crate) fn access_policy() -> String {
    let requestable = POLICY
        .replace(
            "classification = \"confidential\"\nkind = \"ldap_group\"",
            "classification = \"confidential\"\nkind = \"ldap_group\"\nrequestable = true",
        )
        .replace(
            "classification = \"restricted\"\nkind = \"physical_area\"",
            "classification = \"restricted\"\nkind = \"physical_area\"\nrequestable = true",
        );
    format!(
        "{requestable}
[requests]
fallback_approver = \"F1\"

[[entitlements]]
id = \"chat\"
system = \"app\"
classification = \"internal\"
kind = \"app_role\"
requestable = true

[[entitlements]]
id = \"newsletter\"
system = \"app\"
classification = \"public\"
kind = \"app_role\"
requestable = true

[[entitlements]]
id = \"payments\"
system = \"app\"
classification = \"confidential\"
kind = \"app_role\"
requestable = true

[[entitlements]]
id = \"approve-payments\"
system = \"app\"
classification = \"confidential\"
kind = \"app_role\"
requestable = true

[[sod]]
id = \"payments-four-eyes\"
description = \"whoever enters payments does not approve them\"
entitlements = [\"payments\", \"approve-payments\"]
severity = \"high\"
"
    )
}

/// The organisation: B1 at the top; O1 (no manager), O2, F1, M1, S1, S2
/// under B1; E1, E2, E3 under M1. E1 and O2 are cleared for restricted
/// access.
pub(crate) async fn org(t: &TestStore) -> (Arc<App>, Arc<idgov_server::ManualClock>) {
    let (app, clock) = app_on(t).await;
    hire(&app, &Person::new("B1", "Management")).await;
    hire(&app, &Person::new("O1", "Management")).await;
    for id in ["O2", "F1", "M1", "S1", "S2"] {
        let mut p = Person::new(id, "Management");
        p.manager = Some("B1");
        if id == "O2" {
            p.clearance = Classification::Restricted;
        }
        hire(&app, &p).await;
    }
    for id in ["E1", "E2", "E3"] {
        let mut p = Person::new(id, "Engineering");
        p.manager = Some("M1");
        if id == "E1" {
            p.clearance = Classification::Restricted;
        }
        hire(&app, &p).await;
    }
    app.apply_policy(&access_policy(), false, "access policy", "user:admin")
        .await
        .expect("policy applies");
    (app, clock)
}

pub(crate) fn caller(id: &str, roles: &[Role]) -> Caller {
    Caller {
        subject: id.to_lowercase(),
        employee_id: Some(id.to_string()),
        roles: roles.iter().copied().collect(),
        method: "test".into(),
    }
}

/// What `id` (with `roles`) may do for `rpc`, as the API would decide.
pub(crate) fn acc(id: &str, roles: &[Role], rpc: Rpc) -> idgov_authz::Access {
    check_rpc(&caller(id, roles), rpc).expect("the table lets this caller in")
}

pub(crate) fn ask(
    beneficiary: &str,
    kind: TargetKind,
    target: &str,
    why: &str,
    days: Option<u32>,
) -> CreateRequest {
    CreateRequest {
        beneficiary: beneficiary.into(),
        target_kind: Some(kind),
        target_id: target.into(),
        justification: why.into(),
        duration_days: days,
        extends_grant_id: None,
    }
}

pub(crate) async fn request(
    app: &App,
    by: &str,
    new: CreateRequest,
) -> Result<AccessRequest, AppError> {
    app.create_request(&acc(by, &[], Rpc::CreateAccessRequest), new)
        .await
}

pub(crate) async fn approve(
    app: &App,
    by: &str,
    roles: &[Role],
    id: &str,
) -> Result<AccessRequest, AppError> {
    app.decide_request(&acc(by, roles, Rpc::ApproveAccessRequest), id, true, "ok")
        .await
}

async fn deny(app: &App, by: &str, id: &str, comment: &str) -> Result<AccessRequest, AppError> {
    app.decide_request(&acc(by, &[], Rpc::DenyAccessRequest), id, false, comment)
        .await
}

pub(crate) fn code(e: &AppError) -> Option<ErrorCode> {
    match e {
        AppError::Domain(d) => Some(d.code),
        AppError::PermissionDenied(_) => Some(ErrorCode::PermissionDenied),
        _ => None,
    }
}

pub(crate) fn field_of(e: &AppError) -> String {
    match e {
        AppError::Domain(d) => d
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

pub(crate) async fn audit_count(app: &App, action: &str, target: &str) -> usize {
    let f = AuditFilter {
        action: action.into(),
        target: target.into(),
        ..Default::default()
    };
    app.store
        .list_audit_events(&f, 0, 10_000)
        .await
        .unwrap()
        .len()
}

pub(crate) async fn grant_of(
    app: &App,
    who: &str,
    ent: &str,
    include_revoked: bool,
) -> Option<idgov_domain::grant::Grant> {
    app.store
        .list_grants(who, include_revoked, "", 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(g, _)| g)
        .filter(|g| g.entitlement_id == ent)
        .max_by_key(|g| g.granted_at)
}

pub(crate) const SEC: &[Role] = &[Role::SecurityOfficer];

both_backends! {
    async fn a_restricted_request_takes_three_approvals_in_order(t: TestStore) {
        let (app, _) = org(&t).await;
        let r = request(&app, "E1", ask("", TargetKind::Entitlement, "vault", "night shift in the vault", Some(30))).await.unwrap();
        assert_eq!(r.state, RequestState::Pending);
        let assignees: Vec<&str> = r.steps.iter().map(|s| s.assignee.as_str()).collect();
        assert_eq!(assignees, ["M1", "O2", "@security"], "manager, owner, security");
        // Waiting for M1 only.
        let mine = app.requests(&acc("M1", &[], Rpc::ListAccessRequests), RequestView::WaitingForMe, None, None, "", 100).await.unwrap();
        assert_eq!(mine.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [r.id.as_str()]);
        let o2 = app.requests(&acc("O2", &[], Rpc::ListAccessRequests), RequestView::WaitingForMe, None, None, "", 100).await.unwrap();
        assert!(o2.is_empty(), "the owner's step is not open yet");
        // Out of order: refused.
        assert_eq!(code(&approve(&app, "O2", &[], &r.id).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        assert_eq!(code(&approve(&app, "S1", SEC, &r.id).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        let r1 = approve(&app, "M1", &[], &r.id).await.unwrap();
        assert_eq!((r1.state, r1.steps[0].state, r1.steps[1].state), (RequestState::Pending, StepState::Approved, StepState::Open));
        assert!(active_grants(&app, "E1").await.iter().all(|e| e != "vault"), "no grant before the last step");
        approve(&app, "O2", &[], &r.id).await.unwrap();
        let queue = app.requests(&acc("S2", SEC, Rpc::ListAccessRequests), RequestView::WaitingForMe, None, None, "", 100).await.unwrap();
        assert_eq!(queue.len(), 1, "the security step is in every officer's queue");
        let done = approve(&app, "S1", SEC, &r.id).await.unwrap();
        assert_eq!(done.state, RequestState::Approved);
        assert_eq!(done.approvers(), ["M1", "O2", "S1"]);
        let g = grant_of(&app, "E1", "vault", false).await.expect("vault granted");
        assert_eq!((g.source, g.source_ref.as_str()), (SourceKind::Request, r.id.as_str()));
        assert_eq!(g.approvers, ["M1", "O2", "S1"]);
        assert_eq!(g.justification, "night shift in the vault");
        assert_eq!(g.expires_at, Some(app.now() + days(30)));
        assert_eq!(done.grant_ids, std::slice::from_ref(&g.id));
        let target = format!("request:{}", r.id);
        assert_eq!(audit_count(&app, "access.request.created", &target).await, 1);
        assert_eq!(audit_count(&app, "access.request.step_approved", &target).await, 3, "one per step");
        assert_eq!(audit_count(&app, "access.request.approved", &target).await, 1);
        // Decided once: a late approval is refused.
        assert_eq!(code(&approve(&app, "S2", SEC, &r.id).await.unwrap_err()), Some(ErrorCode::FailedPrecondition));
        // Refusals at creation, each with its reason.
        let e = request(&app, "E1", ask("", TargetKind::Entitlement, "vault", "again", Some(30))).await.unwrap_err();
        assert!(field_of(&e).contains("already holds"), "{e}");
        let e = request(&app, "E2", ask("", TargetKind::Entitlement, "vault", "please", Some(30))).await.unwrap_err();
        assert!(field_of(&e).starts_with("beneficiary"), "above E2's ceiling: {e}");
        let e = request(&app, "E2", ask("", TargetKind::Entitlement, "ledger", "", Some(30))).await.unwrap_err();
        assert!(field_of(&e).starts_with("justification"), "{e}");
        let e = request(&app, "E2", ask("", TargetKind::Entitlement, "ledger", "books", Some(181))).await.unwrap_err();
        assert!(field_of(&e).starts_with("duration_days"), "{e}");
        let e = request(&app, "E2", ask("", TargetKind::Entitlement, "ledger", "books", None)).await.unwrap_err();
        assert!(field_of(&e).starts_with("duration_days"), "confidential access is capped, so a duration is required: {e}");
        let e = request(&app, "E2", ask("", TargetKind::Entitlement, "wiki", "", None)).await.unwrap_err();
        assert!(field_of(&e).contains("target_id"), "wiki is not requestable: {e}");
        request(&app, "E2", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap();
        let e = request(&app, "E2", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::FailedPrecondition), "an open request for the same thing: {e}");
        // Public access needs no approval: granted as asked.
        let n = request(&app, "E2", ask("", TargetKind::Entitlement, "newsletter", "", None)).await.unwrap();
        assert_eq!(n.state, RequestState::Approved);
        assert!(active_grants(&app, "E2").await.contains(&"newsletter".to_string()));
    }
}

both_backends! {
    async fn nobody_approves_their_own_request_in_any_disguise(t: TestStore) {
        let (app, _) = org(&t).await;
        // A manager asking for a report: their own manager step goes up.
        let r = request(&app, "M1", ask("E1", TargetKind::Entitlement, "ledger", "month-end close", Some(10))).await.unwrap();
        assert_eq!(r.steps[0].assignee, "B1");
        assert!(r.steps[0].note.contains("M1"), "the step says why: {}", r.steps[0].note);
        assert_eq!(code(&approve(&app, "M1", &[], &r.id).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        // The beneficiary cannot approve either, even as a security officer.
        assert_eq!(code(&approve(&app, "E1", SEC, &r.id).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        // Not a direct report: hidden, as if E2 did not exist.
        let e = request(&app, "E1", ask("E2", TargetKind::Entitlement, "chat", "", None)).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied));
        let e = request(&app, "E1", ask("NOBODY", TargetKind::Entitlement, "chat", "", None)).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "unknown and unreachable answer alike");
        // An owner asking for their own entitlement: the owner step goes
        // up (O1 has no manager: the fallback approver).
        let mine = request(&app, "O2", ask("", TargetKind::Entitlement, "vault", "own keys", Some(5))).await.unwrap();
        assert_eq!(mine.steps.iter().map(|s| s.assignee.as_str()).collect::<Vec<_>>(), ["B1", "F1", "@security"]);
        assert!(mine.steps[1].note.contains("O2 may not approve"), "{}", mine.steps[1].note);
        assert_eq!(code(&approve(&app, "O2", SEC, &mine.id).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        // O1 has no manager and the fallback approver fills the manager
        // step already: nobody may decide the owner step, so it is refused.
        let e = request(&app, "O1", ask("", TargetKind::Entitlement, "ledger", "own books", Some(5))).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::FailedPrecondition), "{e}");
        // A security officer asking for themselves: the security step is
        // decided by another officer.
        let own = request(&app, "S1", ask("", TargetKind::Entitlement, "ledger", "audit prep", Some(5))).await.unwrap();
        assert_eq!(own.steps[0].assignee, "B1");
        assert_eq!(code(&approve(&app, "S1", SEC, &own.id).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        // The same person never fills two steps: M1 is a security officer
        // too, approves as manager, and may not approve the security step.
        let v = request(&app, "E1", ask("", TargetKind::Entitlement, "vault", "inventory", Some(7))).await.unwrap();
        approve(&app, "M1", SEC, &v.id).await.unwrap();
        approve(&app, "O2", &[], &v.id).await.unwrap();
        assert_eq!(code(&approve(&app, "M1", SEC, &v.id).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        // A stranger cannot even see the request.
        let e = app.request(&acc("E3", &[], Rpc::GetAccessRequest), &v.id).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied));
        // A denial needs a comment and ends the request.
        assert_eq!(code(&deny(&app, "S2", &v.id, "").await.unwrap_err()), Some(ErrorCode::PermissionDenied), "S2 without the role is not the step's assignee");
        let e = app.decide_request(&acc("S2", SEC, Rpc::DenyAccessRequest), &v.id, false, "").await.unwrap_err();
        assert!(field_of(&e).starts_with("comment"), "{e}");
        let d = app.decide_request(&acc("S2", SEC, Rpc::DenyAccessRequest), &v.id, false, "no vault work this month").await.unwrap();
        assert_eq!(d.state, RequestState::Denied);
        assert!(grant_of(&app, "E1", "vault", true).await.is_none());
    }
}

both_backends! {
    async fn two_approvers_racing_on_one_step_one_wins(t: TestStore) {
        let (app, _) = org(&t).await;
        for round in 0..4 {
            let r = request(&app, "E1", ask("", TargetKind::Entitlement, "vault", "stocktake", Some(3))).await.unwrap();
            approve(&app, "M1", &[], &r.id).await.unwrap();
            approve(&app, "O2", &[], &r.id).await.unwrap();
            let (a, b) = tokio::join!(approve(&app, "S1", SEC, &r.id), approve(&app, "S2", SEC, &r.id));
            let wins = [&a, &b].iter().filter(|x| x.is_ok()).count();
            assert_eq!(wins, 1, "round {round}: exactly one approval wins ({a:?} / {b:?})");
            let loser = match (a, b) {
                (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
                other => panic!("round {round}: {other:?}"),
            };
            assert_eq!(code(&loser), Some(ErrorCode::FailedPrecondition), "round {round}: {loser}");
            let grants = app.store.list_grants("E1", true, "", 1000).await.unwrap();
            assert_eq!(grants.iter().filter(|(g, _)| g.source_ref == r.id).count(), 1, "one grant per request");
            // Revoke it so the next round can ask again.
            let g = grant_of(&app, "E1", "vault", false).await.unwrap();
            app.revoke_grant(&acc("A1", &[Role::ItAdmin], Rpc::RevokeGrant), &g.id, "next round").await.unwrap();
        }
    }
}

both_backends! {
    async fn the_final_approval_checks_the_ceiling_again(t: TestStore) {
        let (app, _) = org(&t).await;
        let r = request(&app, "E1", ask("", TargetKind::Entitlement, "vault", "stocktake", Some(3))).await.unwrap();
        approve(&app, "M1", &[], &r.id).await.unwrap();
        approve(&app, "O2", &[], &r.id).await.unwrap();
        // Meanwhile HR lowers E1's clearance.
        let down = AttributesPatch { clearance: Some(Classification::Confidential), ..Default::default() };
        app.submit_event(event(&app, EventKind::Update, "down-1", "E1", "", down), "service:hr").await.unwrap();
        let e = approve(&app, "S1", SEC, &r.id).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::FailedPrecondition), "{e}");
        let after = app.request(&acc("S1", SEC, Rpc::GetAccessRequest), &r.id).await.unwrap();
        assert_eq!(after.state, RequestState::Cancelled);
        assert!(after.reason.contains("ceiling") || after.reason.contains("clearance"), "{}", after.reason);
        assert!(grant_of(&app, "E1", "vault", true).await.is_none(), "nothing granted");
    }
}

both_backends! {
    async fn leavers_requests_are_cancelled_and_their_steps_move_on(t: TestStore) {
        let (app, _) = org(&t).await;
        let a = request(&app, "E1", ask("", TargetKind::Entitlement, "ledger", "books", Some(30))).await.unwrap();
        let b = request(&app, "E2", ask("", TargetKind::Entitlement, "ledger", "books", Some(30))).await.unwrap();
        approve(&app, "M1", &[], &b.id).await.unwrap();
        assert_eq!(b.steps[1].assignee, "O1");
        let c = request(&app, "E3", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap();
        // M1 (manager step of A) and O1 (owner step of B, no manager) leave.
        for who in ["M1", "O1"] {
            app.submit_event(event(&app, EventKind::Terminate, &format!("t-{who}"), who, "", AttributesPatch::default()), "service:hr").await.unwrap();
        }
        let s1 = acc("S1", SEC, Rpc::GetAccessRequest);
        let a2 = app.request(&s1, &a.id).await.unwrap();
        assert_eq!(a2.steps[0].assignee, "B1", "to the leaver's manager");
        assert!(a2.steps[0].note.contains("M1"), "{}", a2.steps[0].note);
        let b2 = app.request(&s1, &b.id).await.unwrap();
        assert_eq!(b2.steps[1].assignee, "F1", "nobody above O1: the fallback approver");
        assert!(audit_count(&app, "access.request.reassigned", &format!("request:{}", a.id)).await >= 1);
        assert!(audit_count(&app, "access.request.reassigned", &format!("request:{}", b.id)).await >= 1);
        approve(&app, "F1", &[], &b.id).await.unwrap();
        assert!(active_grants(&app, "E2").await.contains(&"ledger".to_string()));
        // The beneficiary leaves: their open requests are cancelled.
        app.submit_event(event(&app, EventKind::Terminate, "t-E3", "E3", "", AttributesPatch::default()), "service:hr").await.unwrap();
        let c2 = app.request(&s1, &c.id).await.unwrap();
        assert_eq!(c2.state, RequestState::Cancelled);
        let e = approve(&app, "B1", &[], &c.id).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::FailedPrecondition), "approving for a leaver: {e}");
        assert!(grant_of(&app, "E3", "chat", true).await.is_none());
        assert_eq!(audit_count(&app, "access.request.cancelled", &format!("request:{}", c.id)).await, 1);
    }
}

both_backends! {
    /// Half the time to expiry gone with nobody deciding: one reminder to
    /// whoever must decide; three quarters gone: one escalation to their
    /// manager. Once each, with two replicas sweeping; none after expiry.
    async fn approvers_are_reminded_then_escalated_once(t: TestStore) {
        let (a, clock) = org(&t).await;
        let r = request(&a, "E2", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap();
        assert_eq!(r.expires_at, a.now() + days(14));
        let waiting = r.waiting_on().unwrap().to_string();
        let store_b = idgov_store::Store::open(&t.url).await.unwrap();
        let b = App::start(store_b, clock.clone(), None).await.unwrap();
        clock.advance(days(6));
        let s = a.run_access_expiry().await.unwrap();
        assert_eq!((s.requests_reminded, s.requests_escalated), (0, 0), "not yet");
        clock.advance(days(2)); // 8 of 14 days
        let (x, y) = tokio::join!(a.run_access_expiry(), b.run_access_expiry());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.requests_reminded + y.requests_reminded, 1, "{x:?} {y:?}");
        assert_eq!(x.requests_escalated + y.requests_escalated, 0, "{x:?} {y:?}");
        assert_eq!(a.run_access_expiry().await.unwrap().requests_reminded, 0, "once");
        clock.advance(days(3)); // 11 of 14
        let (x, y) = tokio::join!(a.run_access_expiry(), b.run_access_expiry());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.requests_escalated + y.requests_escalated, 1, "{x:?} {y:?}");
        assert_eq!(x.requests_reminded + y.requests_reminded, 0, "{x:?} {y:?}");
        let target = format!("request:{}", r.id);
        let events = a
            .audit_events(&idgov_store::AuditFilter { target: target.clone(), ..Default::default() }, 0, 100)
            .await
            .unwrap();
        let reminder = events.iter().find(|e| e.action == "access.request.reminder").unwrap();
        let detail: serde_json::Value = serde_json::from_str(&reminder.detail).unwrap();
        assert_eq!(detail["waiting_on"], waiting.as_str());
        assert!(reminder.security, "a notification subscribers of `security` hear of");
        let escalation = events.iter().find(|e| e.action == "access.request.escalation").unwrap();
        let detail: serde_json::Value = serde_json::from_str(&escalation.detail).unwrap();
        let manager = a.store.get_identity(&waiting).await.unwrap().and_then(|p| p.attrs.manager_id);
        let expected = manager.or_else(|| a.policy().policy.fallback_approver.clone());
        assert_eq!(detail["escalated_to"].as_str(), expected.as_deref(), "{detail}");
        // Past expiry: expired, nothing more to remind.
        clock.advance(days(4));
        let s = a.run_access_expiry().await.unwrap();
        assert_eq!((s.requests_expired, s.requests_reminded, s.requests_escalated), (1, 0, 0));
        assert_eq!(audit_count(&a, "access.request.reminder", &target).await, 1);
        assert_eq!(audit_count(&a, "access.request.escalation", &target).await, 1);
    }

    async fn requests_and_grants_expire_exactly_once_across_replicas(t: TestStore) {
        let (a, clock) = org(&t).await;
        let r = request(&a, "E1", ask("", TargetKind::Entitlement, "chat", "", Some(3))).await.unwrap();
        approve(&a, "M1", &[], &r.id).await.unwrap();
        let g = grant_of(&a, "E1", "chat", false).await.unwrap();
        assert_eq!(g.expires_at, Some(a.now() + days(3)));
        let stale = request(&a, "E2", ask("", TargetKind::Entitlement, "chat", "", None)).await.unwrap();
        assert_eq!(stale.expires_at, a.now() + days(14), "the default request expiry");
        // The notice before: within 5 days, not within 1.
        let e1 = acc("E1", &[], Rpc::ListExpiringGrants);
        assert_eq!(a.expiring_grants(&e1, "", 5, None, 100).await.unwrap().len(), 1);
        assert!(a.expiring_grants(&e1, "", 1, None, 100).await.unwrap().is_empty());
        let e = a.expiring_grants(&e1, "E2", 5, None, 100).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied), "someone else's grants are out of reach");
        // Both replicas sweep after a long pause (a restart that missed it).
        let store_b = idgov_store::Store::open(&t.url).await.unwrap();
        let b = App::start(store_b, clock.clone(), None).await.unwrap();
        clock.advance(days(20));
        let (x, y) = tokio::join!(a.run_access_expiry(), b.run_access_expiry());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.grants_expired + y.grants_expired, 1, "{x:?} {y:?}");
        assert_eq!(x.requests_expired + y.requests_expired, 1, "{x:?} {y:?}");
        let g2 = grant_of(&a, "E1", "chat", true).await.unwrap();
        assert_eq!(g2.revoke_reason, Some(RevokeReason::Expired));
        assert_eq!(audit_count(&a, "grant.revoked", &format!("grant:{}", g.id)).await, 1);
        let s = a.request(&acc("S1", SEC, Rpc::GetAccessRequest), &stale.id).await.unwrap();
        assert_eq!(s.state, RequestState::Expired);
        // Nothing left to do.
        assert_eq!(a.run_access_expiry().await.unwrap(), Default::default());
        // An expired request can no longer be approved.
        assert_eq!(code(&approve(&a, "M1", &[], &stale.id).await.unwrap_err()), Some(ErrorCode::FailedPrecondition));
    }
}

both_backends! {
    async fn an_extension_is_a_new_request_with_the_same_steps(t: TestStore) {
        let (app, clock) = org(&t).await;
        let r = request(&app, "E1", ask("", TargetKind::Entitlement, "ledger", "books", Some(10))).await.unwrap();
        approve(&app, "M1", &[], &r.id).await.unwrap();
        approve(&app, "O1", &[], &r.id).await.unwrap();
        let g = grant_of(&app, "E1", "ledger", false).await.unwrap();
        clock.advance(days(8));
        let mut ext = ask("", TargetKind::Entitlement, "ledger", "books, two more weeks", Some(14));
        ext.extends_grant_id = Some(g.id.clone());
        let x = request(&app, "E1", ext).await.unwrap();
        assert_eq!(x.steps.iter().map(|s| s.assignee.as_str()).collect::<Vec<_>>(), ["M1", "O1"]);
        approve(&app, "M1", &[], &x.id).await.unwrap();
        approve(&app, "O1", &[], &x.id).await.unwrap();
        let g2 = grant_of(&app, "E1", "ledger", false).await.unwrap();
        assert_eq!(g2.id, g.id, "the same grant, extended");
        assert_eq!(g2.expires_at, Some(app.now() + days(14)));
        clock.advance(days(5));
        assert_eq!(app.run_access_expiry().await.unwrap().grants_expired, 0, "the old end has passed, the new one not");
        assert_eq!(audit_count(&app, "grant.extended", &format!("grant:{}", g.id)).await, 1);
    }
}

both_backends! {
    async fn a_sod_conflict_needs_an_exception_whose_end_revokes_the_grant(t: TestStore) {
        let (app, clock) = org(&t).await;
        let p = request(&app, "E2", ask("", TargetKind::Entitlement, "payments", "enter invoices", Some(90))).await.unwrap();
        approve(&app, "M1", &[], &p.id).await.unwrap();
        approve(&app, "O1", &[], &p.id).await.unwrap();
        let e = request(&app, "E2", ask("", TargetKind::Entitlement, "approve-payments", "cover", Some(30))).await.unwrap_err();
        assert!(field_of(&e).contains("payments-four-eyes"), "{e}");
        // Exceptions: security officers only, never for themselves, with a
        // justification, within the level's maximum.
        let sec = acc("S1", SEC, Rpc::GrantSodException);
        let e = app.grant_sod_exception(&acc("M1", &[Role::ItAdmin], Rpc::ListSodExceptions), "E2", "payments-four-eyes", "cover", 10).await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied));
        assert_eq!(code(&app.grant_sod_exception(&sec, "S1", "payments-four-eyes", "me", 10).await.unwrap_err()), Some(ErrorCode::PermissionDenied));
        assert!(app.grant_sod_exception(&sec, "E2", "payments-four-eyes", "", 10).await.is_err(), "justification required");
        assert!(app.grant_sod_exception(&sec, "E2", "payments-four-eyes", "cover", 181).await.is_err(), "capped");
        assert!(app.grant_sod_exception(&sec, "E2", "no-such-rule", "cover", 10).await.is_err());
        // Every problem at once.
        let e = app.grant_sod_exception(&sec, "E2", "no-such-rule", " ", 0).await.unwrap_err();
        let fields: Vec<String> = match &e {
            AppError::Domain(d) => d.violations.iter().map(|v| v.field.clone()).collect(),
            other => panic!("{other}"),
        };
        assert_eq!(fields, ["rule_id", "justification", "days"], "{e}");
        let x = app.grant_sod_exception(&sec, "E2", "payments-four-eyes", "holiday cover for M1's team", 10).await.unwrap();
        let r = request(&app, "E2", ask("", TargetKind::Entitlement, "approve-payments", "holiday cover", Some(30))).await.unwrap();
        assert_eq!(r.sod_exception_id.as_deref(), Some(x.id.as_str()));
        approve(&app, "M1", &[], &r.id).await.unwrap();
        approve(&app, "O1", &[], &r.id).await.unwrap();
        let g = grant_of(&app, "E2", "approve-payments", false).await.unwrap();
        assert_eq!(g.exception_id.as_deref(), Some(x.id.as_str()));
        // The detective check does not report a conflict the exception allows.
        let c = app.run_sod_check("user:S1").await.unwrap();
        assert_eq!(c.open, 0, "{c:?}");
        clock.advance(days(11));
        let s = app.run_access_expiry().await.unwrap();
        assert_eq!((s.exceptions_expired, s.grants_revoked_sod), (1, 1), "{s:?}");
        let g2 = grant_of(&app, "E2", "approve-payments", true).await.unwrap();
        assert_eq!(g2.revoke_reason, Some(RevokeReason::Sod));
        assert!(active_grants(&app, "E2").await.contains(&"payments".to_string()), "the other side stays");
        assert_eq!(audit_count(&app, "sod.exception.expired", "").await, 1);
    }
}

both_backends! {
    async fn the_detective_check_finds_existing_conflicts_and_the_impact_foretells_them(t: TestStore) {
        let (app, _) = org(&t).await;
        // Finance gets both sides by birthright, before any rule exists.
        let base = access_policy().replace("[[sod]]", "[[ignored]]");
        let base = base.split("[[ignored]]").next().unwrap().to_string();
        let both = format!("{base}\n[[roles]]\nid = \"payables\"\nentitlements = [\"payments\", \"approve-payments\"]\n\n[[birthright]]\nrole = \"payables\"\nwhen = {{ department = \"Finance\" }}\n");
        app.apply_policy(&both, false, "payables", "user:admin").await.unwrap();
        for id in ["P1", "P2", "P3"] {
            hire(&app, &Person::new(id, "Finance")).await;
        }
        let ruled = format!("{both}\n[[sod]]\nid = \"four-eyes\"\nentitlements = [\"payments\", \"approve-payments\"]\nseverity = \"medium\"\n");
        let dry = app.apply_policy(&ruled, true, "add four-eyes", "user:admin").await.unwrap();
        assert_eq!(dry.impact.sod_conflicts, 3, "{:?}", dry.impact);
        assert!(dry.impact.sod_examples.iter().any(|e| e.contains("P1") && e.contains("four-eyes")), "{:?}", dry.impact.sod_examples);
        app.apply_policy(&ruled, false, "add four-eyes", "user:admin").await.unwrap();
        let c = app.run_sod_check("user:S1").await.unwrap();
        assert_eq!((c.open, c.new), (3, 3), "{c:?}");
        let v = app.sod_violations(false, ("", ""), 100).await.unwrap();
        assert_eq!(v.iter().map(|v| v.employee_id.as_str()).collect::<Vec<_>>(), ["P1", "P2", "P3"]);
        assert_eq!(v[0].entitlements, ["approve-payments", "payments"]);
        let events = app.store.list_audit_events(&AuditFilter { action: "sod.violation".into(), ..Default::default() }, 0, 100).await.unwrap();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.security), "raised as security events");
        // Again: nothing new, nothing raised twice.
        let again = app.run_sod_check("user:S1").await.unwrap();
        assert_eq!((again.open, again.new), (3, 0));
        // P2 moves out of Finance: resolved.
        app.submit_event(event(&app, EventKind::Update, "mv-P2", "P2", "", AttributesPatch { department: Some("Sales".into()), ..Default::default() }), "service:hr").await.unwrap();
        let after = app.run_sod_check("user:S1").await.unwrap();
        assert_eq!((after.open, after.resolved), (2, 1), "{after:?}");
        assert_eq!(app.sod_violations(true, ("", ""), 100).await.unwrap().iter().filter(|v| v.resolved_at.is_some()).count(), 1);
    }
}

both_backends! {
    async fn a_hand_revoked_birthright_stays_revoked_until_the_person_changes(t: TestStore) {
        let (app, _) = org(&t).await;
        let mut p = Person::new("F9", "Finance");
        p.manager = Some("M1");
        hire(&app, &p).await;
        let g = grant_of(&app, "F9", "ledger", false).await.expect("birthright ledger");
        // Not the owner, not an admin: hidden. The owner without a reason: refused.
        let e = app.revoke_grant(&acc("E1", &[], Rpc::RevokeGrant), &g.id, "why not").await.unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::PermissionDenied));
        let owner = acc("O1", &[], Rpc::RevokeGrant);
        assert!(field_of(&app.revoke_grant(&owner, &g.id, " ").await.unwrap_err()).starts_with("reason"));
        let r = app.revoke_grant(&owner, &g.id, "no ledger work in this team").await.unwrap();
        assert_eq!(r.revoke_reason, Some(RevokeReason::Manual));
        assert_eq!(code(&app.revoke_grant(&owner, &g.id, "again").await.unwrap_err()), Some(ErrorCode::FailedPrecondition));
        // An unrelated policy edit and an event that changes nothing leave it
        // revoked.
        let edited = format!("{}\n[[roles]]\nid = \"spare\"\nentitlements = [\"chat\"]\n", access_policy());
        app.apply_policy(&edited, false, "edit", "user:admin").await.unwrap();
        app.submit_event(event(&app, EventKind::Hire, "hire-F9-dup", "F9", "", p.patch()), "service:hr").await.unwrap();
        assert!(!active_grants(&app, "F9").await.contains(&"ledger".to_string()));
        // A move out and back is a change of the person: given back.
        for (i, dept) in ["Sales", "Finance"].iter().enumerate() {
            app.submit_event(event(&app, EventKind::Update, &format!("mv-{i}"), "F9", "", AttributesPatch { department: Some((*dept).into()), ..Default::default() }), "service:hr").await.unwrap();
        }
        assert!(active_grants(&app, "F9").await.contains(&"ledger".to_string()));
        // Revoked again; a change to the rule that gives it gives it back.
        let g = grant_of(&app, "F9", "ledger", false).await.unwrap();
        app.revoke_grant(&owner, &g.id, "again").await.unwrap();
        app.apply_policy(&edited, false, "same", "user:admin").await.unwrap();
        assert!(!active_grants(&app, "F9").await.contains(&"ledger".to_string()));
        let widened = edited.replace("when = { department = \"Finance\" }", "when = { department = [\"Finance\", \"Accounting\"] }");
        assert_ne!(widened, edited);
        app.apply_policy(&widened, false, "finance birthright widened", "user:admin").await.unwrap();
        assert!(active_grants(&app, "F9").await.contains(&"ledger".to_string()), "the rule changed: birthright applies again");
    }
}

both_backends! {
    async fn hostile_justifications_are_refused_or_kept_verbatim(t: TestStore) {
        let (app, _) = org(&t).await;
        for bad in ["x".repeat(10_000), "books\0".into(), "\u{202e}gnp.exe".into()] {
            let e = request(&app, "E1", ask("", TargetKind::Entitlement, "ledger", &bad, Some(5))).await.unwrap_err();
            assert_eq!(code(&e), Some(ErrorCode::InvalidArgument), "{e}");
        }
        let markup = "<script>alert(1)</script> & ' \" ${jndi:ldap://x} )(uid=*)";
        let r = request(&app, "E1", ask("", TargetKind::Entitlement, "ledger", markup, Some(5))).await.unwrap();
        let back = app.request(&acc("E1", &[], Rpc::GetAccessRequest), &r.id).await.unwrap();
        assert_eq!(back.justification, markup, "stored as given; escaping is the viewer's job");
        for bad_target in ["", "ledger\0", "l".repeat(300).as_str()] {
            assert!(request(&app, "E1", ask("", TargetKind::Entitlement, bad_target, "x", Some(5))).await.is_err());
        }
        let mut no_kind = ask("", TargetKind::Entitlement, "ledger", "x", Some(5));
        no_kind.target_kind = None;
        assert!(field_of(&request(&app, "E1", no_kind).await.unwrap_err()).starts_with("target_kind"));
        // Every problem with a request's shape is named in one answer.
        let mut all_wrong = ask("", TargetKind::Entitlement, "", &"x".repeat(5000), Some(0));
        all_wrong.target_kind = None;
        let e = request(&app, "E1", all_wrong).await.unwrap_err();
        let fields: Vec<String> = match &e {
            AppError::Domain(d) => d.violations.iter().map(|v| v.field.clone()).collect(),
            other => panic!("{other}"),
        };
        assert_eq!(fields, ["target_kind", "target_id", "justification", "duration_days"], "{e}");
        // A service (no person) cannot make requests.
        let svc = Caller { subject: "svc".into(), employee_id: None, roles: Default::default(), method: "test".into() };
        assert!(check_rpc(&svc, Rpc::CreateAccessRequest).is_err());
    }
}

/// A small random generator (no dependency, reproducible from the seed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

both_backends! {
    async fn random_decisions_never_break_the_hard_rules(t: TestStore) {
        let (app, _) = org(&t).await;
        let people = ["B1", "O1", "O2", "F1", "M1", "S1", "S2", "E1", "E2", "E3"];
        let targets = [("ledger", Some(5)), ("vault", Some(5)), ("chat", None), ("payments", Some(5)), ("approve-payments", Some(5))];
        let mut rng = Lcg(0x1d60_2026);
        let mut ids: Vec<String> = Vec::new();
        let mut step = 0;
        for _ in 0..240 {
            match rng.next(6) {
                4 => {
                    // HR: a move, a clearance change, or (rarely) a leaver.
                    let who = ["E1", "E2", "E3", "M1", "O2"][rng.next(5)];
                    step += 1;
                    let (kind, attrs) = match rng.next(6) {
                        0 => (EventKind::Terminate, AttributesPatch::default()),
                        1 | 2 => (EventKind::Move, AttributesPatch { department: Some(["Finance", "Sales", "Engineering"][rng.next(3)].into()), ..Default::default() }),
                        _ => (EventKind::Update, AttributesPatch { clearance: Some([Classification::Internal, Classification::Confidential, Classification::Restricted][rng.next(3)]), ..Default::default() }),
                    };
                    let _ = app.submit_event(event(&app, kind, &format!("rnd-{step}"), who, "", attrs), "service:hr").await;
                }
                5 if !ids.is_empty() => {
                    let id = ids[rng.next(ids.len())].clone();
                    let _ = app.cancel_request(&acc(people[rng.next(people.len())], &[], Rpc::CancelAccessRequest), &id, "random").await;
                }
                0 => {
                    let by = people[rng.next(people.len())];
                    let for_ = if rng.next(2) == 0 { "" } else { people[rng.next(people.len())] };
                    let (target, d) = targets[rng.next(targets.len())];
                    if let Ok(r) = request(&app, by, ask(for_, TargetKind::Entitlement, target, "random", d)).await {
                        ids.push(r.id);
                    }
                }
                _ if !ids.is_empty() => {
                    let id = ids[rng.next(ids.len())].clone();
                    // Half the time the step's assignee (or an officer for a
                    // security step), else anyone: wrong callers too.
                    let r = app.request(&acc("S1", SEC, Rpc::GetAccessRequest), &id).await.unwrap();
                    let who = match r.waiting_on() {
                        Some("@security") if rng.next(2) == 0 => ["S1", "S2", "M1"][rng.next(3)],
                        Some(a) if rng.next(2) == 0 => people.iter().find(|p| **p == a).copied().unwrap_or("B1"),
                        _ => people[rng.next(people.len())],
                    };
                    let roles: &[Role] = if who.starts_with('S') || rng.next(4) == 0 { SEC } else { &[] };
                    let yes = rng.next(5) != 0;
                    let _ = app.decide_request(&acc(who, roles, Rpc::ApproveAccessRequest), &id, yes, "random call").await;
                }
                _ => {}
            }
        }
        let all = app.requests(&acc("S1", SEC, Rpc::ListAccessRequests), RequestView::All, None, None, "", 1000).await.unwrap();
        assert!(all.iter().any(|r| r.state == RequestState::Approved), "the sequence reaches approvals");
        for r in &all {
            let deciders: Vec<&str> = r.steps.iter().filter_map(|s| s.decided_by.as_deref()).collect();
            let unique: std::collections::BTreeSet<&&str> = deciders.iter().collect();
            assert_eq!(unique.len(), deciders.len(), "{}: one person filled two steps", r.id);
            assert!(!deciders.contains(&r.requester.as_str()) && !deciders.contains(&r.beneficiary.as_str()), "{}: self-approval", r.id);
            // Steps are decided in order, once.
            let first_undecided = r.steps.iter().position(|s| s.decided_by.is_none()).unwrap_or(r.steps.len());
            assert!(r.steps[first_undecided..].iter().all(|s| s.decided_by.is_none()), "{}: out of order", r.id);
            let denied = r.steps.iter().filter(|s| s.state == StepState::Denied).count();
            match r.state {
                RequestState::Approved => {
                    assert!(r.steps.iter().all(|s| s.state == StepState::Approved));
                    assert_eq!(r.grant_ids.len(), r.entitlements.len());
                }
                RequestState::Denied => assert_eq!(denied, 1),
                RequestState::Pending => assert_eq!(denied, 0),
                _ => {}
            }
            let grants = app.store.list_grants(&r.beneficiary, true, "", 1000).await.unwrap();
            let made = grants.iter().filter(|(g, _)| g.source_ref == r.id).count();
            assert_eq!(made, if r.state == RequestState::Approved { r.entitlements.len() } else { 0 }, "{}", r.id);
        }
        // No request-made grant is held by a leaver or above a ceiling.
        for id in people {
            let p = app.store.get_identity(id).await.unwrap().unwrap();
            for (g, class) in app.store.list_grants(id, false, "", 1000).await.unwrap() {
                assert!(p.may_hold_access(), "{id} left but holds {}", g.entitlement_id);
                assert!(class <= p.attrs.access_ceiling(), "{id} holds {} ({class}) above their ceiling", g.entitlement_id);
            }
        }
        // Nobody holds both sides of the rule without an exception.
        let c = app.run_sod_check("user:S1").await.unwrap();
        assert_eq!(c.open, 0, "{c:?}");
    }
}
