//! Access reviews (recertification campaigns): what a campaign covers,
//! who reviews each item, the recommendation shown with it, the rules of a
//! decision, and what an unanswered item becomes at the deadline.
//!
//! Pure: the application reads grants and people, asks these functions,
//! and writes the outcome.

use crate::Classification;
use crate::access::{Org, SECURITY_POOL};
use crate::error::{DomainError, ErrorCode, FieldViolation};
use crate::grant::SourceKind;
use crate::identity::optional_text_problem;
use crate::policy::{
    CampaignDef, Entitlement, EntitlementKind, NoResponse, Policy, ReviewerStrategy,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The longest justification kept on a decision.
pub const MAX_JUSTIFICATION: usize = 2000;

/// Who decided an item that took its level's default at the deadline.
pub const BY_DEFAULT: &str = "system:non-response";

/// Physical areas are reviewed at least this often, whatever the level says.
pub const PHYSICAL_AREA_MONTHS: u32 = 12;

string_enum!(
    /// Where a campaign stands.
    CampaignState {
        /// Its items are being generated (a page of people at a time).
        Starting => "starting",
        Open => "open",
        /// Its close would revoke more than the guard allows: held.
        Held => "held",
        /// Being closed (the unanswered take their default a page at a
        /// time); decisions are refused.
        Closing => "closing",
        Closed => "closed",
    }
);

/// A close under way: what the unanswered get, who closes, how far it got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseProgress {
    /// False when a held close was discarded: the unanswered are kept,
    /// flagged, whatever their default.
    pub revoke: bool,
    pub actor: String,
    /// The guard let the close go on (or a person released it).
    pub guarded: bool,
    /// The last item given its default (items are taken in id order).
    pub after: String,
    pub defaulted: u64,
    pub revoked: u64,
    pub superseded: u64,
    /// Steps of defaults committed so far (their size is set by time).
    #[serde(default)]
    pub steps: u64,
}

string_enum!(
    /// Where a review item stands.
    ItemState {
        Open => "open",
        Certified => "certified",
        Revoked => "revoked",
        /// Unanswered at the deadline, kept (the level's default).
        Kept => "kept",
        /// Unanswered at the deadline, kept and flagged for follow-up.
        Flagged => "flagged",
        /// Its grant ended during the campaign (leaver, mover, expiry).
        Superseded => "superseded",
    }
);

string_enum!(
    /// What the reviewer is advised to do.
    Recommendation { Certify => "certify", Revoke => "revoke", LookClosely => "look_closely" }
);

string_enum!(
    /// Which reviewer an item is at.
    Stage { Manager => "manager", Owner => "owner" }
);

/// A campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    /// The policy's campaign definition it was started from.
    pub definition_id: String,
    pub name: String,
    /// The definition as it was at start (the policy may change).
    pub definition: CampaignDef,
    pub policy_version: i64,
    pub state: CampaignState,
    pub started_at: DateTime<Utc>,
    pub started_by: String,
    pub due_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Set once the reminder (and the escalation) went out.
    pub reminded_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    /// A mover micro-campaign: for one new manager, unanswered revoked.
    pub mover: bool,
    pub items: i64,
    pub held_change_id: Option<String>,
    /// While starting: the last person whose grants became items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_after: Option<String>,
    /// While closing, once the guard let the close go on: its progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing: Option<CloseProgress>,
}

/// One grant under review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewItem {
    pub id: String,
    pub campaign_id: String,
    pub grant_id: String,
    pub employee_id: String,
    pub entitlement_id: String,
    pub classification: Classification,
    pub source: SourceKind,
    pub source_ref: String,
    pub granted_at: DateTime<Utc>,
    pub approvers: Vec<String>,
    pub last_decision: Option<ItemState>,
    pub last_reviewed_at: Option<DateTime<Utc>>,
    pub peers_holding: i64,
    pub peers_total: i64,
    pub recommendation: Recommendation,
    pub reason: String,
    pub strategy: ReviewerStrategy,
    pub stage: Stage,
    /// An employee id, or [`SECURITY_POOL`] when nobody else may.
    pub reviewer: String,
    /// Why the reviewer is not the natural one (escalated, reassigned).
    pub note: String,
    pub state: ItemState,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub justification: String,
    /// Who certified the first stage of a two-stage review.
    pub first_stage_by: Option<String>,
    pub version: i64,
}

impl CampaignDef {
    /// The review strategy for an item of `classification`.
    pub fn strategy_for(&self, classification: Classification) -> ReviewerStrategy {
        match self.reviewers {
            Some(s) => s,
            None if classification == Classification::Restricted => {
                ReviewerStrategy::ManagerThenOwner
            }
            None => ReviewerStrategy::Manager,
        }
    }

    /// True when a grant of `ent` held by someone of `department` is in scope.
    pub fn covers(&self, ent: &Entitlement, department: &str) -> bool {
        (self.levels.is_empty() || self.levels.contains(&ent.classification))
            && (self.systems.is_empty() || self.systems.contains(&ent.system))
            && (self.kinds.is_empty() || self.kinds.contains(&ent.kind))
            && (self.departments.is_empty() || self.departments.iter().any(|d| d == department))
    }

    /// The entitlements in scope, whoever holds them (departments aside).
    pub fn entitlements<'p>(&self, policy: &'p Policy) -> Vec<&'p Entitlement> {
        policy
            .entitlements
            .values()
            .filter(|e| {
                (self.levels.is_empty() || self.levels.contains(&e.classification))
                    && (self.systems.is_empty() || self.systems.contains(&e.system))
                    && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            })
            .collect()
    }

    /// How often the scheduler starts it: the shortest `review_every_months`
    /// among the levels in scope, and at most 12 months when physical areas
    /// are in scope. None: only by hand.
    pub fn every_months(&self, policy: &Policy) -> Option<u32> {
        if !self.scheduled {
            return None;
        }
        let ents = self.entitlements(policy);
        let mut months: Option<u32> = ents
            .iter()
            .map(|e| policy.level(e.classification).review_every_months)
            .filter(|m| *m > 0)
            .min();
        if ents.iter().any(|e| e.kind == EntitlementKind::PhysicalArea) {
            months = Some(months.map_or(PHYSICAL_AREA_MONTHS, |m| m.min(PHYSICAL_AREA_MONTHS)));
        }
        months
    }
}

/// When a campaign started at `last` (or never) is due again.
pub fn next_due(last: Option<DateTime<Utc>>, every_months: u32, now: DateTime<Utc>) -> bool {
    match last {
        None => true,
        Some(t) => t
            .checked_add_months(chrono::Months::new(every_months))
            .is_none_or(|due| due <= now),
    }
}

/// What a reviewer sees beside the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context<'a> {
    pub source: SourceKind,
    pub source_ref: &'a str,
    pub review_pending: bool,
    pub approvers: &'a [String],
    pub last_decision: Option<ItemState>,
    pub peers_holding: i64,
    pub peers_total: i64,
    pub classification: Classification,
}

/// The recommendation and its reason in words.
pub fn recommend(c: &Context<'_>) -> (Recommendation, String) {
    let peers = format!("held by {} of {} peers", c.peers_holding, c.peers_total);
    if c.source == SourceKind::Imported && c.last_decision.is_none() {
        return (
            Recommendation::LookClosely,
            "imported, never reviewed".into(),
        );
    }
    if c.review_pending {
        return (Recommendation::LookClosely, "kept after a move".into());
    }
    if c.last_decision == Some(ItemState::Flagged) {
        return (
            Recommendation::LookClosely,
            "unanswered at the last review (kept, flagged)".into(),
        );
    }
    if c.source == SourceKind::Birthright {
        return (
            Recommendation::Certify,
            format!("birthright of role {}", c.source_ref),
        );
    }
    // Requested or otherwise: what the person's peers hold says most.
    if c.peers_total >= 5 {
        let share = c.peers_holding as f64 / c.peers_total as f64;
        if share < 0.1 {
            return (Recommendation::Revoke, peers);
        }
        if share < 0.25 {
            return (Recommendation::LookClosely, peers);
        }
        return (Recommendation::Certify, peers);
    }
    if c.classification == Classification::Restricted {
        return (
            Recommendation::LookClosely,
            format!("restricted access; {peers}"),
        );
    }
    if !c.approvers.is_empty() {
        return (
            Recommendation::Certify,
            format!("requested, approved by {}; {peers}", c.approvers.join(", ")),
        );
    }
    (Recommendation::LookClosely, peers)
}

/// The reviewer of an item at `stage`: the holder's manager or the
/// entitlement's owner; nobody reviews their own access or a grant they
/// approved alone, nor anybody who has left: up their manager chain, then
/// the fallback reviewer, then any security officer. Returns the reviewer
/// and, when it is not the natural one, why.
#[allow(clippy::too_many_arguments)]
pub fn resolve_reviewer(
    stage: Stage,
    subject: &str,
    subject_manager: Option<&str>,
    owner: &str,
    approvers: &[String],
    first_stage_by: Option<&str>,
    fallback: Option<&str>,
    org: &dyn Org,
) -> (String, String) {
    let natural = match stage {
        Stage::Manager => subject_manager.map(str::to_string),
        Stage::Owner => Some(owner.to_string()),
    };
    let why = |p: &str| -> Option<&'static str> {
        if p == subject {
            Some("it is their own access")
        } else if approvers.len() == 1 && approvers[0] == p {
            Some("they approved it alone")
        } else if first_stage_by == Some(p) {
            Some("they reviewed the first stage")
        } else if !org.available(p) {
            Some("they are not active")
        } else {
            None
        }
    };
    let mut note = String::new();
    let mut candidate = natural.clone();
    let mut hops = 0;
    while let Some(c) = candidate.clone() {
        match why(&c) {
            None => break,
            Some(w) => {
                if note.is_empty() {
                    note = format!("{c} may not review: {w}");
                }
                candidate = org.manager_of(&c);
                hops += 1;
                if hops > 50 {
                    candidate = None;
                }
            }
        }
    }
    if let Some(c) = candidate {
        if !note.is_empty() {
            note = format!("{note}; escalated to {c}");
        }
        return (c, note);
    }
    let lead = if natural.is_none() {
        format!("nobody is the {stage} of this grant")
    } else {
        note
    };
    match fallback {
        Some(f) if why(f).is_none() => (f.to_string(), format!("{lead}; the fallback reviewer")),
        _ => (
            SECURITY_POOL.to_string(),
            format!("{lead}; any security officer"),
        ),
    }
}

/// A reviewer's decision on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Certify,
    Revoke,
}

/// Who is deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewer {
    pub employee_id: String,
    pub security_officer: bool,
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Certified at the first of two stages: the owner reviews next.
    NextStage,
    Certified,
    /// The grant is to be revoked (reason `review`).
    Revoked,
}

fn refuse(code: ErrorCode, m: impl Into<String>) -> DomainError {
    DomainError::new(code, m)
}

/// A decision that must say why: every revocation, and certifying
/// restricted access.
pub fn needs_justification(verdict: Verdict, classification: Classification) -> bool {
    verdict == Verdict::Revoke
        || (verdict == Verdict::Certify && classification == Classification::Restricted)
}

/// Decides `item`. Justification: see [`needs_justification`].
pub fn decide(
    item: &mut ReviewItem,
    who: &Reviewer,
    verdict: Verdict,
    justification: &str,
    now: DateTime<Utc>,
) -> Result<Decided, DomainError> {
    if item.state != ItemState::Open {
        return Err(refuse(
            ErrorCode::FailedPrecondition,
            format!("item {} is {}, not open", item.id, item.state),
        ));
    }
    if who.employee_id == item.employee_id {
        return Err(refuse(
            ErrorCode::PermissionDenied,
            "nobody reviews their own access",
        ));
    }
    let fits = if item.reviewer == SECURITY_POOL {
        who.security_officer
    } else {
        item.reviewer == who.employee_id
    };
    if !fits {
        return Err(refuse(
            ErrorCode::PermissionDenied,
            format!("item {} is not assigned to you", item.id),
        ));
    }
    if item.first_stage_by.as_deref() == Some(who.employee_id.as_str()) {
        return Err(refuse(
            ErrorCode::PermissionDenied,
            "the same person never reviews both stages",
        ));
    }
    let justification = justification.trim();
    if let Some(p) = optional_text_problem(justification, MAX_JUSTIFICATION) {
        return Err(DomainError::invalid(
            "invalid decision",
            vec![FieldViolation::new("justification", p)],
        ));
    }
    if needs_justification(verdict, item.classification) && justification.is_empty() {
        return Err(DomainError::invalid(
            "invalid decision",
            vec![FieldViolation::new(
                "justification",
                match verdict {
                    Verdict::Revoke => "say why the access is revoked".to_string(),
                    Verdict::Certify => {
                        "certifying restricted access needs a justification".to_string()
                    }
                },
            )],
        ));
    }
    if verdict == Verdict::Certify
        && item.strategy == ReviewerStrategy::ManagerThenOwner
        && item.stage == Stage::Manager
    {
        item.first_stage_by = Some(who.employee_id.clone());
        item.stage = Stage::Owner;
        item.justification = justification.to_string();
        return Ok(Decided::NextStage);
    }
    item.state = match verdict {
        Verdict::Certify => ItemState::Certified,
        Verdict::Revoke => ItemState::Revoked,
    };
    item.decided_by = Some(who.employee_id.clone());
    item.decided_at = Some(now);
    item.justification = justification.to_string();
    Ok(match verdict {
        Verdict::Certify => Decided::Certified,
        Verdict::Revoke => Decided::Revoked,
    })
}

/// What an unanswered item becomes at the deadline. Protected principals
/// are never revoked by default (flagged instead); a mover micro-campaign
/// revokes what nobody answered.
pub fn unanswered(
    policy: &Policy,
    item: &ReviewItem,
    mover: bool,
    protected: &BTreeSet<String>,
) -> ItemState {
    let default = if mover {
        NoResponse::Revoke
    } else {
        policy.level(item.classification).no_review_response
    };
    match default {
        NoResponse::Revoke if protected.contains(&item.employee_id) => ItemState::Flagged,
        NoResponse::Revoke => ItemState::Revoked,
        NoResponse::Keep => ItemState::Kept,
        NoResponse::KeepFlagged => ItemState::Flagged,
    }
}

/// Checks a reassignment: never to the item's subject, with a reason.
pub fn check_reassign(item: &ReviewItem, to: &str, reason: &str) -> Result<(), DomainError> {
    if item.state != ItemState::Open {
        return Err(refuse(
            ErrorCode::FailedPrecondition,
            format!("item {} is {}, not open", item.id, item.state),
        ));
    }
    // Every problem is named at once.
    let mut v = Vec::new();
    if to == item.employee_id {
        v.push(FieldViolation::new(
            "to",
            "an item is never reassigned to the person whose access it is",
        ));
    }
    if reason.trim().is_empty() {
        v.push(FieldViolation::new("reason", "say why it is reassigned"));
    } else if let Some(p) = optional_text_problem(reason.trim(), MAX_JUSTIFICATION) {
        v.push(FieldViolation::new("reason", p));
    }
    if !v.is_empty() {
        return Err(DomainError::invalid("invalid reassignment", v));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
