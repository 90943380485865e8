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
use crate::identity::{Identity, optional_text_problem, text_problem};
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

/// The organisation as approval routing sees it.
pub trait Org {
    /// The manager of `employee_id`, if any.
    fn manager_of(&self, employee_id: &str) -> Option<String>;
    /// True when `employee_id` is an active person who can decide.
    fn available(&self, employee_id: &str) -> bool;
}

/// A manager lookup where everyone is available.
impl<F: Fn(&str) -> Option<String>> Org for F {
    fn manager_of(&self, employee_id: &str) -> Option<String> {
        self(employee_id)
    }
    fn available(&self, _: &str) -> bool {
        true
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

/// A request for access of `classification` must say why (confidential
/// and restricted).
pub fn needs_justification(classification: Classification) -> bool {
    classification >= Classification::Confidential
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

/// What is wrong with a request's justification and duration whatever it
/// asks for (see [`plan`] for the rules that depend on the target).
pub fn shape_problems(justification: &str, duration_days: Option<u32>) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if let Some(p) = optional_text_problem(justification.trim(), MAX_JUSTIFICATION) {
        v.push(FieldViolation::new("justification", p));
    }
    if duration_days == Some(0) {
        v.push(FieldViolation::new(
            "duration_days",
            "must be at least 1 day",
        ));
    }
    v
}

/// What the target's classification asks of the beneficiary, the
/// justification and the duration.
fn classification_problems(
    beneficiary: &Identity,
    classification: Classification,
    new: &NewRequest,
    policy: &Policy,
) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if let Some(p) = ceiling_problem(beneficiary, classification) {
        v.push(FieldViolation::new("beneficiary", p));
    }
    if needs_justification(classification) && new.justification.trim().is_empty() {
        v.push(FieldViolation::new(
            "justification",
            format!("is required for {classification} access: say why it is needed"),
        ));
    }
    match (
        new.duration_days,
        policy.level(classification).max_grant_days,
    ) {
        (Some(d), m) if m > 0 && d > m => v.push(FieldViolation::new(
            "duration_days",
            format!("{classification} access lasts at most {m} days"),
        )),
        (None, m) if m > 0 => v.push(FieldViolation::new(
            "duration_days",
            format!("is required for {classification} access (at most {m} days)"),
        )),
        _ => {}
    }
    v
}

/// Checks a new request against the rules and plans its steps. `held` are
/// the beneficiary's active grants; `open_for_same` is true when an open
/// request for the same target exists; `manager_of` looks a manager up;
/// `exceptions` are the beneficiary's live SoD exceptions.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    new: &NewRequest,
    beneficiary: &Identity,
    held: &[Grant],
    open_for_same: bool,
    policy: &Policy,
    org: &dyn Org,
    exceptions: &[SodException],
    now: DateTime<Utc>,
) -> Result<AccessRequest, DomainError> {
    // Every problem with what was asked is named at once (the target,
    // the beneficiary's ceiling, the justification, the duration); the
    // state checks below (held, open, separation of duties) come after.
    let mut problems = shape_problems(&new.justification, new.duration_days);
    let resolved = match resolve_target(policy, new.target_kind, &new.target_id) {
        Ok(r) => Some(r),
        Err(e) if e.code == ErrorCode::InvalidArgument && !e.violations.is_empty() => {
            problems.splice(0..0, e.violations);
            None
        }
        // Nothing to name the target by: what is wrong whatever it is
        // comes first.
        Err(e) if problems.is_empty() => return Err(e),
        Err(_) => None,
    };
    if let Some((_, classification)) = &resolved {
        problems.extend(classification_problems(
            beneficiary,
            *classification,
            new,
            policy,
        ));
    }
    let (entitlements, classification) = match resolved {
        Some(r) if problems.is_empty() => r,
        _ => {
            return Err(DomainError::invalid(
                "the access request cannot be made",
                problems,
            ));
        }
    };
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
    let live = |rule: &str| {
        exceptions
            .iter()
            .find(|x| x.rule_id == rule && x.is_live(now))
    };
    let uncovered: Vec<&String> = new_conflicts.iter().filter(|r| live(r).is_none()).collect();
    if !uncovered.is_empty() {
        return Err(invalid(
            "target_id",
            format!(
                "it would break separation of duties ({}); a security officer can grant a time-bound exception \
                 (idgov sod grant-exception)",
                uncovered
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let sod_exception = new_conflicts
        .first()
        .and_then(|r| live(r))
        .map(|x| x.id.clone());
    let steps = plan_steps(new, &entitlements, &level.approvals, policy, org)?;
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
        sod_exception_id: sod_exception,
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
/// request they made or that is for them, nobody fills two steps, and
/// nobody who left does: such a step goes up to that person's manager,
/// then to the fallback approver.
fn plan_steps(
    new: &NewRequest,
    entitlements: &[String],
    approvals: &[Approver],
    policy: &Policy,
    org: &dyn Org,
) -> Result<Vec<Step>, DomainError> {
    let manager_of = |p: &str| org.manager_of(p);
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let barred = |p: &str, taken: &BTreeSet<String>| {
        p == new.requester || p == new.beneficiary || taken.contains(p) || !org.available(p)
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
        let why = |p: &str, taken: &BTreeSet<String>| {
            if p == new.beneficiary {
                "the request is for them"
            } else if p == new.requester {
                "they made the request"
            } else if taken.contains(p) {
                "they fill another step"
            } else {
                "they are not active"
            }
        };
        let mut candidate = natural.clone();
        // Why the natural approver does not decide, when they do not.
        let mut note = String::new();
        let mut hops = 0;
        while let Some(c) = candidate.clone() {
            if !barred(&c, &taken) {
                break;
            }
            if note.is_empty() {
                note = format!("{c} may not approve: {}", why(&c, &taken));
            }
            candidate = manager_of(&c);
            hops += 1;
            if hops > 50 {
                candidate = None;
            }
        }
        if let Some(c) = &candidate
            && !note.is_empty()
        {
            note = format!("{note}; escalated up the manager chain to {c}");
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
    if let Some(p) = optional_text_problem(comment, MAX_JUSTIFICATION) {
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

/// A time-bound exception to a separation-of-duties rule for one person,
/// granted by a security officer. When it ends, the grants it allowed are
/// revoked (`sod`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SodException {
    pub id: String,
    pub employee_id: String,
    pub rule_id: String,
    pub justification: String,
    pub granted_by: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: ExceptionState,
    pub ended_at: Option<DateTime<Utc>>,
}

string_enum!(
    /// Where an exception stands.
    ExceptionState { Active => "active", Expired => "expired", Revoked => "revoked" }
);

impl SodException {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.state == ExceptionState::Active && self.expires_at > now
    }
}

/// A conflict the detective check found: someone holds two or more sides
/// of a rule without a live exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SodViolation {
    pub employee_id: String,
    pub rule_id: String,
    pub severity: crate::policy::Severity,
    /// The held entitlements that make the conflict.
    pub entitlements: Vec<String>,
    pub detected_at: DateTime<Utc>,
    pub checked_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The conflicts `held` makes under `policy`, without those a live
/// exception covers: (rule, its entitlements held).
pub fn violations<'p>(
    policy: &'p Policy,
    held: &BTreeSet<String>,
    exceptions: &[SodException],
    now: DateTime<Utc>,
) -> Vec<(&'p crate::policy::SodRule, Vec<String>)> {
    policy
        .sod_conflicts(held)
        .into_iter()
        .filter(|r| {
            !exceptions
                .iter()
                .any(|x| x.rule_id == r.id && x.is_live(now))
        })
        .map(|r| {
            let ents: BTreeSet<String> = policy
                .sod_sides(r)
                .into_iter()
                .filter(|side| !side.is_empty() && side.iter().all(|e| held.contains(e)))
                .flatten()
                .collect();
            (r, ents.into_iter().collect())
        })
        .collect()
}

/// Checks a security officer's exception before it is granted.
pub fn check_exception(
    policy: &Policy,
    rule_id: &str,
    justification: &str,
    days: u32,
) -> Result<(), DomainError> {
    // Every problem is named at once.
    let mut v = Vec::new();
    let rule = policy.sod.iter().find(|r| r.id == rule_id);
    if rule.is_none() {
        v.push(FieldViolation::new(
            "rule_id",
            format!(
                "there is no separation-of-duties rule {}",
                crate::error::echo(rule_id)
            ),
        ));
    }
    let j = justification.trim();
    if j.is_empty() {
        v.push(FieldViolation::new(
            "justification",
            "say why the exception is needed",
        ));
    } else if let Some(p) = text_problem(j, MAX_JUSTIFICATION) {
        v.push(FieldViolation::new("justification", p));
    }
    if days == 0 {
        v.push(FieldViolation::new("days", "must be at least 1 day"));
    } else if let Some(rule) = rule {
        // At most the cap of the most sensitive level the rule touches.
        let top = policy
            .sod_sides(rule)
            .into_iter()
            .flatten()
            .filter_map(|e| policy.entitlements.get(&e).map(|e| e.classification))
            .max()
            .unwrap_or(Classification::Internal);
        let cap = policy.level(top).max_grant_days;
        if cap > 0 && days > cap {
            v.push(FieldViolation::new(
                "days",
                format!("an exception to {rule_id} lasts at most {cap} days ({top} access)"),
            ));
        }
    }
    if !v.is_empty() {
        return Err(DomainError::invalid("the exception cannot be granted", v));
    }
    Ok(())
}

/// What an approved request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilment {
    /// New grants (entitlements already held are left as they are).
    Grants(Vec<crate::grant::NewGrant>),
    /// An extension: the grant's new end.
    Extend {
        grant_id: String,
        expires_at: DateTime<Utc>,
    },
}

/// The final check of a request every step approved, against the
/// beneficiary, their grants, the policy and the SoD exceptions as they are
/// *now* (they may have moved, lost clearance or left since the request was
/// made). `Err` says why it cannot be granted.
pub fn fulfil(
    req: &AccessRequest,
    beneficiary: &Identity,
    held: &[Grant],
    policy: &Policy,
    exceptions: &[SodException],
    now: DateTime<Utc>,
) -> Result<Fulfilment, String> {
    if beneficiary.status != crate::identity::Status::Active {
        return Err(format!(
            "{} is {}, not active",
            beneficiary.employee_id, beneficiary.status
        ));
    }
    let (entitlements, classification) =
        resolve_target(policy, req.target_kind, &req.target_id).map_err(|e| e.to_string())?;
    if let Some(p) = ceiling_problem(beneficiary, classification) {
        return Err(p);
    }
    let cap = policy.level(classification).max_grant_days;
    let days = match (req.duration_days, cap) {
        (Some(d), c) if c > 0 => Some(d.min(c)),
        (None, c) if c > 0 => Some(c),
        (d, _) => d,
    };
    let expires_at = days.map(|d| now + Duration::days(i64::from(d)));
    let held_ids: BTreeSet<String> = held
        .iter()
        .filter(|g| g.is_active())
        .map(|g| g.entitlement_id.clone())
        .collect();
    if let Some(gid) = &req.extends_grant_id {
        let g = held
            .iter()
            .find(|g| &g.id == gid && g.is_active())
            .ok_or_else(|| format!("grant {gid} is no longer active"))?;
        let Some(expires_at) = expires_at else {
            return Err("an extension needs a duration".into());
        };
        return Ok(Fulfilment::Extend {
            grant_id: g.id.clone(),
            expires_at: expires_at.max(g.expires_at.unwrap_or(expires_at)),
        });
    }
    let mut after = held_ids.clone();
    after.extend(entitlements.iter().cloned());
    let before: BTreeSet<&str> = policy
        .sod_conflicts(&held_ids)
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let mut exception_id = None;
    for rule in policy.sod_conflicts(&after) {
        if before.contains(rule.id.as_str()) {
            continue;
        }
        match exceptions
            .iter()
            .find(|x| x.rule_id == rule.id && x.is_live(now))
        {
            Some(x) => exception_id = Some(x.id.clone()),
            None => {
                return Err(format!(
                    "it would now break separation of duties ({}) and no live exception allows it",
                    rule.id
                ));
            }
        }
    }
    let approvers = req.approvers();
    let grants = entitlements
        .into_iter()
        .filter(|e| !held_ids.contains(e))
        .map(|e| crate::grant::NewGrant {
            entitlement_id: e,
            source: crate::grant::SourceKind::Request,
            source_ref: req.id.clone(),
            justification: req.justification.clone(),
            expires_at,
            approvers: approvers.clone(),
            exception_id: exception_id.clone(),
        })
        .collect();
    Ok(Fulfilment::Grants(grants))
}

/// When a request's grant expires, from the final approval.
pub fn grant_expiry(req: &AccessRequest, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    req.duration_days
        .map(|d| now + Duration::days(i64::from(d)))
}

#[cfg(test)]
mod tests;
