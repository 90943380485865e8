//! Access requests: who may ask for what, the approval steps a request
//! needs and who fills each, and the hard rules of deciding them.
//!
//! Hard rules, whatever the policy: nobody is granted above their access
//! ceiling (checked at the request and again at the final approval); a
//! requester never approves their own request, nor anyone a request for
//! themselves; the same person never fills two steps of one request; a step
//! is decided once; any denial ends the request. Steps are decided in order
//! (manager, then owner, then security).

use crate::Classification;
use crate::error::{DomainError, ErrorCode, FieldViolation};
use crate::grant::Grant;
use crate::identity::{Identity, text_problem};
use crate::policy::{Approver, Policy};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The assignee of a security step: any security officer.
pub const SECURITY_POOL: &str = "@security";

/// The longest justification kept.
pub const MAX_JUSTIFICATION: usize = 2000;

string_enum!(
    /// Where a request stands.
    RequestState {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
        Cancelled => "cancelled",
        Expired => "expired",
    }
);

string_enum!(
    /// Where a step stands. Only one step is open at a time.
    StepState { Waiting => "waiting", Open => "open", Approved => "approved", Denied => "denied" }
);

string_enum!(
    /// What is asked for.
    TargetKind { Entitlement => "entitlement", Role => "role" }
);

/// One approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub approver: Approver,
    /// An employee id, or [`SECURITY_POOL`].
    pub assignee: String,
    pub state: StepState,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: String,
    /// Why the assignee is not the natural one (escalated, reassigned).
    pub note: String,
}

/// An access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub requester: String,
    pub beneficiary: String,
    pub target_kind: TargetKind,
    pub target_id: String,
    /// The entitlements it would grant.
    pub entitlements: Vec<String>,
    /// The highest classification among them.
    pub classification: Classification,
    pub justification: String,
    /// How long the grant lasts, in days (None: no limit).
    pub duration_days: Option<u32>,
    pub state: RequestState,
    pub created_at: DateTime<Utc>,
    /// When it expires if nobody decides it.
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: String,
    pub steps: Vec<Step>,
    /// The grants it became.
    pub grant_ids: Vec<String>,
    /// The grant it extends, if it is an extension.
    pub extends_grant_id: Option<String>,
    /// The SoD exception that allows it, if one was needed.
    pub sod_exception_id: Option<String>,
    /// Bumped by every change (optimistic concurrency).
    pub version: i64,
}

impl AccessRequest {
    /// The step waiting for a decision, if any.
    pub fn open_step(&self) -> Option<(usize, &Step)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.state == StepState::Open)
    }

    /// Who must decide next (an employee id or the security pool).
    pub fn waiting_on(&self) -> Option<&str> {
        if self.state != RequestState::Pending {
            return None;
        }
        self.open_step().map(|(_, s)| s.assignee.as_str())
    }

    /// The people who approved it, in order.
    pub fn approvers(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.state == StepState::Approved)
            .filter_map(|s| s.decided_by.clone())
            .collect()
    }
}

/// What someone asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub requester: String,
    pub beneficiary: String,
    pub target_kind: TargetKind,
    pub target_id: String,
    pub justification: String,
    pub duration_days: Option<u32>,
    pub extends_grant_id: Option<String>,
}

fn invalid(field: &str, msg: impl Into<String>) -> DomainError {
    DomainError::invalid(
        "the access request cannot be made",
        vec![FieldViolation::new(field, msg)],
    )
}

/// The entitlements a target names, if it exists and may be requested.
pub fn resolve_target(
    policy: &Policy,
    kind: TargetKind,
    id: &str,
) -> Result<(Vec<String>, Classification), DomainError> {
    let ents: Vec<String> = match kind {
        TargetKind::Entitlement => match policy.entitlements.get(id) {
            Some(e) if e.requestable => vec![e.id.clone()],
            Some(_) => {
                return Err(invalid(
                    "target_id",
                    format!(
                        "{} is not requestable; it comes with a role or from an admin",
                        crate::error::echo(id)
                    ),
                ));
            }
            None => {
                return Err(DomainError::new(
                    ErrorCode::NotFound,
                    format!("there is no entitlement {}", crate::error::echo(id)),
                ));
            }
        },
        TargetKind::Role => match policy.roles.get(id) {
            Some(r) if r.requestable => r.entitlements.clone(),
            Some(_) => {
                return Err(invalid(
                    "target_id",
                    format!("role {} is not requestable", crate::error::echo(id)),
                ));
            }
            None => {
                return Err(DomainError::new(
                    ErrorCode::NotFound,
                    format!("there is no role {}", crate::error::echo(id)),
                ));
            }
        },
    };
    let classification = ents
        .iter()
        .filter_map(|e| policy.entitlements.get(e))
        .map(|e| e.classification)
        .max()
        .unwrap_or(Classification::Public);
    Ok((ents, classification))
}

/// What the beneficiary's access ceiling says about `classification`.
pub fn ceiling_problem(beneficiary: &Identity, classification: Classification) -> Option<String> {
    if !beneficiary.may_hold_access() {
        return Some(format!(
            "{} is {}, not active; only active people get access",
            beneficiary.employee_id, beneficiary.status
        ));
    }
    let ceiling = beneficiary.attrs.access_ceiling();
    (classification > ceiling).then(|| {
        format!(
            "{classification} is above {}'s access ceiling ({ceiling}: background check {}, clearance {}, {})",
            beneficiary.employee_id,
            beneficiary.attrs.background_check,
            beneficiary.attrs.clearance,
            beneficiary.attrs.employment_type
        )
    })
}

/// Checks a new request against the rules and plans its steps. `held` are
/// the beneficiary's active grants; `open_for_same` is true when an open
/// request for the same target exists; `manager_of` looks a manager up;
/// `exception` is a live SoD exception for the conflicts (if any) found.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    new: &NewRequest,
    beneficiary: &Identity,
    held: &[Grant],
    open_for_same: bool,
    policy: &Policy,
    manager_of: &dyn Fn(&str) -> Option<String>,
    sod_exception: Option<&str>,
    now: DateTime<Utc>,
) -> Result<AccessRequest, DomainError> {
    let (entitlements, classification) = resolve_target(policy, new.target_kind, &new.target_id)?;
    if let Some(p) = ceiling_problem(beneficiary, classification) {
        return Err(invalid("beneficiary", p));
    }
    let level = policy.level(classification);
    let held_ids: BTreeSet<String> = held
        .iter()
        .filter(|g| g.is_active())
        .map(|g| g.entitlement_id.clone())
        .collect();
    match &new.extends_grant_id {
        Some(gid) => {
            let g = held
                .iter()
                .find(|g| &g.id == gid && g.is_active())
                .ok_or_else(|| {
                    invalid(
                        "extends_grant_id",
                        "is not an active grant of the beneficiary",
                    )
                })?;
            if g.expires_at.is_none() || !entitlements.contains(&g.entitlement_id) {
                return Err(invalid(
                    "extends_grant_id",
                    "only a time-bound grant of the entitlement asked for can be extended",
                ));
            }
        }
        None => {
            if entitlements.iter().all(|e| held_ids.contains(e)) {
                return Err(invalid(
                    "target_id",
                    format!(
                        "{} already holds it (ask to extend a time-bound grant with extends_grant_id)",
                        beneficiary.employee_id
                    ),
                ));
            }
        }
    }
    if open_for_same {
        return Err(DomainError::new(
            ErrorCode::FailedPrecondition,
            "an open request for the same access exists; wait for it or cancel it",
        ));
    }
    let justification = new.justification.trim().to_string();
    if let Some(p) =
        text_problem(&justification, MAX_JUSTIFICATION).filter(|_| !justification.is_empty())
    {
        return Err(invalid("justification", p));
    }
    if classification >= Classification::Confidential && justification.is_empty() {
        return Err(invalid(
            "justification",
            format!("is required for {classification} access: say why it is needed"),
        ));
    }
    let max = level.max_grant_days;
    match (new.duration_days, max) {
        (Some(0), _) => return Err(invalid("duration_days", "must be at least 1 day")),
        (Some(d), m) if m > 0 && d > m => {
            return Err(invalid(
                "duration_days",
                format!("{classification} access lasts at most {m} days"),
            ));
        }
        (None, m) if m > 0 => {
            return Err(invalid(
                "duration_days",
                format!("is required for {classification} access (at most {m} days)"),
            ));
        }
        _ => {}
    }
    // Separation of duties: would the beneficiary then hold both sides?
    let mut after = held_ids.clone();
    after.extend(entitlements.iter().cloned());
    let before: BTreeSet<&str> = policy
        .sod_conflicts(&held_ids)
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let new_conflicts: Vec<String> = policy
        .sod_conflicts(&after)
        .iter()
        .filter(|r| !before.contains(r.id.as_str()))
        .map(|r| r.id.clone())
        .collect();
    if !new_conflicts.is_empty() && sod_exception.is_none() {
        return Err(invalid(
            "target_id",
            format!(
                "it would break separation of duties ({}); a security officer can grant a time-bound exception",
                new_conflicts.join(", ")
            ),
        ));
    }
    let steps = plan_steps(new, &entitlements, &level.approvals, policy, manager_of)?;
    let mut req = AccessRequest {
        id: String::new(),
        requester: new.requester.clone(),
        beneficiary: new.beneficiary.clone(),
        target_kind: new.target_kind,
        target_id: new.target_id.clone(),
        entitlements,
        classification,
        justification,
        duration_days: new.duration_days,
        state: RequestState::Pending,
        created_at: now,
        expires_at: now + Duration::days(i64::from(level.request_expiry_days.max(1))),
        decided_at: None,
        reason: String::new(),
        steps,
        grant_ids: vec![],
        extends_grant_id: new.extends_grant_id.clone(),
        sod_exception_id: if new_conflicts.is_empty() {
            None
        } else {
            sod_exception.map(String::from)
        },
        version: 0,
    };
    if let Some(first) = req.steps.first_mut() {
        first.state = StepState::Open;
    } else {
        // No approval needed: approved as made.
        req.state = RequestState::Approved;
        req.decided_at = Some(now);
        req.reason = format!("{classification} access needs no approval");
    }
    Ok(req)
}

/// Resolves each approval step to a person. Nobody fills a step for a
/// request they made or that is for them, and nobody fills two steps: such
/// a step goes up to that person's manager, then to the fallback approver.
fn plan_steps(
    new: &NewRequest,
    entitlements: &[String],
    approvals: &[Approver],
    policy: &Policy,
    manager_of: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Step>, DomainError> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let barred = |p: &str, taken: &BTreeSet<String>| {
        p == new.requester || p == new.beneficiary || taken.contains(p)
    };
    let mut steps = Vec::new();
    for approver in approvals {
        if *approver == Approver::Security {
            steps.push(Step {
                approver: *approver,
                assignee: SECURITY_POOL.into(),
                state: StepState::Waiting,
                decided_by: None,
                decided_at: None,
                comment: String::new(),
                note: String::new(),
            });
            continue;
        }
        let natural = match approver {
            Approver::Manager => manager_of(&new.beneficiary),
            _ => entitlements
                .iter()
                .filter_map(|e| policy.entitlements.get(e))
                .max_by_key(|e| e.classification)
                .map(|e| e.owner.clone()),
        };
        let mut candidate = natural.clone();
        let mut note = String::new();
        let mut hops = 0;
        while let Some(c) = candidate.clone() {
            if !barred(&c, &taken) {
                break;
            }
            note = format!("{c} may not approve this request; escalated to their manager");
            candidate = manager_of(&c);
            hops += 1;
            if hops > 50 {
                candidate = None;
            }
        }
        let assignee = match candidate {
            Some(c) => c,
            None => match &policy.fallback_approver {
                Some(f) if !barred(f, &taken) => {
                    note = format!(
                        "{}; the fallback approver decides",
                        if natural.is_none() {
                            "nobody fills this step"
                        } else {
                            note.as_str()
                        }
                    );
                    f.clone()
                }
                _ => {
                    return Err(DomainError::new(
                        ErrorCode::FailedPrecondition,
                        format!(
                            "nobody can approve the {approver} step of this request; \
                             set [requests] fallback_approver in the policy"
                        ),
                    ));
                }
            },
        };
        taken.insert(assignee.clone());
        steps.push(Step {
            approver: *approver,
            assignee,
            state: StepState::Waiting,
            decided_by: None,
            decided_at: None,
            comment: String::new(),
            note,
        });
    }
    Ok(steps)
}

/// Who is deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    pub employee_id: String,
    pub security_officer: bool,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// More steps to go.
    Advanced,
    /// Every step approved: grant it (after checking the ceiling again).
    Approved,
    Denied,
}

/// Decides the open step of `req`. The hard rules are checked here.
pub fn decide(
    req: &mut AccessRequest,
    who: &Decider,
    approve: bool,
    comment: &str,
    now: DateTime<Utc>,
) -> Result<Decided, DomainError> {
    let precondition = |m: String| DomainError::new(ErrorCode::FailedPrecondition, m);
    if req.state != RequestState::Pending {
        return Err(precondition(format!(
            "the request is {}, not pending",
            req.state
        )));
    }
    if req.expires_at <= now {
        return Err(precondition("the request has expired".into()));
    }
    let comment = comment.trim();
    if let Some(p) = text_problem(comment, MAX_JUSTIFICATION).filter(|_| !comment.is_empty()) {
        return Err(invalid("comment", p));
    }
    if who.employee_id == req.requester || who.employee_id == req.beneficiary {
        return Err(DomainError::new(
            ErrorCode::PermissionDenied,
            "nobody approves a request they made or one for themselves",
        ));
    }
    if req
        .steps
        .iter()
        .any(|s| s.decided_by.as_deref() == Some(who.employee_id.as_str()))
    {
        return Err(DomainError::new(
            ErrorCode::PermissionDenied,
            "the same person never fills two steps of one request",
        ));
    }
    let Some((i, step)) = req.open_step().map(|(i, s)| (i, s.clone())) else {
        return Err(precondition("no step of this request is waiting".into()));
    };
    let fits = if step.assignee == SECURITY_POOL {
        who.security_officer
    } else {
        step.assignee == who.employee_id
    };
    if !fits {
        return Err(DomainError::new(
            ErrorCode::PermissionDenied,
            "this request's step is not assigned to you",
        ));
    }
    if !approve && comment.is_empty() {
        return Err(invalid("comment", "say why the request is denied"));
    }
    let s = &mut req.steps[i];
    s.state = if approve {
        StepState::Approved
    } else {
        StepState::Denied
    };
    s.decided_by = Some(who.employee_id.clone());
    s.decided_at = Some(now);
    s.comment = comment.to_string();
    if !approve {
        req.state = RequestState::Denied;
        req.decided_at = Some(now);
        req.reason = format!("denied at the {} step by {}", s.approver, who.employee_id);
        return Ok(Decided::Denied);
    }
    if let Some(next) = req.steps.get_mut(i + 1) {
        next.state = StepState::Open;
        return Ok(Decided::Advanced);
    }
    Ok(Decided::Approved)
}

/// Sends the open step of `req` to `to` (its assignee left): returns true
/// when it was the departed person's.
pub fn reassign_open_step(req: &mut AccessRequest, from: &str, to: &str, why: &str) -> bool {
    let barred = to == req.requester
        || to == req.beneficiary
        || req
            .steps
            .iter()
            .any(|s| s.decided_by.as_deref() == Some(to));
    match req.steps.iter_mut().find(|s| s.state == StepState::Open) {
        Some(s) if s.assignee == from && !barred => {
            s.note = format!("{from} {why}; reassigned to {to}");
            s.assignee = to.to_string();
            true
        }
        _ => false,
    }
}

/// When a request's grant expires, from the final approval.
pub fn grant_expiry(req: &AccessRequest, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    req.duration_days
        .map(|d| now + Duration::days(i64::from(d)))
}

#[cfg(test)]
mod tests;
