//! The audit hash chain. Every event carries the hash of its predecessor, so
//! altering, removing or reordering any event breaks the chain from there on;
//! [`Verifier`] finds the first event that does not fit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

string_enum!(
    /// What an audit event records. These names are a contract: exports,
    /// auditors' queries and webhook subscribers match on them, so a name
    /// never changes once released (a new meaning gets a new name).
    Action {
        AccessDenied => "access.denied",
        AccessDeniedBurst => "access.denied_burst",
        AccessRequestApproved => "access.request.approved",
        AccessRequestCancelled => "access.request.cancelled",
        AccessRequestCreated => "access.request.created",
        AccessRequestDenied => "access.request.denied",
        AccessRequestExpired => "access.request.expired",
        AccessRequestReassigned => "access.request.reassigned",
        AccessRequestStepApproved => "access.request.step_approved",
        AuditCheckpoint => "audit.checkpoint",
        AuditVerifyFailed => "audit.verify.failed",
        CampaignClosed => "campaign.closed",
        CampaignCloseHeld => "campaign.close.held",
        CampaignEscalation => "campaign.escalation",
        CampaignReminder => "campaign.reminder",
        CampaignStarted => "campaign.started",
        CatalogOwnerLeft => "catalog.owner_left",
        DirectorySync => "directory.sync",
        DirectoryOrphanAccount => "directory.orphan_account",
        DirectoryEnabledLeaver => "directory.enabled_leaver",
        DirectoryUnmanagedMembership => "directory.unmanaged_membership",
        DirectoryMissingMembership => "directory.missing_membership",
        DirectoryMissingAccount => "directory.missing_account",
        GrantAdded => "grant.added",
        GrantExtended => "grant.extended",
        GrantImported => "grant.imported",
        GrantReviewPending => "grant.review_pending",
        GrantRevoked => "grant.revoked",
        HeldChangeReleased => "held_change.released",
        HeldChangeDiscarded => "held_change.discarded",
        HrEndDateReached => "hr.end_date_reached",
        HrEventApplied => "hr.event.applied",
        HrEventRejected => "hr.event.rejected",
        HrEventRescinded => "hr.event.rescinded",
        HrEventScheduled => "hr.event.scheduled",
        HrEventSuperseded => "hr.event.superseded",
        HrRosterPresence => "hr.roster_presence",
        IdentityPreHireAnnounced => "identity.pre_hire_announced",
        IdentityPreHireWithdrawn => "identity.pre_hire_withdrawn",
        PolicyApplied => "policy.applied",
        PolicyApplyHeld => "policy.apply.held",
        PolicyRecomputed => "policy.recomputed",
        ProvisioningFailed => "provisioning.failed",
        ProvisioningRetried => "provisioning.retried",
        ProvisioningStuck => "provisioning.stuck",
        ReviewCertified => "review.certified",
        ReviewDefaulted => "review.defaulted",
        ReviewReassigned => "review.reassigned",
        ReviewRevoked => "review.revoked",
        ReviewStageCertified => "review.stage_certified",
        ReviewSuperseded => "review.superseded",
        RosterSync => "roster.sync",
        RosterSyncHeld => "roster.sync.held",
        SodCheck => "sod.check",
        SodExceptionExpired => "sod.exception.expired",
        SodExceptionGranted => "sod.exception.granted",
        SodViolation => "sod.violation",
        SodViolationResolved => "sod.violation.resolved",
        WebhookRedelivered => "webhook.redelivered",
        WebSignedIn => "web.signed_in",
        WebSignedOut => "web.signed_out",
        WebSessionEnded => "web.session_ended",
    }
);

/// What an audit event is about, written `kind:id` (e.g. `identity:E1007`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Identity(String),
    Grant(String),
    HeldChange(String),
    Roster {
        source: String,
        sync_id: String,
    },
    DirectorySync(String),
    /// A directory account no identity owns (by its DN).
    Account(String),
    /// An RPC, for denied calls.
    Rpc(String),
    /// An access request.
    Request(String),
    /// A separation-of-duties exception.
    SodException(String),
    /// An access review campaign.
    Campaign(String),
    /// A review item of a campaign.
    ReviewItem(String),
    /// The policy (its versions are in the detail).
    Policy,
    /// The audit log itself.
    Audit,
    /// The service as a whole.
    Service,
    /// A webhook subscription.
    Webhook(String),
}

impl Target {
    pub fn identity(id: &str) -> Target {
        Target::Identity(id.to_string())
    }
    pub fn grant(id: &str) -> Target {
        Target::Grant(id.to_string())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Identity(id) => write!(f, "identity:{id}"),
            Target::Grant(id) => write!(f, "grant:{id}"),
            Target::HeldChange(id) => write!(f, "held_change:{id}"),
            Target::Roster { source, sync_id } => write!(f, "roster:{source}:{sync_id}"),
            Target::DirectorySync(id) => write!(f, "directory_sync:{id}"),
            Target::Account(dn) => write!(f, "account:{dn}"),
            Target::Rpc(path) => write!(f, "rpc:{path}"),
            Target::Request(id) => write!(f, "request:{id}"),
            Target::SodException(id) => write!(f, "sod_exception:{id}"),
            Target::Campaign(id) => write!(f, "campaign:{id}"),
            Target::ReviewItem(id) => write!(f, "review_item:{id}"),
            Target::Policy => f.write_str("policy"),
            Target::Audit => f.write_str("audit"),
            Target::Service => f.write_str("idgov"),
            Target::Webhook(id) => write!(f, "webhook:{id}"),
        }
    }
}

/// An audit event to append; the store assigns its position and hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    /// A security event: it matters to people and is pushed to subscribers.
    pub security: bool,
}

impl AuditEntry {
    pub fn new(actor: &str, action: Action, target: Target, detail: serde_json::Value) -> Self {
        Self {
            actor: actor.to_string(),
            action: action.as_str().to_string(),
            target: target.to_string(),
            detail,
            security: false,
        }
    }

    /// Marks this entry as a security event.
    pub fn security(mut self) -> Self {
        self.security = true;
        self
    }
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The detail as stored JSON text (hashed as is).
    pub detail: String,
    pub security: bool,
    pub prev_hash: String,
    pub hash: String,
}

/// What a signed audit checkpoint signs: the chain head's position and hash
/// at a time, in one unambiguous text.
pub fn checkpoint_statement(seq: i64, hash: &str, signed_at_micros: i64) -> String {
    format!("idgov.audit.checkpoint.v1\n{seq}\n{hash}\n{signed_at_micros}")
}

/// The hash of an event: SHA-256 over its fields, each length-prefixed so
/// that no two different events share an encoding.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    prev_hash: &str,
    seq: i64,
    occurred_at_micros: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    security: bool,
) -> String {
    let mut h = Sha256::new();
    h.update(b"idgov.audit.v1");
    for part in [
        prev_hash.as_bytes(),
        actor.as_bytes(),
        action.as_bytes(),
        target.as_bytes(),
        detail.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(seq.to_be_bytes());
    h.update(occurred_at_micros.to_be_bytes());
    h.update([u8::from(security)]);
    hex::encode(h.finalize())
}

impl AuditRecord {
    /// Recomputes this record's hash from its fields.
    pub fn computed_hash(&self) -> String {
        event_hash(
            &self.prev_hash,
            self.seq,
            self.occurred_at.timestamp_micros(),
            &self.actor,
            &self.action,
            &self.target,
            &self.detail,
            self.security,
        )
    }
}

/// The first problem found in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: String,
}

/// Checks records fed in `seq` order.
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: i64,
    prev_hash: String,
    checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            checked: 0,
        }
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The hash of the last event checked.
    pub fn head_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Checks the next record.
    pub fn check(&mut self, r: &AuditRecord) -> Result<(), ChainBreak> {
        if r.seq != self.next_seq {
            return Err(ChainBreak {
                seq: self.next_seq,
                problem: if r.seq > self.next_seq {
                    format!(
                        "event {} is missing (the next stored event is {})",
                        self.next_seq, r.seq
                    )
                } else {
                    format!("event {} appears out of order", r.seq)
                },
            });
        }
        if r.prev_hash != self.prev_hash {
            return Err(ChainBreak {
                seq: r.seq,
                problem: format!(
                    "event {} does not link to its predecessor (prev_hash altered)",
                    r.seq
                ),
            });
        }
        if r.computed_hash() != r.hash {
            return Err(ChainBreak {
                seq: r.seq,
                problem: format!(
                    "event {} was altered: its content does not match its hash",
                    r.seq
                ),
            });
        }
        self.prev_hash = r.hash.clone();
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Checks the end of the chain against the recorded head (last seq and
    /// hash), which catches events removed from the end.
    pub fn finish(&self, head: Option<(i64, &str)>) -> Result<(), ChainBreak> {
        let (head_seq, head_hash) = head.unwrap_or((0, GENESIS_HASH));
        let last = self.next_seq - 1;
        if head_seq > last {
            return Err(ChainBreak {
                seq: last + 1,
                problem: format!(
                    "events {}..={} are missing: the chain head records {} events",
                    last + 1,
                    head_seq,
                    head_seq
                ),
            });
        }
        if head_seq < last || head_hash != self.prev_hash {
            return Err(ChainBreak {
                seq: last,
                problem: format!(
                    "the chain head (event {head_seq}) does not match the last event {last}"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let occurred_at = Utc
                    .timestamp_opt(1_700_000_000 + seq, 0)
                    .single()
                    .unwrap_or_default();
                let mut r = AuditRecord {
                    seq,
                    occurred_at,
                    actor: "system:test".into(),
                    action: "test.event".into(),
                    target: format!("identity:E{seq}"),
                    detail: format!("{{\"n\":{seq}}}"),
                    security: false,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = r.computed_hash();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn verify(records: &[AuditRecord], head: Option<(i64, &str)>) -> Result<u64, ChainBreak> {
        let mut v = Verifier::new();
        for r in records {
            v.check(r)?;
        }
        v.finish(head)?;
        Ok(v.checked())
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c, Some((5, &c[4].hash))), Ok(5));
        assert_eq!(verify(&[], None), Ok(0));
    }

    #[test]
    fn an_altered_event_is_named() {
        let mut c = chain(5);
        let head = c[4].hash.clone();
        c[2].detail = "{\"n\":999}".into();
        let err = verify(&c, Some((5, &head))).err();
        assert_eq!(err.map(|e| e.seq), Some(3));
    }

    #[test]
    fn a_removed_event_is_named() {
        let mut c = chain(5);
        let head = c[4].hash.clone();
        c.remove(1);
        assert_eq!(verify(&c, Some((5, &head))).err().map(|e| e.seq), Some(2));
        let mut c = chain(5);
        c.pop();
        assert_eq!(verify(&c, Some((5, &head))).err().map(|e| e.seq), Some(5));
    }

    #[test]
    fn a_rehashed_forgery_breaks_the_next_link() {
        let mut c = chain(4);
        let head = c[3].hash.clone();
        c[1].actor = "user:mallory".into();
        c[1].hash = c[1].computed_hash();
        assert_eq!(verify(&c, Some((4, &head))).err().map(|e| e.seq), Some(3));
    }
}
