//! The catalog and classification policy, read from a TOML document:
//! classification levels, systems, entitlements, roles and birthright rules,
//! plus the HR time zone and the mass-change guard.
//!
//! [`Policy::parse`] checks structure and names the exact offending entry;
//! [`Policy::check_owners`] checks that owners are known identities, which
//! needs the store and is done when a policy is applied.

use crate::Classification;
use crate::error::{DomainError, ErrorCode, FieldViolation};
use crate::identity::{Attributes, Status};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

string_enum!(
    /// What happens to a non-birthright grant when its holder moves.
    OnMover { Keep => "keep", KeepAndReview => "keep_and_review", Revoke => "revoke" }
);

string_enum!(
    /// What a campaign does with an item nobody answered.
    NoResponse { Keep => "keep", KeepFlagged => "keep_flagged", Revoke => "revoke" }
);

string_enum!(
    /// An approval step of an access request.
    Approver { Manager => "manager", Owner => "owner", Security => "security" }
);

string_enum!(
    /// What a system is.
    SystemKind { Application => "application", Directory => "directory", PhysicalSite => "physical_site" }
);

string_enum!(
    /// What an entitlement is.
    EntitlementKind { AppRole => "app_role", LdapGroup => "ldap_group", PhysicalArea => "physical_area" }
);

/// The rules of one classification level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelPolicy {
    pub birthright_allowed: bool,
    pub approvals: Vec<Approver>,
    /// Longest a requested grant may last, in days; 0 is no limit.
    pub max_grant_days: u32,
    /// How often grants are reviewed, in months; 0 is never.
    pub review_every_months: u32,
    pub on_mover: OnMover,
    pub no_review_response: NoResponse,
    /// Days an access request waits for its approvals before it expires.
    #[serde(default = "default_request_expiry")]
    pub request_expiry_days: u32,
}

fn default_request_expiry() -> u32 {
    14
}

impl LevelPolicy {
    /// The built-in defaults for a level (documented in docs/classification.md).
    pub fn default_for(level: Classification) -> Self {
        use Approver::*;
        match level {
            Classification::Public => Self {
                birthright_allowed: true,
                approvals: vec![],
                max_grant_days: 0,
                review_every_months: 0,
                on_mover: OnMover::Keep,
                no_review_response: NoResponse::Keep,
                request_expiry_days: 14,
            },
            Classification::Internal => Self {
                birthright_allowed: true,
                approvals: vec![Manager],
                max_grant_days: 0,
                review_every_months: 12,
                on_mover: OnMover::KeepAndReview,
                no_review_response: NoResponse::KeepFlagged,
                request_expiry_days: 14,
            },
            Classification::Confidential => Self {
                birthright_allowed: true,
                approvals: vec![Manager, Owner],
                max_grant_days: 180,
                review_every_months: 6,
                on_mover: OnMover::Revoke,
                no_review_response: NoResponse::Revoke,
                request_expiry_days: 14,
            },
            Classification::Restricted => Self {
                birthright_allowed: false,
                approvals: vec![Manager, Owner, Security],
                max_grant_days: 90,
                review_every_months: 3,
                on_mover: OnMover::Revoke,
                no_review_response: NoResponse::Revoke,
                request_expiry_days: 14,
            },
        }
    }
}

/// A level override in the document: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelDoc {
    birthright_allowed: Option<bool>,
    approvals: Option<Vec<Approver>>,
    max_grant_days: Option<u32>,
    review_every_months: Option<u32>,
    on_mover: Option<OnMover>,
    no_review_response: Option<NoResponse>,
    request_expiry_days: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestsDoc {
    fallback_approver: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewsDoc {
    fallback_reviewer: Option<String>,
    #[serde(default)]
    protected: Vec<String>,
}

string_enum!(
    /// Who reviews an item: the holder's manager, the entitlement's owner,
    /// or the manager and then the owner (two stages).
    ReviewerStrategy { Manager => "manager", Owner => "owner", ManagerThenOwner => "manager_then_owner" }
);

/// An access review campaign, as the policy defines it. An empty scope
/// list means "any".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDef {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Classification levels in scope.
    #[serde(default)]
    pub levels: Vec<Classification>,
    #[serde(default)]
    pub systems: Vec<String>,
    /// Entitlement kinds, e.g. `physical_area`.
    #[serde(default)]
    pub kinds: Vec<EntitlementKind>,
    /// Departments of the people holding the access.
    #[serde(default)]
    pub departments: Vec<String>,
    /// Default: `manager`, and `manager_then_owner` for restricted items.
    #[serde(default)]
    pub reviewers: Option<ReviewerStrategy>,
    #[serde(default = "default_campaign_days")]
    pub duration_days: u32,
    /// A reminder to reviewers with open items, this many days after start.
    #[serde(default = "default_remind_days")]
    pub remind_after_days: u32,
    /// Open items are escalated to the reviewer's manager after this many days.
    #[serde(default = "default_escalate_days")]
    pub escalate_after_days: u32,
    /// Started by the scheduler on the levels' `review_every_months`
    /// (physical areas at least yearly); `false`: only by hand.
    #[serde(default = "default_true")]
    pub scheduled: bool,
}

fn default_campaign_days() -> u32 {
    14
}
fn default_remind_days() -> u32 {
    7
}
fn default_escalate_days() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

string_enum!(
    /// How bad holding both sides of a separation-of-duties rule is.
    Severity { Low => "low", Medium => "medium", High => "high" }
);

/// A separation-of-duties rule: entitlements (directly, or through roles)
/// nobody may hold together without a live exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SodRule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// Held together (two or more of these), they conflict.
    #[serde(default)]
    pub entitlements: Vec<String>,
    /// Roles count as the entitlements they bundle.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

fn default_severity() -> Severity {
    Severity::High
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HrDoc {
    time_zone: Option<String>,
    default_clearance: Option<Classification>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardDoc {
    max_leavers_percent: Option<u32>,
    max_leavers: Option<u32>,
}

/// A system: an application, a directory or a physical site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub kind: SystemKind,
    pub owner: String,
    #[serde(default)]
    pub description: String,
}

/// Something that can be granted: an LDAP group, an application role, an area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entitlement {
    pub id: String,
    pub system: String,
    #[serde(default)]
    pub name: String,
    pub classification: Classification,
    pub kind: EntitlementKind,
    /// Defaults to the system's owner.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub ldap_group_dn: Option<String>,
    #[serde(default)]
    pub description: String,
    /// People may ask for it (access requests); birthright is given anyway.
    #[serde(default)]
    pub requestable: bool,
}

/// A bundle of entitlements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub entitlements: Vec<String>,
    /// People may ask for the whole role (access requests).
    #[serde(default)]
    pub requestable: bool,
}

/// Values an attribute must take: one value or any of several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Match {
    One(String),
    AnyOf(Vec<String>),
}

impl Match {
    fn matches(&self, value: &str) -> bool {
        match self {
            Match::One(v) => v == value,
            Match::AnyOf(vs) => vs.iter().any(|v| v == value),
        }
    }
    fn values(&self) -> Vec<&str> {
        match self {
            Match::One(v) => vec![v.as_str()],
            Match::AnyOf(vs) => vs.iter().map(String::as_str).collect(),
        }
    }
}

/// Assigns a role to everyone whose attributes match `when` and not `unless`.
/// An empty `when` matches everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BirthrightRule {
    pub role: String,
    #[serde(default)]
    pub when: BTreeMap<String, Match>,
    #[serde(default)]
    pub unless: BTreeMap<String, Match>,
}

impl BirthrightRule {
    pub fn matches(&self, attrs: &Attributes) -> bool {
        let all = self
            .when
            .iter()
            .all(|(k, m)| attrs.get(k).is_some_and(|v| m.matches(v)));
        let none = self
            .unless
            .iter()
            .all(|(k, m)| !attrs.get(k).is_some_and(|v| m.matches(v)));
        all && none
    }

    /// A readable form, e.g. `department = Finance and employment_type = employee`.
    pub fn describe(&self) -> String {
        let part = |map: &BTreeMap<String, Match>| {
            map.iter()
                .map(|(k, m)| match m {
                    Match::One(v) => format!("{k} = {v}"),
                    Match::AnyOf(vs) => format!("{k} in [{}]", vs.join(", ")),
                })
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let mut s = if self.when.is_empty() {
            "everyone".to_string()
        } else {
            part(&self.when)
        };
        if !self.unless.is_empty() {
            s.push_str(&format!(" unless {}", part(&self.unless)));
        }
        s
    }
}

/// Attribute names a birthright rule may test.
pub const RULE_ATTRIBUTES: [&str; 6] = [
    "department",
    "title",
    "job_code",
    "location",
    "cost_center",
    "employment_type",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default)]
    hr: HrDoc,
    #[serde(default)]
    guard: GuardDoc,
    #[serde(default)]
    levels: BTreeMap<String, LevelDoc>,
    #[serde(default)]
    systems: Vec<System>,
    #[serde(default)]
    entitlements: Vec<Entitlement>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    birthright: Vec<BirthrightRule>,
    #[serde(default)]
    requests: RequestsDoc,
    #[serde(default)]
    sod: Vec<SodRule>,
    #[serde(default)]
    reviews: ReviewsDoc,
    #[serde(default)]
    campaigns: Vec<CampaignDef>,
}

/// Thresholds of the mass-change guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardPolicy {
    pub max_leavers_percent: u32,
    pub max_leavers: u32,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub hr_time_zone: Tz,
    pub default_clearance: Classification,
    pub guard: GuardPolicy,
    pub levels: BTreeMap<Classification, LevelPolicy>,
    pub systems: BTreeMap<String, System>,
    pub entitlements: BTreeMap<String, Entitlement>,
    pub roles: BTreeMap<String, Role>,
    pub birthright: Vec<BirthrightRule>,
    /// Who approves a step whose approver is missing or has left (an
    /// active identity), when nobody else can.
    pub fallback_approver: Option<String>,
    /// Separation-of-duties rules.
    pub sod: Vec<SodRule>,
    /// Access review campaigns.
    pub campaigns: Vec<CampaignDef>,
    /// Who reviews an item nobody else can (an active identity).
    pub fallback_reviewer: Option<String>,
    /// Break-glass principals: their access is never revoked by a
    /// campaign's non-response default.
    pub protected: BTreeSet<String>,
    /// The document this policy was parsed from, as given.
    pub document: String,
}

impl Default for Policy {
    fn default() -> Self {
        Self::empty()
    }
}

/// Checks a catalog identifier: 1–128 of letters, digits, `.`, `_`, `-`, `:`.
fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("id is empty".into());
    }
    if id.len() > 128 {
        return Some("id is longer than 128 characters".into());
    }
    id.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
        .map(|c| format!("id {id:?} contains {c:?}; use letters, digits, '.', '_', '-' or ':'"))
}

/// Checks the shape of an LDAP DN: `attr=value` parts separated by commas.
fn dn_problem(dn: &str) -> Option<String> {
    if dn.trim().is_empty() {
        return Some("DN is empty".into());
    }
    if dn.chars().any(|c| c.is_control()) {
        return Some("DN contains control characters".into());
    }
    // Split on commas not escaped by a backslash.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    for p in parts {
        match p.split_once('=') {
            Some((a, v)) if !a.trim().is_empty() && !v.trim().is_empty() => {}
            _ => return Some(format!("{dn:?} is not a DN: {p:?} is not attr=value")),
        }
    }
    None
}

impl Policy {
    /// The policy in force before any document is applied: the built-in level
    /// defaults, an empty catalog, UTC, default guard.
    pub fn empty() -> Self {
        Self {
            hr_time_zone: Tz::UTC,
            default_clearance: Classification::Internal,
            guard: GuardPolicy {
                max_leavers_percent: 5,
                max_leavers: 500,
            },
            levels: Classification::ALL
                .iter()
                .map(|l| (*l, LevelPolicy::default_for(*l)))
                .collect(),
            systems: BTreeMap::new(),
            entitlements: BTreeMap::new(),
            roles: BTreeMap::new(),
            birthright: Vec::new(),
            fallback_approver: None,
            campaigns: Vec::new(),
            fallback_reviewer: None,
            protected: BTreeSet::new(),
            sod: Vec::new(),
            document: String::new(),
        }
    }

    /// Parses and validates a TOML policy document. Every structural problem
    /// is reported, each naming its entry.
    pub fn parse(document: &str) -> Result<Policy, DomainError> {
        let doc: PolicyDoc = toml::from_str(document).map_err(|e| {
            let field = e
                .span()
                .map(|s| {
                    let line = document.as_bytes()[..s.start.min(document.len())]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "document".into());
            DomainError {
                code: ErrorCode::InvalidPolicy,
                message: "the policy document is not valid TOML for idgov".into(),
                violations: vec![FieldViolation::new(field, e.message().to_string())],
            }
        })?;
        let mut v: Vec<FieldViolation> = Vec::new();
        let mut policy = Policy::empty();
        policy.document = document.to_string();

        if let Some(z) = &doc.hr.time_zone {
            match crate::time::parse_zone(z) {
                Ok(tz) => policy.hr_time_zone = tz,
                Err(e) => v.push(FieldViolation::new("hr.time_zone", e)),
            }
        }
        if let Some(c) = doc.hr.default_clearance {
            policy.default_clearance = c;
        }
        if let Some(p) = doc.guard.max_leavers_percent {
            if p > 100 {
                v.push(FieldViolation::new(
                    "guard.max_leavers_percent",
                    "must be 0..=100",
                ));
            }
            policy.guard.max_leavers_percent = p;
        }
        if let Some(m) = doc.guard.max_leavers {
            policy.guard.max_leavers = m;
        }

        for (name, lv) in &doc.levels {
            let level = match name.parse::<Classification>() {
                Ok(l) => l,
                Err(e) => {
                    v.push(FieldViolation::new(format!("levels.{name}"), e));
                    continue;
                }
            };
            let p = policy
                .levels
                .entry(level)
                .or_insert_with(|| LevelPolicy::default_for(level));
            if let Some(b) = lv.birthright_allowed {
                p.birthright_allowed = b;
            }
            if let Some(a) = &lv.approvals {
                p.approvals = a.clone();
                let uniq: BTreeSet<_> = a.iter().map(|x| x.as_str()).collect();
                if uniq.len() != a.len() {
                    v.push(FieldViolation::new(
                        format!("levels.{name}.approvals"),
                        "an approval step is listed twice; one person cannot fill two steps",
                    ));
                }
            }
            if let Some(d) = lv.max_grant_days {
                p.max_grant_days = d;
            }
            if let Some(m) = lv.review_every_months {
                p.review_every_months = m;
            }
            if let Some(o) = lv.on_mover {
                p.on_mover = o;
            }
            if let Some(n) = lv.no_review_response {
                p.no_review_response = n;
            }
            if let Some(d) = lv.request_expiry_days {
                if d == 0 || d > 365 {
                    v.push(FieldViolation::new(
                        format!("levels.{name}.request_expiry_days"),
                        "must be 1..=365",
                    ));
                }
                p.request_expiry_days = d;
            }
        }
        if let Some(r) = policy.levels.get(&Classification::Restricted)
            && r.birthright_allowed
        {
            v.push(FieldViolation::new(
                "levels.restricted.birthright_allowed",
                "restricted entitlements are never birthright; remove this override",
            ));
        }

        for (i, s) in doc.systems.iter().enumerate() {
            let path = format!("systems[{i}] ({})", s.id);
            if let Some(p) = id_problem(&s.id) {
                v.push(FieldViolation::new(format!("systems[{i}].id"), p));
            }
            if s.owner.trim().is_empty() {
                v.push(FieldViolation::new(
                    format!("{path}.owner"),
                    "every system needs an owner",
                ));
            }
            if policy.systems.insert(s.id.clone(), s.clone()).is_some() {
                v.push(FieldViolation::new(
                    path,
                    format!("system id {:?} is defined twice", s.id),
                ));
            }
        }

        for (i, e) in doc.entitlements.iter().enumerate() {
            let path = format!("entitlements[{i}] ({})", e.id);
            if let Some(p) = id_problem(&e.id) {
                v.push(FieldViolation::new(format!("entitlements[{i}].id"), p));
            }
            let mut e = e.clone();
            match policy.systems.get(&e.system) {
                None => v.push(FieldViolation::new(
                    format!("{path}.system"),
                    format!("unknown system {:?}", e.system),
                )),
                Some(sys) => {
                    if e.owner.trim().is_empty() {
                        e.owner = sys.owner.clone();
                    }
                    if e.kind == EntitlementKind::PhysicalArea
                        && sys.kind != SystemKind::PhysicalSite
                    {
                        v.push(FieldViolation::new(
                            format!("{path}.kind"),
                            format!(
                                "a physical area belongs to a physical_site system, not {:?}",
                                sys.id
                            ),
                        ));
                    }
                }
            }
            match &e.ldap_group_dn {
                Some(dn) => {
                    if let Some(p) = dn_problem(dn) {
                        v.push(FieldViolation::new(format!("{path}.ldap_group_dn"), p));
                    }
                }
                None if e.kind == EntitlementKind::LdapGroup => v.push(FieldViolation::new(
                    format!("{path}.ldap_group_dn"),
                    "an ldap_group entitlement needs ldap_group_dn",
                )),
                None => {}
            }
            if policy
                .entitlements
                .insert(e.id.clone(), e.clone())
                .is_some()
            {
                v.push(FieldViolation::new(
                    path,
                    format!("entitlement id {:?} is defined twice", e.id),
                ));
            }
        }

        for (i, r) in doc.roles.iter().enumerate() {
            let path = format!("roles[{i}] ({})", r.id);
            if let Some(p) = id_problem(&r.id) {
                v.push(FieldViolation::new(format!("roles[{i}].id"), p));
            }
            for ent in &r.entitlements {
                if !policy.entitlements.contains_key(ent) {
                    v.push(FieldViolation::new(
                        format!("{path}.entitlements"),
                        format!("unknown entitlement {ent:?}"),
                    ));
                }
            }
            if policy.roles.insert(r.id.clone(), r.clone()).is_some() {
                v.push(FieldViolation::new(
                    path,
                    format!("role id {:?} is defined twice", r.id),
                ));
            }
        }

        for (i, rule) in doc.birthright.iter().enumerate() {
            let path = format!("birthright[{i}] (role {})", rule.role);
            for (k, m) in rule.when.iter().chain(rule.unless.iter()) {
                if !RULE_ATTRIBUTES.contains(&k.as_str()) {
                    v.push(FieldViolation::new(
                        format!("{path}.{k}"),
                        format!(
                            "unknown attribute {k:?}; use one of {}",
                            RULE_ATTRIBUTES.join(", ")
                        ),
                    ));
                }
                if k == "employment_type" {
                    for val in m.values() {
                        if let Err(e) = val.parse::<crate::identity::EmploymentType>() {
                            v.push(FieldViolation::new(format!("{path}.{k}"), e));
                        }
                    }
                }
            }
            match policy.roles.get(&rule.role) {
                None => v.push(FieldViolation::new(
                    format!("{path}.role"),
                    format!("unknown role {:?}", rule.role),
                )),
                Some(role) => {
                    for ent_id in &role.entitlements {
                        if let Some(ent) = policy.entitlements.get(ent_id) {
                            let allowed = policy
                                .levels
                                .get(&ent.classification)
                                .is_some_and(|l| l.birthright_allowed);
                            if !allowed {
                                v.push(FieldViolation::new(
                                    format!("{path}.role"),
                                    format!(
                                        "role {:?} holds {} entitlement {:?}, which is not allowed as birthright",
                                        role.id, ent.classification, ent.id
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            policy.birthright.push(rule.clone());
        }

        if let Some(f) = &doc.requests.fallback_approver {
            if let Err(e) = crate::identity::validate_employee_id(f) {
                v.push(FieldViolation::new("requests.fallback_approver", e));
            }
            policy.fallback_approver = Some(f.clone());
        }
        let mut sod_ids = BTreeSet::new();
        for (i, rule) in doc.sod.iter().enumerate() {
            let path = format!("sod[{i}] ({})", rule.id);
            if let Some(p) = id_problem(&rule.id) {
                v.push(FieldViolation::new(format!("sod[{i}].id"), p));
            }
            if !sod_ids.insert(rule.id.clone()) {
                v.push(FieldViolation::new(
                    &path,
                    format!("sod rule id {:?} is defined twice", rule.id),
                ));
            }
            for e in &rule.entitlements {
                if !policy.entitlements.contains_key(e) {
                    v.push(FieldViolation::new(
                        format!("{path}.entitlements"),
                        format!("unknown entitlement {e:?}"),
                    ));
                }
            }
            for r in &rule.roles {
                if !policy.roles.contains_key(r) {
                    v.push(FieldViolation::new(
                        format!("{path}.roles"),
                        format!("unknown role {r:?}"),
                    ));
                }
            }
            if rule.entitlements.len() + rule.roles.len() < 2 {
                v.push(FieldViolation::new(
                    &path,
                    "a separation-of-duties rule names at least two entitlements or roles",
                ));
            }
            policy.sod.push(rule.clone());
        }

        if let Some(f) = &doc.reviews.fallback_reviewer {
            if let Err(e) = crate::identity::validate_employee_id(f) {
                v.push(FieldViolation::new("reviews.fallback_reviewer", e));
            }
            policy.fallback_reviewer = Some(f.clone());
        }
        for (i, p) in doc.reviews.protected.iter().enumerate() {
            if let Err(e) = crate::identity::validate_employee_id(p) {
                v.push(FieldViolation::new(format!("reviews.protected[{i}]"), e));
            }
            policy.protected.insert(p.clone());
        }
        let mut campaign_ids = BTreeSet::new();
        for (i, c) in doc.campaigns.iter().enumerate() {
            let path = format!("campaigns[{i}] ({})", c.id);
            if let Some(p) = id_problem(&c.id) {
                v.push(FieldViolation::new(format!("campaigns[{i}].id"), p));
            }
            if !campaign_ids.insert(c.id.clone()) {
                v.push(FieldViolation::new(
                    &path,
                    format!("campaign id {:?} is defined twice", c.id),
                ));
            }
            for sys in &c.systems {
                if !policy.systems.contains_key(sys) {
                    v.push(FieldViolation::new(
                        format!("{path}.systems"),
                        format!("unknown system {sys:?}"),
                    ));
                }
            }
            if !(1..=90).contains(&c.duration_days) {
                v.push(FieldViolation::new(
                    format!("{path}.duration_days"),
                    "must be between 1 and 90 days",
                ));
            }
            if c.remind_after_days >= c.duration_days || c.escalate_after_days >= c.duration_days {
                v.push(FieldViolation::new(
                    &path,
                    "remind_after_days and escalate_after_days must fall before the end (duration_days)",
                ));
            }
            policy.campaigns.push(c.clone());
        }

        if v.is_empty() {
            Ok(policy)
        } else {
            Err(DomainError {
                code: ErrorCode::InvalidPolicy,
                message: format!("the policy document has {} problem(s)", v.len()),
                violations: v,
            })
        }
    }

    /// Checks that every owner is a known identity that is not terminated.
    /// `status_of` looks an employee id up in the store.
    pub fn check_owners(
        &self,
        status_of: impl Fn(&str) -> Option<Status>,
    ) -> Result<(), DomainError> {
        let mut v = Vec::new();
        let mut check = |path: String, owner: &str| match status_of(owner) {
            None => v.push(FieldViolation::new(
                path,
                format!("owner {owner:?} is not a known identity; import the roster first"),
            )),
            Some(Status::Terminated) => v.push(FieldViolation::new(
                path,
                format!("owner {owner:?} has left; name an active owner"),
            )),
            Some(_) => {}
        };
        for s in self.systems.values() {
            check(format!("systems ({}).owner", s.id), &s.owner);
        }
        for e in self.entitlements.values() {
            check(format!("entitlements ({}).owner", e.id), &e.owner);
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(DomainError {
                code: ErrorCode::InvalidPolicy,
                message: format!("the policy names {} unknown or departed owner(s)", v.len()),
                violations: v,
            })
        }
    }

    /// Every employee id named as an owner (or fallback approver).
    pub fn owner_ids(&self) -> BTreeSet<String> {
        self.systems
            .values()
            .map(|s| s.owner.clone())
            .chain(self.entitlements.values().map(|e| e.owner.clone()))
            .chain(self.fallback_approver.clone())
            .chain(self.fallback_reviewer.clone())
            .collect()
    }

    /// The entitlements of a separation-of-duties rule's side: each named
    /// entitlement is a side, each role a side of its entitlements.
    pub fn sod_sides(&self, rule: &SodRule) -> Vec<BTreeSet<String>> {
        rule.entitlements
            .iter()
            .map(|e| BTreeSet::from([e.clone()]))
            .chain(rule.roles.iter().filter_map(|r| {
                self.roles
                    .get(r)
                    .map(|r| r.entitlements.iter().cloned().collect())
            }))
            .collect()
    }

    /// The rules someone holding `held` breaks: two or more sides of the
    /// rule are held.
    pub fn sod_conflicts(&self, held: &BTreeSet<String>) -> Vec<&SodRule> {
        self.sod
            .iter()
            .filter(|rule| {
                self.sod_sides(rule)
                    .iter()
                    .filter(|side| !side.is_empty() && side.iter().all(|e| held.contains(e)))
                    .count()
                    >= 2
            })
            .collect()
    }

    pub fn level(&self, c: Classification) -> LevelPolicy {
        self.levels
            .get(&c)
            .cloned()
            .unwrap_or_else(|| LevelPolicy::default_for(c))
    }

    /// The entitlements birthright gives to someone with these attributes,
    /// each with the (first) role giving it. The access ceiling is not
    /// applied here; see [`crate::lifecycle`].
    pub fn birthright_for(&self, attrs: &Attributes) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for rule in &self.birthright {
            if !rule.matches(attrs) {
                continue;
            }
            if let Some(role) = self.roles.get(&rule.role) {
                for e in &role.entitlements {
                    out.entry(e.clone()).or_insert_with(|| role.id.clone());
                }
            }
        }
        out
    }

    /// SHA-256 of the document, hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.document.as_bytes()))
    }

    /// A fingerprint of what gives `entitlement_id` by birthright: its
    /// definition, the roles that bundle it and their birthright rules. A
    /// hand revocation holds while it is unchanged; an edit elsewhere in the
    /// policy leaves it alone.
    pub fn birthright_basis(&self, entitlement_id: &str) -> String {
        let roles: Vec<&Role> = self
            .roles
            .values()
            .filter(|r| r.entitlements.iter().any(|e| e == entitlement_id))
            .collect();
        let rules: Vec<&BirthrightRule> = self
            .birthright
            .iter()
            .filter(|b| roles.iter().any(|r| r.id == b.role))
            .collect();
        let basis = serde_json::json!({
            "entitlement": self.entitlements.get(entitlement_id),
            "roles": roles,
            "birthright": rules,
        });
        hex::encode(Sha256::digest(basis.to_string().as_bytes()))
    }

    /// What differs between this policy and `new`, for the audit record.
    pub fn diff(&self, new: &Policy) -> PolicyDiff {
        fn keyed<T: PartialEq>(
            old: &BTreeMap<String, T>,
            new: &BTreeMap<String, T>,
        ) -> (Vec<String>, Vec<String>, Vec<String>) {
            let added = new
                .keys()
                .filter(|k| !old.contains_key(*k))
                .cloned()
                .collect();
            let removed = old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .cloned()
                .collect();
            let changed = new
                .iter()
                .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
                .map(|(k, _)| k.clone())
                .collect();
            (added, removed, changed)
        }
        let (added_entitlements, removed_entitlements, changed_entitlements) =
            keyed(&self.entitlements, &new.entitlements);
        let (added_roles, removed_roles, changed_roles) = keyed(&self.roles, &new.roles);
        let (added_systems, removed_systems, changed_systems) = keyed(&self.systems, &new.systems);
        let changed_levels = Classification::ALL
            .iter()
            .filter(|l| self.level(**l) != new.level(**l))
            .map(|l| l.to_string())
            .collect();
        PolicyDiff {
            added_systems,
            removed_systems,
            changed_systems,
            added_entitlements,
            removed_entitlements,
            changed_entitlements,
            added_roles,
            removed_roles,
            changed_roles,
            changed_levels,
            birthright_rules_changed: self.birthright != new.birthright,
            hr_changed: self.hr_time_zone != new.hr_time_zone
                || self.default_clearance != new.default_clearance,
            guard_changed: self.guard != new.guard,
            sod_changed: self.sod != new.sod,
        }
    }
}

/// What a policy change changes, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDiff {
    pub added_systems: Vec<String>,
    pub removed_systems: Vec<String>,
    pub changed_systems: Vec<String>,
    pub added_entitlements: Vec<String>,
    pub removed_entitlements: Vec<String>,
    pub changed_entitlements: Vec<String>,
    pub added_roles: Vec<String>,
    pub removed_roles: Vec<String>,
    pub changed_roles: Vec<String>,
    pub changed_levels: Vec<String>,
    pub birthright_rules_changed: bool,
    pub hr_changed: bool,
    pub guard_changed: bool,
    #[serde(default)]
    pub sod_changed: bool,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        self == &PolicyDiff::default()
    }
}

#[cfg(test)]
mod tests;
