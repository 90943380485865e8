//! What differs between directory products.

use serde::{Deserialize, Serialize};

/// The stand-in member of an otherwise empty `groupOfNames`.
pub const EMPTY_MEMBER: &str = "cn=nobody";

/// A directory product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    Openldap,
    ActiveDirectory,
    #[serde(rename = "389-ds")]
    Ds389,
}

/// How an account is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisableMethod {
    /// ppolicy: `pwdAccountLockedTime: 000001010000Z` (permanent lock;
    /// enforced only where a password policy applies to the entry).
    PpolicyLock,
    /// Active Directory: bit 2 (ACCOUNTDISABLE) of `userAccountControl`.
    UserAccountControl,
    /// 389-ds: `nsAccountLock: TRUE`.
    NsAccountLock,
}

/// The schema facts idgov needs about a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Object class of accounts.
    pub account_class: String,
    /// Attribute holding the HR employee id (correlation).
    pub correlation_attr: String,
    /// RDN attribute of new accounts.
    pub rdn_attr: String,
    /// Object class of groups.
    pub group_class: String,
    /// Attribute listing group members (DNs).
    pub member_attr: String,
    /// Where the member attribute is mandatory (`groupOfNames`), the value
    /// that stands in when the last real member is removed.
    pub empty_group_member: Option<String>,
    pub disable: DisableMethod,
}

impl Preset {
    pub fn schema(self) -> Schema {
        match self {
            Preset::Openldap => Schema {
                account_class: "inetOrgPerson".into(),
                correlation_attr: "employeeNumber".into(),
                rdn_attr: "uid".into(),
                group_class: "groupOfNames".into(),
                member_attr: "member".into(),
                empty_group_member: Some(EMPTY_MEMBER.into()),
                disable: DisableMethod::PpolicyLock,
            },
            Preset::ActiveDirectory => Schema {
                account_class: "user".into(),
                correlation_attr: "employeeID".into(),
                rdn_attr: "cn".into(),
                group_class: "group".into(),
                member_attr: "member".into(),
                empty_group_member: None,
                disable: DisableMethod::UserAccountControl,
            },
            Preset::Ds389 => Schema {
                account_class: "inetOrgPerson".into(),
                correlation_attr: "employeeNumber".into(),
                rdn_attr: "uid".into(),
                group_class: "groupOfNames".into(),
                member_attr: "member".into(),
                empty_group_member: Some(EMPTY_MEMBER.into()),
                disable: DisableMethod::NsAccountLock,
            },
        }
    }
}
