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
        AccessRequestReminder => "access.request.reminder",
        AccessRequestEscalation => "access.request.escalation",
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
        RosterSyncInterrupted => "roster.sync.interrupted",
        SodCheck => "sod.check",
        SodExceptionExpired => "sod.exception.expired",
        SodExceptionGranted => "sod.exception.granted",
        SodViolation => "sod.violation",
        SodViolationResolved => "sod.violation.resolved",
        WebhookRedelivered => "webhook.redelivered",
        WebhookCreated => "webhook.created",
        WebhookDeleted => "webhook.deleted",
        WebhookDisabled => "webhook.disabled",
        WebhookSecretRotated => "webhook.secret_rotated",
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

    /// The person this event is about (see [`subject_of`]).
    pub fn subject(&self) -> Option<&str> {
        subject_of(&self.target, &self.detail)
    }
}

/// The keys of an audit detail that name the person an event is about, in
/// the order they are looked at: a grant's holder, a request's
/// beneficiary, a review item's person.
pub const SUBJECT_KEYS: [&str; 3] = ["employee_id", "beneficiary", "employee"];

/// [`subject_of`] for a detail stored as JSON text, as `audit verify`
/// reads it. Most details are read by a parse that keeps only the three
/// keys; any detail that parse does not take (not an object, a key twice)
/// is read whole, so the answer is always [`subject_of`]'s.
pub fn subject_in_text(target: &str, detail: &str) -> Option<String> {
    if let Some(id) = target.strip_prefix("identity:") {
        return Some(id).filter(|s| !s.is_empty()).map(str::to_string);
    }
    let named = if detail.trim_start().starts_with('{') {
        serde_json::from_str::<Named>(detail).ok()
    } else {
        None
    };
    match named {
        Some(n) => [n.employee_id, n.beneficiary, n.employee]
            .into_iter()
            .find_map(|t| match t {
                Some(Text::Str(s)) => Some(s),
                _ => None,
            })
            .filter(|s| !s.is_empty()),
        None => {
            let v: serde_json::Value = serde_json::from_str(detail).ok()?;
            subject_of(target, &v).map(str::to_string)
        }
    }
}

/// The keys of a detail that can name its person (see [`SUBJECT_KEYS`]).
#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    employee_id: Option<Text>,
    #[serde(default)]
    beneficiary: Option<Text>,
    #[serde(default)]
    employee: Option<Text>,
}

/// A value that is text, or anything else (skipped unread).
enum Text {
    Str(String),
    Other,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Text, E> {
                Ok(Text::Str(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
                Ok(Text::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
                Ok(Text::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
                Ok(Text::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
                Ok(Text::Other)
            }
            fn visit_unit<E>(self) -> Result<Text, E> {
                Ok(Text::Other)
            }
            fn visit_none<E>(self) -> Result<Text, E> {
                Ok(Text::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Text, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Text::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Text, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Text::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The person an audit event is about, for the per-person audit filter:
/// the identity it targets, or else the first of [`SUBJECT_KEYS`] its
/// detail gives as text. Derived from what the chain hashes, so stored
/// beside it as an index that verification derives again (the migration
/// that added it derives the same from older events).
pub fn subject_of<'a>(target: &'a str, detail: &'a serde_json::Value) -> Option<&'a str> {
    match target.strip_prefix("identity:") {
        Some(id) => Some(id),
        None => SUBJECT_KEYS
            .iter()
            .find_map(|k| detail.get(k).and_then(serde_json::Value::as_str)),
    }
    .filter(|s| !s.is_empty())
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

    /// A verifier for the part of a chain that starts at `next_seq`, whose
    /// predecessor's hash is taken to be `prev_hash` (checked by whoever
    /// verified the part before): parts of one chain can then be verified
    /// side by side and their ends compared.
    pub fn resume(next_seq: i64, prev_hash: String) -> Self {
        Self {
            next_seq,
            prev_hash,
            checked: 0,
        }
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Checks that every event up to `last_seq` was fed (the end of a part
    /// that is not the end of the chain).
    pub fn expect_through(&self, last_seq: i64) -> Result<(), ChainBreak> {
        if self.next_seq <= last_seq {
            return Err(ChainBreak {
                seq: self.next_seq,
                problem: format!("event {} is missing", self.next_seq),
            });
        }
        Ok(())
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

/// One part of a chain, the events `after + 1 ..= through`, checked on its
/// own so that parts can be read and hashed side by side; [`join_parts`]
/// then reports what one pass over the whole chain would.
#[derive(Debug, Clone)]
pub struct ChainPart {
    after: i64,
    through: i64,
    /// The position and stored `prev_hash` of the first event fed.
    first: Option<(i64, String)>,
    v: Verifier,
    broken: Option<ChainBreak>,
}

impl ChainPart {
    pub fn new(after: i64, through: i64) -> Self {
        let v = if after == 0 {
            Verifier::new()
        } else {
            Verifier::resume(after + 1, String::new())
        };
        Self {
            after,
            through,
            first: None,
            v,
            broken: None,
        }
    }

    /// The events this part covers: `(after, through]`.
    pub fn bounds(&self) -> (i64, i64) {
        (self.after, self.through)
    }

    /// Checks the next stored event of this part; `false` once the part is
    /// broken (reading further is pointless).
    pub fn feed(&mut self, r: &AuditRecord) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if self.first.is_none() {
            self.first = Some((r.seq, r.prev_hash.clone()));
            if self.after > 0 {
                // The link to the part before is checked by `join_parts`.
                self.v = Verifier::resume(self.after + 1, r.prev_hash.clone());
            }
        }
        match self.v.check(r) {
            Ok(()) => true,
            Err(b) => {
                self.broken = Some(b);
                false
            }
        }
    }

    /// Records a problem with event `seq` found beside its hash (its
    /// person index does not match its content), unless the part broke
    /// before it.
    pub fn mismatch(&mut self, seq: i64, problem: String) {
        if self.broken.is_none() {
            self.broken = Some(ChainBreak { seq, problem });
        }
    }

    /// Records a stored event that does not even read as an event (`seq`
    /// when its position could be read).
    pub fn unreadable(&mut self, seq: Option<i64>, error: &str) {
        if self.broken.is_some() {
            return;
        }
        let next = self.v.next_seq;
        self.broken = Some(match seq {
            Some(seq) => ChainBreak {
                seq,
                problem: format!("event {seq} cannot be read as stored: {error}"),
            },
            None => ChainBreak {
                seq: next,
                problem: format!("the event after {} cannot be read: {error}", next - 1),
            },
        });
    }
}

/// Joins parts that cover `1..=head` in order: how many events verified
/// before the first problem, and that problem, exactly as one [`Verifier`]
/// fed the whole chain and finished with `head` would report them.
pub fn join_parts(parts: &[ChainPart], head: Option<(i64, &str)>) -> (u64, Option<ChainBreak>) {
    let mut checked = 0;
    let mut prev_hash = GENESIS_HASH.to_string();
    for (k, p) in parts.iter().enumerate() {
        if k > 0
            && let Some((seq, prev)) = &p.first
            && *seq == p.after + 1
            && *prev != prev_hash
        {
            let b = ChainBreak {
                seq: *seq,
                problem: format!(
                    "event {seq} does not link to its predecessor (prev_hash altered)"
                ),
            };
            return (checked, Some(b));
        }
        checked += p.v.checked();
        if let Some(b) = &p.broken {
            return (checked, Some(b.clone()));
        }
        let end = if k + 1 == parts.len() {
            p.v.finish(head)
        } else {
            p.v.expect_through(p.through)
        };
        if let Err(b) = end {
            return (checked, Some(b));
        }
        prev_hash = p.v.head_hash().to_string();
    }
    if parts.is_empty() {
        return (0, Verifier::new().finish(head).err());
    }
    (checked, None)
}

/// `n` parts of about equal size covering `1..=head_seq` (one when short).
pub fn split_chain(head_seq: i64, n: usize) -> Vec<ChainPart> {
    let n = (n.max(1) as i64).min(head_seq / 10_000 + 1);
    let size = head_seq / n;
    (0..n)
        .map(|k| {
            let after = k * size;
            let through = if k + 1 == n { head_seq } else { after + size };
            ChainPart::new(after, through)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The person read from a stored detail is the one written: the same
    /// as [`subject_of`] on the parsed detail, for generated details with
    /// the keys as text, numbers, null, objects, arrays, nested, repeated,
    /// escaped, and for details that are not objects.
    #[test]
    fn the_person_read_from_text_is_the_one_written() {
        let values = [
            r#""E1""#,
            r#""""#,
            "7",
            "null",
            "true",
            r#"{"employee_id":"E9"}"#,
            r#"["E1"]"#,
            r#""\u00d8\"q""#,
            r#""E2""#,
            "1.5e3",
        ];
        let keys = ["employee_id", "beneficiary", "employee", "x", "Employee_id"];
        let mut seed = 0x5eed_u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        let mut details: Vec<String> = vec![
            "[1,2]".into(),
            "\"E1\"".into(),
            "null".into(),
            "{}".into(),
            " {\"employee\":\"E3\"}".into(),
            r#"{"employee_id":"E1","employee_id":"E2"}"#.into(),
            "{not json".into(),
        ];
        for _ in 0..3000 {
            let n = next(5);
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "\"{}\":{}",
                        keys[next(keys.len())],
                        values[next(values.len())]
                    )
                })
                .collect();
            details.push(format!("{{{}}}", fields.join(",")));
        }
        let mut named = 0;
        for d in &details {
            for target in ["grant:g1", "identity:E5", "identity:", "IDENTITY:E5"] {
                let want = serde_json::from_str::<serde_json::Value>(d)
                    .ok()
                    .and_then(|v| subject_of(target, &v).map(str::to_string))
                    .or_else(|| {
                        target
                            .strip_prefix("identity:")
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                    });
                let got = subject_in_text(target, d);
                assert_eq!(got, want, "{target} {d}");
                named += usize::from(got.is_some());
            }
        }
        assert!(named > 3000, "{named}");
    }

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

    /// Parts checked side by side report what one pass reports: the same
    /// first problem and the same count, for any tampering and any split.
    #[test]
    fn parts_report_what_one_pass_reports() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for case in 0..3000 {
            let n: i64 = rng.random_range(0..40);
            let mut c = chain(n);
            let head = c.last().map(|r| (r.seq, r.hash.clone()));
            if n > 0 {
                for _ in 0..rng.random_range(0..3) {
                    let len = c.len();
                    if len == 0 {
                        break;
                    }
                    let i = rng.random_range(0..len);
                    match rng.random_range(0..5) {
                        0 => c[i].detail.push('x'),
                        1 => c[i].prev_hash = "00".into(),
                        2 => {
                            c[i].target = "identity:forged".into();
                            c[i].hash = c[i].computed_hash();
                        }
                        3 => {
                            c.remove(i);
                        }
                        _ => c[i].seq += 1000,
                    }
                }
                c.sort_by_key(|r| r.seq);
            }
            let head_ref = head.as_ref().map(|(s, h)| (*s, h.as_str()));
            let mut v = Verifier::new();
            let mut one = None;
            for r in &c {
                if r.seq > head_ref.map_or(0, |h| h.0) {
                    break;
                }
                if let Err(b) = v.check(r) {
                    one = Some(b);
                    break;
                }
            }
            if one.is_none() {
                one = v.finish(head_ref).err();
            }
            // A random split of 1..=head into parts.
            let top = head_ref.map_or(0, |h| h.0);
            let mut cuts: Vec<i64> = (0..rng.random_range(0..4))
                .map(|_| rng.random_range(0..=top))
                .collect();
            cuts.push(0);
            cuts.push(top);
            cuts.sort();
            cuts.dedup();
            let mut parts: Vec<ChainPart> = cuts
                .windows(2)
                .map(|w| ChainPart::new(w[0], w[1]))
                .collect();
            if parts.is_empty() {
                parts.push(ChainPart::new(0, 0));
            }
            for p in &mut parts {
                let (after, through) = p.bounds();
                for r in c.iter().filter(|r| r.seq > after && r.seq <= through) {
                    if !p.feed(r) {
                        break;
                    }
                }
            }
            let (checked, broken) = join_parts(&parts, head_ref);
            assert_eq!(
                broken.as_ref().map(|b| b.seq),
                one.as_ref().map(|b| b.seq),
                "case {case}: the same first problem ({broken:?} / {one:?})"
            );
            if one.is_none() {
                assert_eq!(checked, v.checked(), "case {case}");
            }
        }
    }

    #[test]
    fn a_long_chain_is_split_evenly_and_a_short_one_not() {
        let parts = split_chain(1_000_000, 4);
        let b: Vec<(i64, i64)> = parts.iter().map(|p| p.bounds()).collect();
        assert_eq!(
            b,
            vec![
                (0, 250_000),
                (250_000, 500_000),
                (500_000, 750_000),
                (750_000, 1_000_000)
            ]
        );
        assert_eq!(split_chain(5_000, 4).len(), 1);
        assert_eq!(split_chain(0, 4)[0].bounds(), (0, 0));
    }
}
