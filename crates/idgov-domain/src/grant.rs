//! Grants: an identity holding an entitlement, with where it came from and,
//! once revoked, why. Nothing is deleted: revoked grants stay as history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

string_enum!(
    /// Where a grant came from.
    SourceKind { Birthright => "birthright", Request => "request", Exception => "exception", Imported => "imported" }
);

string_enum!(
    /// Why a grant was revoked.
    RevokeReason {
        Leaver => "leaver",
        Mover => "mover",
        Review => "review",
        Expired => "expired",
        Manual => "manual",
        Sod => "sod",
        Clearance => "clearance",
        Policy => "policy",
    }
);

/// A grant of an entitlement to an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub employee_id: String,
    pub entitlement_id: String,
    pub source: SourceKind,
    /// The role of a birthright grant, the request id of a requested one.
    pub source_ref: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub approvers: Vec<String>,
    pub justification: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<RevokeReason>,
    /// Kept pending a review: the mover review for a mover's grant, the
    /// onboarding review for one imported from the directory (`source`
    /// says which).
    pub review_pending: bool,
    /// The separation-of-duties exception that allowed it: when the
    /// exception ends, the grant is revoked (`sod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_id: Option<String>,
}

impl Grant {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A grant to create; the store assigns its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewGrant {
    pub entitlement_id: String,
    pub source: SourceKind,
    pub source_ref: String,
    pub justification: String,
    /// When a time-bound grant ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Who approved it (requested grants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// The SoD exception that allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_id: Option<String>,
}

impl NewGrant {
    /// A grant with no expiry, approvers or exception.
    pub fn plain(
        entitlement_id: impl Into<String>,
        source: SourceKind,
        source_ref: impl Into<String>,
        justification: impl Into<String>,
    ) -> NewGrant {
        NewGrant {
            entitlement_id: entitlement_id.into(),
            source,
            source_ref: source_ref.into(),
            justification: justification.into(),
            expires_at: None,
            approvers: vec![],
            exception_id: None,
        }
    }
}

/// A change to an identity's grants, decided by a domain rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GrantChange {
    Add(NewGrant),
    Revoke {
        grant_id: String,
        entitlement_id: String,
        reason: RevokeReason,
    },
    /// Keep the grant, but put it into the mover review.
    MarkMoverReview {
        grant_id: String,
        entitlement_id: String,
    },
}
