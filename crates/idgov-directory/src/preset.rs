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

impl Preset {
    /// The name used in the directory file.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Openldap => "openldap",
            Preset::ActiveDirectory => "active-directory",
            Preset::Ds389 => "389-ds",
        }
    }
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

/// The `pwdAccountLockedTime` value that locks an account for good.
pub const PERMANENT_LOCK: &str = "000001010000Z";

/// The `userAccountControl` bit of a disabled account.
const ACCOUNTDISABLE: u32 = 2;

impl DisableMethod {
    /// The attribute that says whether an account is disabled.
    pub fn attribute(&self) -> &'static str {
        match self {
            DisableMethod::PpolicyLock => "pwdAccountLockedTime",
            DisableMethod::NsAccountLock => "nsAccountLock",
            DisableMethod::UserAccountControl => "userAccountControl",
        }
    }

    /// True when an account whose [`DisableMethod::attribute`] holds
    /// `value` (`None`: absent) is disabled.
    pub fn is_disabled(&self, value: Option<&str>) -> bool {
        match self {
            DisableMethod::PpolicyLock => value.is_some(),
            DisableMethod::NsAccountLock => value.is_some_and(|v| v.eq_ignore_ascii_case("true")),
            DisableMethod::UserAccountControl => {
                value.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0) & ACCOUNTDISABLE != 0
            }
        }
    }

    /// The `userAccountControl` value with the disabled bit set or cleared
    /// (an absent value counts as a normal account, 512).
    pub fn user_account_control(current: Option<&str>, disabled: bool) -> u32 {
        let current: u32 = current.and_then(|v| v.parse().ok()).unwrap_or(512);
        if disabled {
            current | ACCOUNTDISABLE
        } else {
            current & !ACCOUNTDISABLE
        }
    }
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
            // 389-ds: OpenLDAP's schema, with its own lock attribute.
            Preset::Ds389 => Schema {
                disable: DisableMethod::NsAccountLock,
                ..Preset::Openldap.schema()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_reads_its_own_lock() {
        assert!(DisableMethod::PpolicyLock.is_disabled(Some(PERMANENT_LOCK)));
        assert!(!DisableMethod::PpolicyLock.is_disabled(None));
        assert!(DisableMethod::NsAccountLock.is_disabled(Some("true")));
        assert!(!DisableMethod::NsAccountLock.is_disabled(Some("FALSE")));
        assert!(DisableMethod::UserAccountControl.is_disabled(Some("514")));
        assert!(!DisableMethod::UserAccountControl.is_disabled(Some("512")));
        assert!(!DisableMethod::UserAccountControl.is_disabled(None));
    }

    #[test]
    fn active_directory_keeps_the_other_account_flags() {
        // 66048 = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD.
        let uac = DisableMethod::user_account_control;
        assert_eq!(uac(Some("66048"), true), 66050);
        assert_eq!(uac(Some("66050"), false), 66048);
        assert_eq!(uac(None, true), 514);
    }

    #[test]
    fn ds389_is_openldap_but_for_the_lock() {
        let (ds, ol) = (Preset::Ds389.schema(), Preset::Openldap.schema());
        assert_eq!(ds.disable, DisableMethod::NsAccountLock);
        assert_eq!(
            Schema {
                disable: DisableMethod::PpolicyLock,
                ..ds
            },
            ol
        );
    }
}
