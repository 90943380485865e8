//! Joiner, mover and leaver: what an HR event does to an identity and its
//! grants, decided from plain values and the current time.
//!
//! The person's state comes from their history (see [`crate::history`]):
//! events fold in effective-time order whatever order they arrived in. This
//! module turns the state before and after an event into grant changes:
//! birthright is recomputed from the new attributes and status, a leaver
//! loses everything, and a new employment starts from nothing.

use crate::Classification;
use crate::grant::{Grant, GrantChange, NewGrant, RevokeReason, SourceKind};
use crate::history::{self, FoldContext, Folded, RosterMark};
use crate::hr::HrEvent;
use crate::identity::{
    Attributes, FieldChange, History, Identity, Status, diff_attributes, is_move,
};
use crate::policy::{OnMover, Policy};
use chrono::{DateTime, Utc};
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
    /// A new employment began (hire or rehire): access starts from nothing.
    pub new_employment: bool,
    /// The person's history was replayed because the event was older than
    /// state already applied.
    pub replayed: bool,
    /// The end-date rule terminated the person.
    pub end_date_reached: bool,
    /// A note for the audit trail, e.g. "hire of an active person applied as update".
    pub note: Option<String>,
}

impl Transition {
    /// True when the HR truth of the person did not change.
    pub fn is_noop(&self, before: Option<&Identity>) -> bool {
        before.is_some_and(|b| history::same_state(b, &self.identity))
            && self.grant_changes.is_empty()
    }
}

/// What to do with an HR event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply now.
    Apply(Box<Transition>),
    /// Store it and apply it when due. A future hire of someone unknown
    /// creates them now as `pre_hire`, holding nothing.
    Schedule { pre_hire: Option<Box<Identity>> },
    /// Older than state already applied: replay the person's history with
    /// it (call again with the history).
    NeedsHistory,
}

/// Why birthright that no longer matches is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An HR change of the person.
    HrChange { mover: bool },
    /// A policy change.
    Policy,
}

/// The fold context a policy gives: its default clearance and HR zone.
pub fn fold_context(policy: &Policy) -> FoldContext {
    FoldContext {
        default_clearance: policy.default_clearance,
        default_zone: policy.hr_time_zone,
    }
}

/// Decides what `event` does, given the person's current state and grants.
/// `history` is every event already folded for the person; it is needed
/// only when the event is older than the state ([`Decision::NeedsHistory`]).
/// `marks` are the newest roster snapshots applied.
pub fn decide(
    current: Option<&Identity>,
    grants: &[Grant],
    event: &HrEvent,
    history: Option<&[&HrEvent]>,
    marks: &[RosterMark],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    let ctx = fold_context(policy);
    if event.effective_at > now {
        let pre_hire = history::announce(current, event, &ctx, now).map(Box::new);
        return Decision::Schedule { pre_hire };
    }
    let (folded, replayed) = match history::fold_in(current, event, marks, &ctx, now) {
        Some(f) => (f, false),
        None => match history {
            None => return Decision::NeedsHistory,
            Some(h) => {
                let mut all: Vec<&HrEvent> = h.to_vec();
                all.push(event);
                (
                    history::replay(&event.employee_id, current, &all, None, marks, &ctx, now),
                    true,
                )
            }
        },
    };
    Decision::Apply(Box::new(transition(
        current, folded, grants, policy, replayed,
    )))
}

/// The grant changes that take a person from `current` to the folded state.
pub fn transition(
    current: Option<&Identity>,
    folded: Folded,
    grants: &[Grant],
    policy: &Policy,
    replayed: bool,
) -> Transition {
    let Folded { state, note, ended } = folded;
    // A fold always yields a person once an event was folded; stay as is
    // otherwise.
    let mut identity = match (state, current) {
        (Some(s), _) => s,
        (None, Some(c)) => c.clone(),
        (None, None) => Identity {
            employee_id: String::new(),
            attrs: Attributes::new_person(policy.default_clearance),
            status: Status::PreHire,
            attrs_effective_at: DateTime::<Utc>::MIN_UTC,
            status_effective_at: DateTime::<Utc>::MIN_UTC,
            created_at: DateTime::<Utc>::MIN_UTC,
            updated_at: DateTime::<Utc>::MIN_UTC,
            history: History::default(),
        },
    };
    if let Some(c) = current {
        // Hand revocations are not HR history: a replay keeps them while
        // the person's attributes stay as they were; a change ends them.
        let attrs = identity.attrs_sha256();
        identity.history.suppressed = c
            .history
            .suppressed
            .iter()
            .filter(|s| s.attrs_sha256 == attrs)
            .cloned()
            .collect();
    }
    let changes = current
        .map(|c| diff_attributes(&c.attrs, &identity.attrs))
        .unwrap_or_default();
    let was_holding = current.is_some_and(|c| c.may_hold_access());
    let new_employment = identity.may_hold_access()
        && current.map(|c| c.history.employment_start) != Some(identity.history.employment_start);
    let mover = was_holding && identity.may_hold_access() && !new_employment && is_move(&changes);
    let mut grant_changes = Vec::new();
    let mut remaining: Vec<Grant> = grants.iter().filter(|g| g.is_active()).cloned().collect();
    if new_employment && !remaining.is_empty() {
        // A new employment (e.g. a rehire that an older termination now
        // precedes) starts from nothing: what the old one held is revoked.
        grant_changes.extend(remaining.iter().map(|g| GrantChange::Revoke {
            grant_id: g.id.clone(),
            entitlement_id: g.entitlement_id.clone(),
            reason: RevokeReason::Leaver,
        }));
        remaining.clear();
    }
    let (more, withheld) =
        reconcile_access(&identity, &remaining, policy, Cause::HrChange { mover });
    grant_changes.extend(more);
    Transition {
        previous_status: current.map(|c| c.status),
        identity,
        changes,
        grant_changes,
        withheld,
        mover,
        new_employment,
        replayed,
        end_date_reached: ended,
        note,
    }
}

/// Applies the end-date rule at `now`: the transition that terminates a
/// person whose end date is over, or `None` when it is not over (or they
/// hold no access to lose).
pub fn end_date_reached(
    current: &Identity,
    grants: &[Grant],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Transition> {
    let ctx = fold_context(policy);
    let mut state = current.clone();
    if !history::settle(&mut state, now, &ctx) {
        return None;
    }
    state.updated_at = now;
    let note = state
        .attrs
        .end_date
        .map(|d| format!("end date {d} is over"));
    Some(transition(
        Some(current),
        Folded {
            state: Some(state),
            note,
            ended: true,
        },
        grants,
        policy,
        false,
    ))
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
    if !identity.history.suppressed.is_empty() {
        let a = identity.attrs_sha256();
        desired.retain(|ent_id, _| {
            !identity.history.suppressed.iter().any(|s| {
                &s.entitlement_id == ent_id && s.holds(&policy.birthright_basis(ent_id), &a)
            })
        });
    }
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
            changes.push(GrantChange::Add(NewGrant::plain(
                ent_id,
                SourceKind::Birthright,
                role.clone(),
                format!("birthright of role {role}"),
            )));
        }
    }
    (changes, withheld)
}

#[cfg(test)]
mod tests;
