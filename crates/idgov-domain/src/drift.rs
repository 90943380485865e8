//! Drift: where the directory and idgov's truth differ. Computed from plain
//! values (what the directory holds, what idgov holds); no I/O.

use crate::grant::Grant;
use crate::identity::{Identity, Status};
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

string_enum!(
    /// The kinds of drift.
    DriftKind {
        /// An account no identity owns (no or an unknown employee id).
        OrphanAccount => "orphan_account",
        /// A terminated identity whose account is still enabled.
        EnabledLeaver => "enabled_leaver",
        /// A member of a managed group without a grant that gives it.
        UnmanagedMembership => "unmanaged_membership",
        /// An active grant whose group membership is missing.
        MissingMembership => "missing_membership",
        /// An active identity without an account.
        MissingAccount => "missing_account",
    }
);

impl DriftKind {
    /// Drift that matters to security people at once.
    pub fn is_security_event(self) -> bool {
        matches!(self, DriftKind::OrphanAccount | DriftKind::EnabledLeaver)
    }

    /// True when the outbox can make the directory match idgov. An orphan
    /// account or a missing account needs a person's decision.
    pub fn can_remediate(self) -> bool {
        matches!(
            self,
            DriftKind::EnabledLeaver
                | DriftKind::UnmanagedMembership
                | DriftKind::MissingMembership
        )
    }

    /// True when the directory's state can be adopted as grants pending
    /// review (first onboarding): unmanaged memberships only.
    pub fn can_import(self) -> bool {
        self == DriftKind::UnmanagedMembership
    }
}

/// An account as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub dn: String,
    pub employee_id: Option<String>,
    pub disabled: bool,
}

/// A managed group as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub dn: String,
    pub members: Vec<String>,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Drift {
    pub kind: DriftKind,
    pub employee_id: Option<String>,
    pub account_dn: Option<String>,
    pub group_dn: Option<String>,
    pub entitlement_id: Option<String>,
}

/// A DN in a comparable form: lowercase, no spaces around separators.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(|p| p.trim().to_lowercase())
                .collect::<Vec<_>>()
                .join("=")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A member of a managed group, as the group lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub group_dn: String,
    /// The member's DN, spelled as the group lists it.
    pub member: String,
}

/// The drift check, one person (or one account nobody owns, or one
/// membership of such an account) at a time. It holds only the policy's
/// index of managed groups: the caller hands it each person's side of the
/// directory, so neither side is ever held whole. The directory sync stages
/// what it reads from the directory in the store and pages through it;
/// [`compute`] is the same check over everything in memory.
pub struct DriftCheck<'a> {
    policy: &'a Policy,
    /// Entitlements by the (normalized) group that provisions them.
    ent_of_group: HashMap<String, Vec<&'a str>>,
}

/// The entitlements each managed group provisions, by the group's
/// normalized DN.
fn entitlements_by_group(policy: &Policy) -> HashMap<String, Vec<&str>> {
    let mut out: HashMap<String, Vec<&str>> = HashMap::new();
    for e in policy.entitlements.values() {
        if let Some(dn) = &e.ldap_group_dn {
            out.entry(normalize_dn(dn)).or_default().push(&e.id);
        }
    }
    out
}

impl<'a> DriftCheck<'a> {
    pub fn new(policy: &'a Policy) -> Self {
        DriftCheck {
            policy,
            ent_of_group: entitlements_by_group(policy),
        }
    }

    /// The first entitlement the group `dn` provisions, if it is managed.
    fn entitlement_of(&self, dn: &str) -> Option<String> {
        self.ent_of_group
            .get(&normalize_dn(dn))
            .and_then(|v| v.first())
            .map(|s| s.to_string())
    }

    /// The drift of one person, sorted: `grants` are theirs, `accounts` the
    /// directory's accounts naming their employee id (in the directory's
    /// order), `memberships` the group memberships of those accounts (any
    /// other is ignored).
    pub fn person(
        &self,
        person: &Identity,
        grants: &[Grant],
        accounts: &[AccountView],
        memberships: &[Membership],
    ) -> Vec<Drift> {
        let mut out = Vec::new();
        // The account the grants' memberships are for: the last one.
        let Some(account) = accounts.last() else {
            if person.may_hold_access() {
                out.push(Drift {
                    kind: DriftKind::MissingAccount,
                    employee_id: Some(person.employee_id.clone()),
                    account_dn: None,
                    group_dn: None,
                    entitlement_id: None,
                });
            }
            return out;
        };
        if person.status == Status::Terminated {
            for a in accounts.iter().filter(|a| !a.disabled) {
                out.push(Drift {
                    kind: DriftKind::EnabledLeaver,
                    employee_id: Some(person.employee_id.clone()),
                    account_dn: Some(a.dn.clone()),
                    group_dn: None,
                    entitlement_id: None,
                });
            }
        }
        let account_dn = normalize_dn(&account.dn);
        // Memberships the grants give, by (group, member account).
        let mut wanted: BTreeMap<(String, String), (&str, &str)> = BTreeMap::new();
        for g in grants.iter().filter(|g| g.is_active()) {
            if let Some(dn) = self
                .policy
                .entitlements
                .get(&g.entitlement_id)
                .and_then(|e| e.ldap_group_dn.as_deref())
            {
                wanted.insert(
                    (normalize_dn(dn), account_dn.clone()),
                    (dn, g.entitlement_id.as_str()),
                );
            }
        }
        // The memberships of each of the person's accounts.
        let listed: Vec<(String, &Membership)> = memberships
            .iter()
            .map(|m| (normalize_dn(&m.member), m))
            .collect();
        let mut present: HashSet<(String, String)> = HashSet::new();
        for a in accounts {
            let member = normalize_dn(&a.dn);
            for (_, m) in listed.iter().filter(|(n, _)| *n == member) {
                let key = (normalize_dn(&m.group_dn), member.clone());
                if !wanted.contains_key(&key) {
                    out.push(Drift {
                        kind: DriftKind::UnmanagedMembership,
                        employee_id: Some(person.employee_id.clone()),
                        account_dn: Some(m.member.clone()),
                        group_dn: Some(m.group_dn.clone()),
                        entitlement_id: self.entitlement_of(&m.group_dn),
                    });
                }
                present.insert(key);
            }
        }
        for (key, (dn, ent)) in &wanted {
            if !present.contains(key) {
                out.push(Drift {
                    kind: DriftKind::MissingMembership,
                    employee_id: Some(person.employee_id.clone()),
                    account_dn: Some(account.dn.clone()),
                    group_dn: Some(dn.to_string()),
                    entitlement_id: Some(ent.to_string()),
                });
            }
        }
        out.sort();
        out
    }

    /// An account whose employee id names no identity (or that names none).
    pub fn orphan(account: &AccountView) -> Drift {
        Drift {
            kind: DriftKind::OrphanAccount,
            employee_id: account.employee_id.clone(),
            account_dn: Some(account.dn.clone()),
            group_dn: None,
            entitlement_id: None,
        }
    }

    /// A membership of an account no identity owns: no grant gives it.
    pub fn unowned_membership(&self, m: &Membership) -> Drift {
        Drift {
            kind: DriftKind::UnmanagedMembership,
            employee_id: None,
            account_dn: Some(m.member.clone()),
            group_dn: Some(m.group_dn.clone()),
            entitlement_id: self.entitlement_of(&m.group_dn),
        }
    }
}

/// Everything that differs, sorted by kind and names: the check over
/// everyone at once, in memory. The directory sync gets the same answer
/// page by page (its tests compare the two).
pub fn compute(
    identities: &HashMap<String, Identity>,
    active_grants: &HashMap<String, Vec<Grant>>,
    policy: &Policy,
    accounts: &[AccountView],
    groups: &[GroupView],
) -> Vec<Drift> {
    let check = DriftCheck::new(policy);
    let mut accounts_of: HashMap<&str, Vec<AccountView>> = HashMap::new();
    for a in accounts {
        if let Some(e) = a.employee_id.as_deref() {
            accounts_of.entry(e).or_default().push(a.clone());
        }
    }
    let memberships: Vec<Membership> = groups
        .iter()
        .flat_map(|g| {
            g.members.iter().map(|m| Membership {
                group_dn: g.dn.clone(),
                member: m.clone(),
            })
        })
        .collect();
    let mut of_member: HashMap<String, Vec<Membership>> = HashMap::new();
    for m in &memberships {
        of_member
            .entry(normalize_dn(&m.member))
            .or_default()
            .push(m.clone());
    }
    let mut out = Vec::new();
    let mut owned: HashSet<String> = HashSet::new();
    for (id, person) in identities {
        let mine = accounts_of
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut theirs = Vec::new();
        for a in mine {
            let dn = normalize_dn(&a.dn);
            if owned.insert(dn.clone()) {
                theirs.extend(of_member.get(&dn).into_iter().flatten().cloned());
            }
        }
        out.extend(check.person(
            person,
            active_grants.get(id).map(Vec::as_slice).unwrap_or_default(),
            mine,
            &theirs,
        ));
    }
    for a in accounts {
        if !a
            .employee_id
            .as_deref()
            .is_some_and(|e| identities.contains_key(e))
        {
            out.push(DriftCheck::orphan(a));
        }
    }
    for m in &memberships {
        if !owned.contains(&normalize_dn(&m.member)) {
            out.push(check.unowned_membership(m));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Classification;
    use crate::grant::SourceKind;
    use crate::identity::Attributes;
    use chrono::{TimeZone, Utc};

    const POLICY: &str = r#"
[[systems]]
id = "dir"
kind = "directory"
owner = "A"

[[entitlements]]
id = "fin"
system = "dir"
classification = "internal"
kind = "ldap_group"
ldap_group_dn = "cn=Finance, ou=groups,dc=x"
"#;

    fn person(id: &str, status: Status) -> (String, Identity) {
        let t = Utc.timestamp_opt(0, 0).single().unwrap_or_default();
        (
            id.to_string(),
            Identity {
                employee_id: id.into(),
                attrs: Attributes::new_person(Classification::Internal),
                status,
                attrs_effective_at: t,
                status_effective_at: t,
                created_at: t,
                updated_at: t,
                history: Default::default(),
            },
        )
    }

    fn grant(id: &str, ent: &str) -> Grant {
        Grant {
            id: format!("g-{id}"),
            employee_id: id.into(),
            entitlement_id: ent.into(),
            source: SourceKind::Birthright,
            source_ref: "r".into(),
            granted_at: Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
            expires_at: None,
            approvers: vec![],
            justification: String::new(),
            revoked_at: None,
            revoke_reason: None,
            review_pending: false,
            exception_id: None,
        }
    }

    fn account(uid: &str, emp: Option<&str>, disabled: bool) -> AccountView {
        AccountView {
            dn: format!("uid={uid},ou=people,dc=x"),
            employee_id: emp.map(String::from),
            disabled,
        }
    }

    /// The drift check as it was first written, over everyone at once: the
    /// reference the check must agree with.
    fn reference(
        identities: &HashMap<String, Identity>,
        active_grants: &HashMap<String, Vec<Grant>>,
        policy: &Policy,
        accounts: &[AccountView],
        groups: &[GroupView],
    ) -> Vec<Drift> {
        let mut out = Vec::new();
        // Entitlements by the (normalized) group that provisions them.
        let ent_of_group = entitlements_by_group(policy);
        // Accounts: orphans and enabled leavers; who owns which account.
        let mut account_of: HashMap<&str, &AccountView> = HashMap::new();
        let mut owner_of_dn: HashMap<String, &str> = HashMap::new();
        for a in accounts {
            match a.employee_id.as_deref().and_then(|id| identities.get(id)) {
                None => out.push(Drift {
                    kind: DriftKind::OrphanAccount,
                    employee_id: a.employee_id.clone(),
                    account_dn: Some(a.dn.clone()),
                    group_dn: None,
                    entitlement_id: None,
                }),
                Some(person) => {
                    account_of.insert(&person.employee_id, a);
                    owner_of_dn.insert(normalize_dn(&a.dn), &person.employee_id);
                    if person.status == Status::Terminated && !a.disabled {
                        out.push(Drift {
                            kind: DriftKind::EnabledLeaver,
                            employee_id: Some(person.employee_id.clone()),
                            account_dn: Some(a.dn.clone()),
                            group_dn: None,
                            entitlement_id: None,
                        });
                    }
                }
            }
        }
        // Memberships the grants give, by (group, member account).
        let mut wanted: BTreeMap<(String, String), (&str, &str, &str)> = BTreeMap::new();
        for (id, grants) in active_grants {
            let Some(account) = account_of.get(id.as_str()) else {
                continue;
            };
            for g in grants.iter().filter(|g| g.is_active()) {
                if let Some(dn) = policy
                    .entitlements
                    .get(&g.entitlement_id)
                    .and_then(|e| e.ldap_group_dn.as_deref())
                {
                    let key = (normalize_dn(dn), normalize_dn(&account.dn));
                    wanted.insert(key, (id.as_str(), dn, g.entitlement_id.as_str()));
                }
            }
        }
        let mut present: HashSet<(String, String)> = HashSet::new();
        for g in groups {
            let gdn = normalize_dn(&g.dn);
            for m in &g.members {
                let key = (gdn.clone(), normalize_dn(m));
                if !wanted.contains_key(&key) {
                    out.push(Drift {
                        kind: DriftKind::UnmanagedMembership,
                        employee_id: owner_of_dn.get(&key.1).map(|s| s.to_string()),
                        account_dn: Some(m.clone()),
                        group_dn: Some(g.dn.clone()),
                        entitlement_id: ent_of_group
                            .get(&gdn)
                            .and_then(|v| v.first())
                            .map(|s| s.to_string()),
                    });
                }
                present.insert(key);
            }
        }
        for (key, (id, dn, ent)) in &wanted {
            if !present.contains(key) {
                out.push(Drift {
                    kind: DriftKind::MissingMembership,
                    employee_id: Some(id.to_string()),
                    account_dn: account_of.get(id).map(|a| a.dn.clone()),
                    group_dn: Some(dn.to_string()),
                    entitlement_id: Some(ent.to_string()),
                });
            }
        }
        for person in identities.values().filter(|i| i.may_hold_access()) {
            if !account_of.contains_key(person.employee_id.as_str()) {
                out.push(Drift {
                    kind: DriftKind::MissingAccount,
                    employee_id: Some(person.employee_id.clone()),
                    account_dn: None,
                    group_dn: None,
                    entitlement_id: None,
                });
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_check_agrees_with_the_reference() {
        // Generated directories and people: accounts with and without
        // employee ids (some unknown, some twice), DNs spelled differently
        // in groups, statuses, grants with and without groups.
        let groups = format!(
            "{POLICY}
[[entitlements]]
id = \"ops\"
system = \"dir\"
classification = \"internal\"
kind = \"ldap_group\"
ldap_group_dn = \"cn=Ops,ou=groups,dc=x\"

[[entitlements]]
id = \"badge\"
system = \"dir\"
classification = \"internal\"
kind = \"app_role\"
"
        );
        let policy = Policy::parse(&groups).unwrap_or_default();
        assert_eq!(policy.entitlements.len(), 3);
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        for _case in 0..200 {
            let people = 1 + next(30) as usize;
            let statuses = [
                Status::Active,
                Status::Suspended,
                Status::Terminated,
                Status::PreHire,
            ];
            let ids: HashMap<String, Identity> = (0..people)
                .map(|i| person(&format!("E{i}"), statuses[next(4) as usize]))
                .collect();
            let mut grants: HashMap<String, Vec<Grant>> = HashMap::new();
            for i in 0..people {
                for ent in ["fin", "ops", "badge"] {
                    if next(2) == 0 {
                        grants
                            .entry(format!("E{i}"))
                            .or_default()
                            .push(grant(&format!("E{i}"), ent));
                    }
                }
            }
            let mut accounts = Vec::new();
            for i in 0..(people + 5) {
                match next(6) {
                    0 => {}
                    1 => accounts.push(account(&format!("u{i}"), None, false)),
                    2 => {
                        accounts.push(account(&format!("u{i}"), Some(&format!("E{i}")), false));
                        accounts.push(account(
                            &format!("v{i}"),
                            Some(&format!("E{i}")),
                            next(2) == 0,
                        ));
                    }
                    _ => accounts.push(account(
                        &format!("u{i}"),
                        Some(&format!("E{i}")),
                        next(3) == 0,
                    )),
                }
            }
            let spell = |dn: &str, how: u64| match how {
                0 => dn.to_string(),
                1 => dn.to_uppercase(),
                _ => dn.replace(',', ", "),
            };
            let mut groups: Vec<GroupView> = Vec::new();
            for g in ["cn=Finance,ou=groups,dc=x", "cn=Ops,ou=groups,dc=x"] {
                let mut members = Vec::new();
                for i in 0..(people + 5) {
                    if next(3) != 0 {
                        continue;
                    }
                    let uid = if next(4) == 0 { "v" } else { "u" };
                    let how = next(3);
                    members.push(spell(&format!("uid={uid}{i},ou=people,dc=x"), how));
                }
                groups.push(GroupView {
                    dn: g.to_string(),
                    members,
                });
            }
            let computed = compute(&ids, &grants, &policy, &accounts, &groups);
            let expected = reference(&ids, &grants, &policy, &accounts, &groups);
            assert_eq!(computed, expected, "{ids:?} {accounts:?} {groups:?}");
        }
    }

    #[test]
    fn every_kind_is_found_and_nothing_else() {
        let policy = Policy::parse(POLICY).unwrap_or_default();
        let ids: HashMap<_, _> = [
            person("A", Status::Active), // in sync: account, granted membership present
            person("B", Status::Active), // grant, membership missing
            person("L", Status::Terminated), // enabled leaver
            person("D", Status::Terminated), // disabled leaver: fine
            person("N", Status::Active), // no account
            person("P", Status::PreHire), // no account yet: fine
        ]
        .into_iter()
        .collect();
        let grants: HashMap<_, _> = [("A", "fin"), ("B", "fin")]
            .into_iter()
            .map(|(i, e)| (i.to_string(), vec![grant(i, e)]))
            .collect();
        let accounts = vec![
            account("a", Some("A"), false),
            account("b", Some("B"), false),
            account("l", Some("L"), false),
            account("d", Some("D"), true),
            account("x", Some("X"), false), // orphan: unknown employee
            account("svc", None, false),    // orphan: no employee id
        ];
        let groups = vec![GroupView {
            dn: "CN=finance,OU=groups,DC=x".into(),
            members: vec![
                "UID=a, ou=people,dc=x".into(),
                "uid=l,ou=people,dc=x".into(),
            ],
        }];
        let d = compute(&ids, &grants, &policy, &accounts, &groups);
        let got: Vec<(DriftKind, Option<&str>)> = d
            .iter()
            .map(|d| (d.kind, d.employee_id.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (DriftKind::OrphanAccount, None),
                (DriftKind::OrphanAccount, Some("X")),
                (DriftKind::EnabledLeaver, Some("L")),
                (DriftKind::UnmanagedMembership, Some("L")),
                (DriftKind::MissingMembership, Some("B")),
                (DriftKind::MissingAccount, Some("N")),
            ]
        );
        assert_eq!(d[3].entitlement_id.as_deref(), Some("fin"));
    }
}
