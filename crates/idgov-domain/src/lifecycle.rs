//! Joiner, mover and leaver: what an HR event does to an identity and its
//! grants, decided from plain values and the current time.
//!
//! Ordering: each identity keeps two clocks, the effective time of its newest
//! attribute state and of its newest status change. An event older than the
//! clock it would move changes nothing (it is *superseded*), so an old event
//! arriving late never overwrites newer state.

use crate::Classification;
use crate::grant::{Grant, GrantChange, NewGrant, RevokeReason, SourceKind};
use crate::hr::{EventKind, HrEvent};
use crate::identity::{
    Attributes, BackgroundCheck, FieldChange, Identity, Status, diff_attributes, is_move,
};
use crate::policy::{OnMover, Policy};
use crate::time::local_date;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A birthright entitlement not granted because it is above the person's
/// access ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    pub entitlement_id: String,
    pub classification: Classification,
    pub ceiling: Classification,
}

/// The change an event makes, to apply in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub identity: Identity,
    pub previous_status: Option<Status>,
    pub changes: Vec<FieldChange>,
    pub grant_changes: Vec<GrantChange>,
    pub withheld: Vec<Withheld>,
    pub mover: bool,
    /// A note for the audit trail, e.g. "hire of an active person applied as update".
    pub note: Option<String>,
}

/// What to do with an HR event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply now.
    Apply(Box<Transition>),
    /// Store it and apply it when due. A future hire of someone unknown
    /// creates them now as `pre_hire`, holding nothing.
    Schedule { pre_hire: Option<Box<Identity>> },
    /// Older than the state already applied: record it, change nothing.
    Superseded { reason: String },
    /// Cannot apply in the current state (e.g. an update of someone unknown).
    Reject { reason: String },
}

/// Why birthright that no longer matches is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An HR change of the person.
    HrChange { mover: bool },
    /// A policy change.
    Policy,
}

/// Decides what `event` does, given the person's current state and grants.
pub fn decide(
    current: Option<&Identity>,
    grants: &[Grant],
    event: &HrEvent,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    let t = event.effective_at;
    if t > now {
        let pre_hire = match (event.kind, current) {
            (EventKind::Hire, None) => {
                let attrs = event
                    .attrs
                    .apply_to(&Attributes::new_person(policy.default_clearance));
                Some(Box::new(Identity {
                    employee_id: event.employee_id.clone(),
                    attrs,
                    status: Status::PreHire,
                    attrs_effective_at: now,
                    status_effective_at: now,
                    created_at: now,
                    updated_at: now,
                }))
            }
            _ => None,
        };
        return Decision::Schedule { pre_hire };
    }
    match event.kind {
        EventKind::Hire => match current {
            None => start(None, grants, event, policy, now, None),
            Some(cur) => match cur.status {
                Status::PreHire => start(Some(cur), grants, event, policy, now, None),
                Status::Terminated => start(
                    Some(cur),
                    grants,
                    event,
                    policy,
                    now,
                    Some("hire of a departed person applied as rehire".into()),
                ),
                Status::Active | Status::Suspended => update(
                    cur,
                    grants,
                    event,
                    policy,
                    now,
                    Some("hire of an active person applied as update".into()),
                ),
            },
        },
        EventKind::Update | EventKind::Move => match current {
            None => Decision::Reject {
                reason: format!(
                    "employee {} is unknown; send their hire first (HR may retry this event)",
                    event.employee_id
                ),
            },
            Some(cur) => update(cur, grants, event, policy, now, None),
        },
        EventKind::Terminate => match current {
            None => Decision::Reject {
                reason: format!(
                    "employee {} is unknown; there is no one to terminate",
                    event.employee_id
                ),
            },
            Some(cur) => terminate(cur, grants, event, policy, now),
        },
        EventKind::Rehire => match current {
            None => start(
                None,
                grants,
                event,
                policy,
                now,
                Some("rehire of an unknown person applied as hire".into()),
            ),
            Some(cur) if cur.status == Status::Terminated => {
                start(Some(cur), grants, event, policy, now, None)
            }
            Some(cur) if t < cur.status_effective_at => superseded(cur, t),
            Some(cur) => Decision::Reject {
                reason: format!(
                    "employee {} is {}, not terminated; a rehire needs a departed person",
                    event.employee_id, cur.status
                ),
            },
        },
        EventKind::Rescind => Decision::Reject {
            reason: "a rescind cancels a scheduled event and is never applied to an identity"
                .into(),
        },
    }
}

fn superseded(cur: &Identity, t: DateTime<Utc>) -> Decision {
    Decision::Superseded {
        reason: format!(
            "effective {} is older than the state applied for {} (effective {})",
            t.to_rfc3339(),
            cur.employee_id,
            cur.state_effective_at().to_rfc3339()
        ),
    }
}

/// Hire, rehire, or activation of a pre-hire: the person becomes active and
/// starts from nothing but birthright.
fn start(
    current: Option<&Identity>,
    grants: &[Grant],
    event: &HrEvent,
    policy: &Policy,
    now: DateTime<Utc>,
    note: Option<String>,
) -> Decision {
    let t = event.effective_at;
    let base = match current {
        Some(cur) if t < cur.status_effective_at => return superseded(cur, t),
        Some(cur) if cur.status == Status::Terminated => {
            // A returning person: keep who they are, not what they were cleared for.
            let mut a = cur.attrs.clone();
            a.end_date = None;
            a.start_date = None;
            a.background_check = BackgroundCheck::Pending;
            a
        }
        Some(cur) => cur.attrs.clone(),
        None => Attributes::new_person(policy.default_clearance),
    };
    let mut attrs = event.attrs.apply_to(&base);
    if attrs.start_date.is_none() {
        attrs.start_date = Some(local_date(t, policy.hr_time_zone));
    }
    let identity = Identity {
        employee_id: event.employee_id.clone(),
        attrs,
        status: Status::Active,
        attrs_effective_at: t,
        status_effective_at: t,
        created_at: current.map(|c| c.created_at).unwrap_or(now),
        updated_at: now,
    };
    // Old grants never come back: reconcile against nothing but what is active.
    let (grant_changes, withheld) =
        reconcile_access(&identity, grants, policy, Cause::HrChange { mover: false });
    Decision::Apply(Box::new(Transition {
        changes: current
            .map(|c| diff_attributes(&c.attrs, &identity.attrs))
            .unwrap_or_default(),
        previous_status: current.map(|c| c.status),
        identity,
        grant_changes,
        withheld,
        mover: false,
        note,
    }))
}

fn update(
    cur: &Identity,
    grants: &[Grant],
    event: &HrEvent,
    policy: &Policy,
    now: DateTime<Utc>,
    note: Option<String>,
) -> Decision {
    let t = event.effective_at;
    if t < cur.attrs_effective_at {
        return superseded(cur, t);
    }
    let attrs = event.attrs.apply_to(&cur.attrs);
    let changes = diff_attributes(&cur.attrs, &attrs);
    let mover = is_move(&changes);
    let identity = Identity {
        attrs,
        attrs_effective_at: t,
        updated_at: now,
        ..cur.clone()
    };
    let (grant_changes, withheld) =
        reconcile_access(&identity, grants, policy, Cause::HrChange { mover });
    Decision::Apply(Box::new(Transition {
        identity,
        previous_status: Some(cur.status),
        changes,
        grant_changes,
        withheld,
        mover,
        note,
    }))
}

fn terminate(
    cur: &Identity,
    grants: &[Grant],
    event: &HrEvent,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    let t = event.effective_at;
    if t < cur.status_effective_at {
        return superseded(cur, t);
    }
    if cur.status == Status::Terminated {
        return Decision::Superseded {
            reason: format!("employee {} is already terminated", cur.employee_id),
        };
    }
    let mut identity = cur.clone();
    if t >= cur.attrs_effective_at {
        identity.attrs = event.attrs.apply_to(&cur.attrs);
        identity.attrs_effective_at = t;
    }
    if event.attrs.end_date.is_none() {
        // The last day worked: the day before an end-of-day boundary.
        identity.attrs.end_date = Some(local_date(
            t - Duration::microseconds(1),
            policy.hr_time_zone,
        ));
    }
    identity.status = Status::Terminated;
    identity.status_effective_at = t;
    identity.updated_at = now;
    let (grant_changes, _) =
        reconcile_access(&identity, grants, policy, Cause::HrChange { mover: false });
    Decision::Apply(Box::new(Transition {
        changes: diff_attributes(&cur.attrs, &identity.attrs),
        previous_status: Some(cur.status),
        identity,
        grant_changes,
        withheld: vec![],
        mover: false,
        note: None,
    }))
}

/// Brings a person's grants in line with their state and the policy:
///
/// - someone who may not hold access (pre-hire, terminated) loses everything
///   (`leaver`);
/// - nothing stays above the access ceiling (`clearance`);
/// - birthright the attributes no longer give is revoked (`mover` on an HR
///   change, `policy` on a policy change);
/// - on a move, other grants follow the level's "on mover" rule;
/// - birthright the attributes give, within the ceiling, is added.
pub fn reconcile_access(
    identity: &Identity,
    grants: &[Grant],
    policy: &Policy,
    cause: Cause,
) -> (Vec<GrantChange>, Vec<Withheld>) {
    let active: Vec<&Grant> = grants.iter().filter(|g| g.is_active()).collect();
    let mut changes = Vec::new();
    let revoke = |g: &Grant, reason| GrantChange::Revoke {
        grant_id: g.id.clone(),
        entitlement_id: g.entitlement_id.clone(),
        reason,
    };
    if !identity.may_hold_access() {
        changes.extend(active.iter().map(|g| revoke(g, RevokeReason::Leaver)));
        return (changes, vec![]);
    }
    let ceiling = identity.attrs.access_ceiling();
    let mut desired = policy.birthright_for(&identity.attrs);
    let mut withheld = Vec::new();
    desired.retain(|ent_id, _| match policy.entitlements.get(ent_id) {
        Some(e) if e.classification <= ceiling => true,
        Some(e) => {
            withheld.push(Withheld {
                entitlement_id: ent_id.clone(),
                classification: e.classification,
                ceiling,
            });
            false
        }
        None => false,
    });
    let mover = matches!(cause, Cause::HrChange { mover: true });
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for g in &active {
        let ent = policy.entitlements.get(&g.entitlement_id);
        match ent {
            None => changes.push(revoke(g, RevokeReason::Policy)),
            Some(e) if e.classification > ceiling => {
                changes.push(revoke(g, RevokeReason::Clearance))
            }
            Some(_)
                if g.source == SourceKind::Birthright
                    && !desired.contains_key(&g.entitlement_id) =>
            {
                let reason = match cause {
                    Cause::Policy => RevokeReason::Policy,
                    Cause::HrChange { .. } => RevokeReason::Mover,
                };
                changes.push(revoke(g, reason));
            }
            Some(e) if mover && g.source != SourceKind::Birthright => {
                match policy.level(e.classification).on_mover {
                    OnMover::Revoke => changes.push(revoke(g, RevokeReason::Mover)),
                    OnMover::KeepAndReview => {
                        if !g.review_pending {
                            changes.push(GrantChange::MarkMoverReview {
                                grant_id: g.id.clone(),
                                entitlement_id: g.entitlement_id.clone(),
                            });
                        }
                        kept.insert(&g.entitlement_id);
                    }
                    OnMover::Keep => {
                        kept.insert(&g.entitlement_id);
                    }
                }
            }
            Some(_) => {
                kept.insert(&g.entitlement_id);
            }
        }
    }
    for (ent_id, role) in desired {
        if !kept.contains(ent_id.as_str()) {
            changes.push(GrantChange::Add(NewGrant {
                entitlement_id: ent_id,
                source: SourceKind::Birthright,
                source_ref: role.clone(),
                justification: format!("birthright of role {role}"),
            }));
        }
    }
    (changes, withheld)
}

#[cfg(test)]
mod tests;
