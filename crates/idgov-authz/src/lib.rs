//! The one place idgov decides authorization.
//!
//! Deny by default. Every RPC has one [`Rule`] in [`rule`]: the staff roles
//! that may call it outright, and the relationships (self, manager of, …)
//! that may call it for particular objects only. A call that matches neither
//! is denied before it reaches a handler; a call allowed through a
//! relationship carries [`Grant::Scoped`], and its handler must ask
//! [`check_object`] with the facts of the object it is about.
//!
//! `idgov authz matrix` prints [`matrix`], so auditors read the table the
//! code enforces, not a document about it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A role given to a caller by configuration (token claims, client ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An HR system: submits HR data, nothing else.
    HrFeed,
    /// Maintains the catalog and policy, operates the service.
    ItAdmin,
    /// Approves sensitive access, releases held changes, reads the audit log.
    SecurityOfficer,
    /// Reads everything, changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::HrFeed,
        Role::ItAdmin,
        Role::SecurityOfficer,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::HrFeed => "hr-feed",
            Role::ItAdmin => "it-admin",
            Role::SecurityOfficer => "security-officer",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}; roles are hr-feed, it-admin, security-officer, auditor"
                )
            })
    }
}

/// A relationship between the caller and the object of a call, derived
/// from data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    /// The object is the caller.
    SelfOf,
    /// The object is one of the caller's direct reports.
    ManagerOf,
    /// The caller is a known employee (any object of the call is public to staff).
    Employee,
    /// The caller made the object (a request) or has a step of it to decide.
    PartyTo,
    /// The caller owns the entitlement the object is about.
    OwnerOf,
    /// The caller is the reviewer of the object (a review item).
    ReviewerOf,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::SelfOf => "self",
            Relation::ManagerOf => "manager-of",
            Relation::Employee => "employee",
            Relation::PartyTo => "party-to",
            Relation::OwnerOf => "owner-of",
            Relation::ReviewerOf => "reviewer-of",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The authenticated subject (a user id, a client id).
    pub subject: String,
    /// The employee id the caller is, when the caller is a person.
    pub employee_id: Option<String>,
    pub roles: BTreeSet<Role>,
    /// How the caller authenticated, e.g. `dev`, `oidc`, `mtls`.
    pub method: String,
}

impl Caller {
    /// The actor name written to the audit log, e.g. `user:E1001` or
    /// `service:workday-feed`.
    pub fn actor(&self) -> String {
        match &self.employee_id {
            Some(e) => format!("user:{e}"),
            None => format!("service:{}", self.subject),
        }
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.roles.contains(r))
    }
}

/// How the claims of a verified token (an API access token, or the ID
/// token of a web sign-in) name the caller and give roles. Both ways in
/// read claims with this one function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRules {
    /// The claim naming the person (e.g. `sub`, `email`).
    pub user_claim: String,
    /// The claim listing groups (an array of strings, or one string).
    pub roles_claim: String,
    /// Group name → role.
    pub roles: std::collections::BTreeMap<String, Role>,
    /// Client id → roles, for clients acting for themselves.
    pub clients: std::collections::BTreeMap<String, Vec<Role>>,
}

/// What verified claims say about the caller, before the person is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub subject: String,
    pub client_id: Option<String>,
    /// The user claim's value, when the claims name a person.
    pub user: Option<String>,
    pub roles: BTreeSet<Role>,
}

/// Reads verified claims by `rules`.
pub fn read_claims(
    rules: &ClaimRules,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Claimed, String> {
    let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(String::from);
    let subject = text("sub").ok_or("the token has no subject")?;
    let client_id = text("client_id").or_else(|| text("azp"));
    // A client acting for itself (client credentials): roles by client id.
    if client_id.as_deref() == Some(subject.as_str()) {
        let roles = rules
            .clients
            .get(&subject)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        return Ok(Claimed {
            subject,
            client_id,
            user: None,
            roles,
        });
    }
    let user = text(&rules.user_claim);
    let roles = match claims.get(&rules.roles_claim) {
        Some(serde_json::Value::Array(values)) => values
            .iter()
            .filter_map(|v| v.as_str())
            .filter_map(|g| rules.roles.get(g).copied())
            .collect(),
        Some(serde_json::Value::String(g)) => rules.roles.get(g).copied().into_iter().collect(),
        _ => BTreeSet::new(),
    };
    Ok(Claimed {
        subject,
        client_id,
        user,
        roles,
    })
}

macro_rules! rpcs {
    ($($variant:ident => $service:literal, $method:literal, $desc:literal;)+) => {
        /// Every RPC of `idgov.v1`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Rpc { $($variant),+ }

        impl Rpc {
            pub const ALL: &'static [Rpc] = &[$(Rpc::$variant),+];

            /// The gRPC path, e.g. `/idgov.v1.HrService/SubmitHrEvent`.
            pub fn path(self) -> &'static str {
                match self { $(Rpc::$variant => concat!("/idgov.v1.", $service, "/", $method)),+ }
            }

            pub fn name(self) -> &'static str {
                match self { $(Rpc::$variant => $method),+ }
            }

            pub fn service(self) -> &'static str {
                match self { $(Rpc::$variant => $service),+ }
            }

            pub fn description(self) -> &'static str {
                match self { $(Rpc::$variant => $desc),+ }
            }

            /// The RPC at a gRPC path; `None` for anything else (denied).
            pub fn from_path(path: &str) -> Option<Rpc> {
                Rpc::ALL.iter().copied().find(|r| r.path() == path)
            }
        }
    };
}

rpcs! {
    SubmitHrEvent => "HrService", "SubmitHrEvent", "submit one HR event";
    SyncRoster => "HrService", "SyncRoster", "sync a whole roster";
    ListHrEvents => "HrService", "ListHrEvents", "list recorded HR events";
    ListHeldChanges => "HrService", "ListHeldChanges", "list changes held by the mass-change guard";
    ListHeldRosterChanges => "HrService", "ListHeldRosterChanges", "list every change of a held roster sync";
    ListRosterPreview => "HrService", "ListRosterPreview", "list every change of a roster dry run";
    ReleaseHeldChange => "HrService", "ReleaseHeldChange", "apply a held change";
    DiscardHeldChange => "HrService", "DiscardHeldChange", "discard a held change";
    GetIdentity => "IdentityService", "GetIdentity", "read one identity";
    ListIdentities => "IdentityService", "ListIdentities", "list identities";
    ListGrants => "IdentityService", "ListGrants", "list an identity's grants";
    GetPolicy => "PolicyService", "GetPolicy", "read the policy";
    ApplyPolicy => "PolicyService", "ApplyPolicy", "change the policy";
    ListEntitlements => "PolicyService", "ListEntitlements", "list entitlements";
    ListRoles => "PolicyService", "ListRoles", "list roles";
    ListAuditEvents => "AuditService", "ListAuditEvents", "read the audit log";
    VerifyAuditChain => "AuditService", "VerifyAuditChain", "verify the audit chain";
    ListWebhookSubscriptions => "AuditService", "ListWebhookSubscriptions", "list webhook subscriptions";
    ListWebhookDeliveries => "AuditService", "ListWebhookDeliveries", "list a webhook subscription's deliveries";
    RedeliverWebhook => "AuditService", "RedeliverWebhook", "deliver webhook events again";
    CreateWebhookSubscription => "AuditService", "CreateWebhookSubscription", "create a webhook subscription";
    DeleteWebhookSubscription => "AuditService", "DeleteWebhookSubscription", "delete a webhook subscription";
    RotateWebhookSecret => "AuditService", "RotateWebhookSecret", "rotate a webhook subscription's secret";
    ListDirectoryOperations => "ProvisioningService", "ListDirectoryOperations", "list directory operations";
    RetryDirectoryOperation => "ProvisioningService", "RetryDirectoryOperation", "retry a failed directory operation";
    RunDirectorySync => "DirectoryService", "RunDirectorySync", "sync with the directory (and remediate)";
    GetDirectorySync => "DirectoryService", "GetDirectorySync", "read a directory sync run";
    ListDrift => "DirectoryService", "ListDrift", "list directory drift";
    CreateAccessRequest => "AccessService", "CreateAccessRequest", "request access (for oneself or a direct report)";
    GetAccessRequest => "AccessService", "GetAccessRequest", "read an access request";
    ListAccessRequests => "AccessService", "ListAccessRequests", "list access requests";
    ApproveAccessRequest => "AccessService", "ApproveAccessRequest", "approve the open step of a request";
    DenyAccessRequest => "AccessService", "DenyAccessRequest", "deny a request";
    CancelAccessRequest => "AccessService", "CancelAccessRequest", "cancel a pending request";
    RevokeGrant => "AccessService", "RevokeGrant", "revoke a grant by hand";
    ListExpiringGrants => "AccessService", "ListExpiringGrants", "list grants that end soon";
    ListSodViolations => "AccessService", "ListSodViolations", "list separation-of-duties violations";
    RunSodCheck => "AccessService", "RunSodCheck", "run the separation-of-duties detective check";
    ListSodExceptions => "AccessService", "ListSodExceptions", "list separation-of-duties exceptions";
    GrantSodException => "AccessService", "GrantSodException", "grant a time-bound separation-of-duties exception";
    PreviewCampaign => "CampaignService", "PreviewCampaign", "preview a review campaign (nothing written)";
    StartCampaign => "CampaignService", "StartCampaign", "start a review campaign";
    GetCampaign => "CampaignService", "GetCampaign", "read a campaign";
    ListCampaigns => "CampaignService", "ListCampaigns", "list campaigns";
    ListReviewItems => "CampaignService", "ListReviewItems", "list review items (a reviewer: their own)";
    DecideReviewItems => "CampaignService", "DecideReviewItems", "certify or revoke review items";
    ReassignReviewItem => "CampaignService", "ReassignReviewItem", "reassign a review item";
    CloseCampaign => "CampaignService", "CloseCampaign", "close a campaign early";
    GetCampaignReport => "CampaignService", "GetCampaignReport", "read a campaign's report";
    ExportCampaignEvidence => "CampaignService", "ExportCampaignEvidence", "export a campaign's evidence";
}

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Roles that may call it for any object.
    pub roles: &'static [Role],
    /// Relationships that may call it for the related objects only.
    pub relations: &'static [Relation],
}

use Relation::*;
use Role::*;

const READERS: &[Role] = &[ItAdmin, SecurityOfficer, Auditor];
const CHANGE_APPROVERS: &[Role] = &[ItAdmin, SecurityOfficer];

/// The rule of each RPC. This table *is* the authorization policy.
pub fn rule(rpc: Rpc) -> Rule {
    let (roles, relations): (&'static [Role], &'static [Relation]) = match rpc {
        Rpc::SubmitHrEvent | Rpc::SyncRoster => (&[HrFeed], &[]),
        Rpc::ListHrEvents => (READERS, &[]),
        Rpc::ListHeldChanges | Rpc::ListHeldRosterChanges => (READERS, &[]),
        // The feed that sent the dry run reads its preview, as do readers.
        Rpc::ListRosterPreview => (&[HrFeed, ItAdmin, SecurityOfficer, Auditor], &[]),
        Rpc::ReleaseHeldChange | Rpc::DiscardHeldChange => (CHANGE_APPROVERS, &[]),
        Rpc::GetIdentity | Rpc::ListGrants => (READERS, &[SelfOf, ManagerOf]),
        Rpc::ListIdentities => (READERS, &[ManagerOf]),
        Rpc::GetPolicy | Rpc::ListEntitlements | Rpc::ListRoles => (READERS, &[Employee]),
        Rpc::ApplyPolicy => (CHANGE_APPROVERS, &[]),
        Rpc::ListAuditEvents | Rpc::VerifyAuditChain => (&[SecurityOfficer, Auditor], &[]),
        Rpc::ListWebhookSubscriptions | Rpc::ListWebhookDeliveries => (READERS, &[]),
        Rpc::RedeliverWebhook
        | Rpc::CreateWebhookSubscription
        | Rpc::DeleteWebhookSubscription
        | Rpc::RotateWebhookSecret => (&[SecurityOfficer], &[]),
        Rpc::ListDirectoryOperations | Rpc::GetDirectorySync | Rpc::ListDrift => (READERS, &[]),
        Rpc::RunDirectorySync | Rpc::RetryDirectoryOperation => (CHANGE_APPROVERS, &[]),
        // People ask for access for themselves or their direct reports.
        Rpc::CreateAccessRequest => (&[], &[SelfOf, ManagerOf]),
        Rpc::GetAccessRequest | Rpc::ListAccessRequests => (READERS, &[SelfOf, ManagerOf, PartyTo]),
        // The domain decides whose step it is; the security step is any
        // security officer's.
        Rpc::ApproveAccessRequest | Rpc::DenyAccessRequest => (&[SecurityOfficer], &[PartyTo]),
        Rpc::CancelAccessRequest => (&[ItAdmin], &[SelfOf, PartyTo]),
        Rpc::RevokeGrant => (&[ItAdmin], &[OwnerOf]),
        Rpc::ListExpiringGrants => (READERS, &[SelfOf, ManagerOf]),
        Rpc::ListSodViolations | Rpc::ListSodExceptions => (READERS, &[]),
        Rpc::RunSodCheck => (CHANGE_APPROVERS, &[]),
        Rpc::GrantSodException => (&[SecurityOfficer], &[]),
        Rpc::PreviewCampaign | Rpc::StartCampaign | Rpc::CloseCampaign => (CHANGE_APPROVERS, &[]),
        // Campaign metadata (name, due date) is staff-public: reviewers need it.
        Rpc::GetCampaign | Rpc::ListCampaigns => (READERS, &[Employee]),
        // A reviewer sees and decides their own items only (checked per item).
        Rpc::ListReviewItems => (READERS, &[ReviewerOf]),
        Rpc::DecideReviewItems => (&[SecurityOfficer], &[ReviewerOf]),
        Rpc::ReassignReviewItem => (CHANGE_APPROVERS, &[ReviewerOf]),
        Rpc::GetCampaignReport => (READERS, &[]),
        Rpc::ExportCampaignEvidence => (&[SecurityOfficer, Auditor], &[]),
    };
    Rule { roles, relations }
}

/// What the RPC-level check allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Through a role: any object.
    Full { role: Role },
    /// Through relationships: only objects related to the caller; the
    /// handler must call [`check_object`].
    Scoped { relations: &'static [Relation] },
}

/// A call that may proceed, and on what terms. Handlers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub caller: Caller,
    pub rpc: Rpc,
    pub grant: Grant,
}

/// Why a call was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rpc: Option<Rpc>,
    pub reason: String,
}

/// The RPC-level decision.
pub fn check_rpc(caller: &Caller, rpc: Rpc) -> Result<Access, Denied> {
    let r = rule(rpc);
    if let Some(role) = r.roles.iter().find(|role| caller.roles.contains(role)) {
        return Ok(Access {
            caller: caller.clone(),
            rpc,
            grant: Grant::Full { role: *role },
        });
    }
    if !r.relations.is_empty() && caller.employee_id.is_some() {
        return Ok(Access {
            caller: caller.clone(),
            rpc,
            grant: Grant::Scoped {
                relations: r.relations,
            },
        });
    }
    let needed: Vec<&str> = r.roles.iter().map(|r| r.as_str()).collect();
    Err(Denied {
        rpc: Some(rpc),
        reason: format!(
            "{} requires one of the roles: {}",
            rpc.name(),
            needed.join(", ")
        ),
    })
}

/// Facts about the object of a call, loaded by the handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectFacts {
    /// The identity the call is about.
    pub employee_id: Option<String>,
    /// That identity's manager.
    pub manager_id: Option<String>,
    /// People party to the object: a request's requester and the people
    /// its steps are (or were) assigned to.
    pub parties: Vec<String>,
    /// The owner of the entitlement the object is about.
    pub owner: Option<String>,
    /// The reviewer of the object (a review item).
    pub reviewer: Option<String>,
}

/// The object-level decision for a scoped grant. Full grants pass.
pub fn check_object(access: &Access, facts: &ObjectFacts) -> Result<(), Denied> {
    let Grant::Scoped { relations } = &access.grant else {
        return Ok(());
    };
    let me = access.caller.employee_id.as_deref();
    let holds = |rel: &Relation| match rel {
        SelfOf => me.is_some() && facts.employee_id.as_deref() == me,
        ManagerOf => me.is_some() && facts.manager_id.as_deref() == me,
        Employee => me.is_some(),
        PartyTo => me.is_some_and(|me| facts.parties.iter().any(|p| p == me)),
        OwnerOf => me.is_some() && facts.owner.as_deref() == me,
        ReviewerOf => me.is_some() && facts.reviewer.as_deref() == me,
    };
    if relations.iter().any(holds) {
        Ok(())
    } else {
        Err(out_of_reach(access))
    }
}

/// The one answer for an object a scoped caller may not reach, and for one
/// that does not exist: the same code, reason and message, so that no
/// caller can tell them apart (no existence oracle).
pub fn out_of_reach(access: &Access) -> Denied {
    let relations = match &access.grant {
        Grant::Scoped { relations } => relations
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
        Grant::Full { .. } => String::new(),
    };
    Denied {
        rpc: Some(access.rpc),
        reason: format!(
            "{} is allowed here only as {relations}, for objects that exist",
            access.rpc.name()
        ),
    }
}

/// One row of the authorization matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixRow {
    pub rpc: String,
    pub path: String,
    pub description: String,
    pub roles: Vec<String>,
    pub relations: Vec<String>,
}

/// The whole table, for `idgov authz matrix`.
pub fn matrix() -> Vec<MatrixRow> {
    Rpc::ALL
        .iter()
        .map(|rpc| {
            let r = rule(*rpc);
            MatrixRow {
                rpc: format!("{}.{}", rpc.service(), rpc.name()),
                path: rpc.path().to_string(),
                description: rpc.description().to_string(),
                roles: r.roles.iter().map(|x| x.to_string()).collect(),
                relations: r.relations.iter().map(|x| x.as_str().to_string()).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[Role], employee: Option<&str>) -> Caller {
        Caller {
            subject: "s".into(),
            employee_id: employee.map(String::from),
            roles: roles.iter().copied().collect(),
            method: "test".into(),
        }
    }

    #[test]
    fn unknown_paths_are_denied() {
        assert_eq!(Rpc::from_path("/idgov.v1.HrService/DropTables"), None);
        assert_eq!(
            Rpc::from_path("/idgov.v1.HrService/SubmitHrEvent"),
            Some(Rpc::SubmitHrEvent)
        );
    }

    #[test]
    fn a_caller_without_roles_or_identity_is_denied_everything() {
        let nobody = caller(&[], None);
        for rpc in Rpc::ALL {
            assert!(check_rpc(&nobody, *rpc).is_err(), "{rpc:?} allowed");
        }
    }

    #[test]
    fn the_hr_feed_only_submits_hr_data_and_reads_its_dry_runs() {
        let feed = caller(&[HrFeed], None);
        let allowed: Vec<_> = Rpc::ALL
            .iter()
            .filter(|r| check_rpc(&feed, **r).is_ok())
            .collect();
        assert_eq!(
            allowed,
            [
                &Rpc::SubmitHrEvent,
                &Rpc::SyncRoster,
                &Rpc::ListRosterPreview
            ]
        );
    }

    #[test]
    fn auditors_only_read() {
        let auditor = caller(&[Auditor], None);
        for rpc in [
            Rpc::SubmitHrEvent,
            Rpc::SyncRoster,
            Rpc::ApplyPolicy,
            Rpc::ReleaseHeldChange,
            Rpc::DiscardHeldChange,
        ] {
            assert!(check_rpc(&auditor, rpc).is_err(), "{rpc:?}");
        }
        assert!(check_rpc(&auditor, Rpc::VerifyAuditChain).is_ok());
    }

    #[test]
    fn a_manager_reaches_only_their_reports() {
        let m = caller(&[], Some("M1"));
        let access = check_rpc(&m, Rpc::ListGrants).unwrap_or_else(|d| panic!("{d:?}"));
        let report = ObjectFacts {
            employee_id: Some("E1".into()),
            manager_id: Some("M1".into()),
            ..ObjectFacts::default()
        };
        let other = ObjectFacts {
            employee_id: Some("E2".into()),
            manager_id: Some("M2".into()),
            ..ObjectFacts::default()
        };
        let own = ObjectFacts {
            employee_id: Some("M1".into()),
            manager_id: Some("CEO".into()),
            ..ObjectFacts::default()
        };
        assert!(check_object(&access, &report).is_ok());
        assert!(check_object(&access, &own).is_ok());
        assert!(check_object(&access, &other).is_err());
        assert!(check_rpc(&m, Rpc::ApplyPolicy).is_err());
    }
}
