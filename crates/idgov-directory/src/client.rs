//! The directory operations idgov performs, each idempotent so an operation
//! retried after a failure or a crash is harmless.

use crate::escape::eq_filter;
use crate::preset::{DisableMethod, PERMANENT_LOCK, Schema};
use idgov_domain::drift::{AccountView, GroupView};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use std::collections::HashSet;
use std::time::Duration;
use thiserror::Error;

/// LDAP result codes idgov interprets.
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const TYPE_OR_VALUE_EXISTS: u32 = 20;
    pub const OBJECT_CLASS_VIOLATION: u32 = 65;
    pub const INVALID_CREDENTIALS: u32 = 49;
}

#[derive(Debug, Error)]
pub enum DirectoryError {
    /// The directory could not be reached; retry later.
    #[error("directory unreachable: {0}")]
    Unreachable(String),
    /// The directory refused the operation (result code and message).
    #[error("directory refused: {code} {message}")]
    Refused { code: u32, message: String },
    #[error("not found in the directory: {0}")]
    NotFound(String),
}

impl DirectoryError {
    /// True when retrying later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DirectoryError::Unreachable(_))
    }
}

impl From<LdapError> for DirectoryError {
    fn from(e: LdapError) -> Self {
        match e {
            LdapError::LdapResult { result } => DirectoryError::Refused {
                code: result.rc,
                message: result.text,
            },
            other => DirectoryError::Unreachable(other.to_string()),
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Connection {
    /// `ldap://host:port` (StartTLS when `starttls`) or `ldaps://host:port`.
    pub url: String,
    pub starttls: bool,
    pub bind_dn: String,
    /// The bind password; never logged.
    pub password: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("bind_dn", &self.bind_dn)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A bound directory session.
#[derive(Clone)]
pub struct Directory {
    ldap: ldap3::Ldap,
    schema: Schema,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("schema", &self.schema)
            .finish()
    }
}

/// Turns a result into success, treating `ok_codes` as done too.
fn accept(
    r: Result<ldap3::LdapResult, LdapError>,
    ok_codes: &[u32],
) -> Result<bool, DirectoryError> {
    let result = r?;
    if result.rc == rc::SUCCESS {
        Ok(true)
    } else if ok_codes.contains(&result.rc) {
        Ok(false)
    } else {
        Err(DirectoryError::Refused {
            code: result.rc,
            message: result.text,
        })
    }
}

impl Directory {
    /// Connects and binds.
    pub async fn connect(c: &Connection, schema: Schema) -> Result<Directory, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(c.timeout)
            .set_starttls(c.starttls);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &c.url).await?;
        ldap3::drive!(conn);
        ldap.with_timeout(c.timeout);
        let bound = ldap.simple_bind(&c.bind_dn, &c.password).await?;
        if bound.rc != rc::SUCCESS {
            return Err(DirectoryError::Refused {
                code: bound.rc,
                message: format!("bind as {} failed: {}", c.bind_dn, bound.text),
            });
        }
        Ok(Directory { ldap, schema })
    }

    /// Checks whether `dn` can bind with `password` (true) or is refused
    /// with invalid credentials, e.g. because it is locked (false).
    pub async fn can_bind(url: &str, dn: &str, password: &str) -> Result<bool, DirectoryError> {
        let (conn, mut ldap) = LdapConnAsync::new(url).await?;
        ldap3::drive!(conn);
        let r = ldap.simple_bind(dn, password).await?;
        let _ = ldap.unbind().await;
        match r.rc {
            rc::SUCCESS => Ok(true),
            rc::INVALID_CREDENTIALS => Ok(false),
            code => Err(DirectoryError::Refused {
                code,
                message: r.text,
            }),
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The DNs under `base` of `class` entries whose `attr` is `value`
    /// (matched literally: the value is filter-escaped).
    async fn dns_where(
        &mut self,
        base: &str,
        class: &str,
        attr: &str,
        value: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let filter = format!("(&(objectClass={class}){})", eq_filter(attr, value));
        let (entries, _) = self
            .ldap
            .search(base, Scope::Subtree, &filter, vec!["1.1"])
            .await?
            .success()?;
        Ok(entries
            .into_iter()
            .map(|e| SearchEntry::construct(e).dn)
            .collect())
    }

    /// The DN of the account whose correlation attribute is `employee_id`.
    pub async fn find_account(
        &mut self,
        base: &str,
        employee_id: &str,
    ) -> Result<Option<String>, DirectoryError> {
        let (class, attr) = (
            self.schema.account_class.clone(),
            self.schema.correlation_attr.clone(),
        );
        Ok(self
            .dns_where(base, &class, &attr, employee_id)
            .await?
            .into_iter()
            .next())
    }

    /// Adds `member` to `group`. Returns false when it was a member already.
    pub async fn add_member(&mut self, group: &str, member: &str) -> Result<bool, DirectoryError> {
        let attr = self.schema.member_attr.clone();
        let r = self
            .ldap
            .modify(
                group,
                vec![Mod::Add(attr, HashSet::from([member.to_string()]))],
            )
            .await;
        accept(r, &[rc::TYPE_OR_VALUE_EXISTS])
    }

    /// Removes `member` from `group`. Returns false when it was not a member.
    /// Where the last member cannot leave a group empty (`groupOfNames`),
    /// the schema's stand-in member takes its place.
    pub async fn remove_member(
        &mut self,
        group: &str,
        member: &str,
    ) -> Result<bool, DirectoryError> {
        let attr = self.schema.member_attr.clone();
        let r = self
            .ldap
            .modify(
                group,
                vec![Mod::Delete(
                    attr.clone(),
                    HashSet::from([member.to_string()]),
                )],
            )
            .await?;
        if r.rc == rc::OBJECT_CLASS_VIOLATION
            && let Some(stand_in) = self.schema.empty_group_member.clone()
        {
            // One modify: the stand-in comes in as the member goes out.
            let r = self
                .ldap
                .modify(
                    group,
                    vec![
                        Mod::Add(attr.clone(), HashSet::from([stand_in])),
                        Mod::Delete(attr, HashSet::from([member.to_string()])),
                    ],
                )
                .await;
            return accept(r, &[rc::NO_SUCH_ATTRIBUTE]);
        }
        accept(Ok(r), &[rc::NO_SUCH_ATTRIBUTE])
    }

    /// The groups under `base` listing `member`.
    pub async fn groups_of(
        &mut self,
        base: &str,
        member: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let (class, attr) = (
            self.schema.group_class.clone(),
            self.schema.member_attr.clone(),
        );
        self.dns_where(base, &class, &attr, member).await
    }

    /// Disables an account. Returns false when it was disabled already.
    pub async fn disable(&mut self, dn: &str) -> Result<bool, DirectoryError> {
        let method = self.schema.disable.clone();
        let attr = method.attribute();
        let current = self.read_attr(dn, attr).await?;
        let value = match method {
            // Any other lock (a temporary lockout) is made permanent.
            DisableMethod::PpolicyLock => PERMANENT_LOCK.to_string(),
            DisableMethod::NsAccountLock => "TRUE".to_string(),
            DisableMethod::UserAccountControl => {
                DisableMethod::user_account_control(current.as_deref(), true).to_string()
            }
        };
        if current.as_deref() == Some(value.as_str()) {
            return Ok(false);
        }
        self.set_attr(dn, attr, Some(&value)).await
    }

    /// Enables an account. Returns false when it was enabled already.
    pub async fn enable(&mut self, dn: &str) -> Result<bool, DirectoryError> {
        let method = self.schema.disable.clone();
        let attr = method.attribute();
        match method {
            DisableMethod::PpolicyLock | DisableMethod::NsAccountLock => {
                self.set_attr(dn, attr, None).await
            }
            DisableMethod::UserAccountControl => {
                let current = self.read_attr(dn, attr).await?;
                if !method.is_disabled(current.as_deref()) {
                    return Ok(false);
                }
                let value = DisableMethod::user_account_control(current.as_deref(), false);
                self.set_attr(dn, attr, Some(&value.to_string())).await
            }
        }
    }

    /// True when the account is disabled by the preset's method.
    pub async fn is_disabled(&mut self, dn: &str) -> Result<bool, DirectoryError> {
        let attr = self.schema.disable.attribute();
        let value = self.read_attr(dn, attr).await?;
        Ok(self.schema.disable.is_disabled(value.as_deref()))
    }

    /// Sets `attr` to `value`, or removes it when `value` is None (an
    /// attribute already absent counts as done: returns false).
    async fn set_attr(
        &mut self,
        dn: &str,
        attr: &str,
        value: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let (change, tolerated): (_, &[u32]) = match value {
            Some(v) => (
                Mod::Replace(attr.to_string(), HashSet::from([v.to_string()])),
                &[],
            ),
            None => (
                Mod::Delete(attr.to_string(), HashSet::new()),
                &[rc::NO_SUCH_ATTRIBUTE],
            ),
        };
        let r = self.ldap.modify(dn, vec![change]).await;
        accept(r, tolerated)
    }

    /// One value of `attr` of the entry `dn` (operational attributes too).
    async fn read_attr(&mut self, dn: &str, attr: &str) -> Result<Option<String>, DirectoryError> {
        let res = self
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec![attr])
            .await?;
        if res.1.rc == rc::NO_SUCH_OBJECT {
            return Err(DirectoryError::NotFound(dn.to_string()));
        }
        let (entries, _) = res.success()?;
        Ok(entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .and_then(|e| e.attrs.get(attr).and_then(|v| v.first().cloned())))
    }

    /// Every account under `base`, read in pages.
    pub async fn accounts(
        &mut self,
        base: &str,
        page_size: i32,
    ) -> Result<Vec<AccountView>, DirectoryError> {
        let filter = format!("(objectClass={})", self.schema.account_class);
        let corr = self.schema.correlation_attr.clone();
        let method = self.schema.disable.clone();
        let attrs = vec![corr.clone(), method.attribute().to_string()];
        let entries = self.paged(base, &filter, attrs, page_size).await?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let first = |a: &str| e.attrs.get(a).and_then(|v| v.first().cloned());
                AccountView {
                    employee_id: first(&corr),
                    disabled: method.is_disabled(first(method.attribute()).as_deref()),
                    dn: e.dn,
                }
            })
            .collect())
    }

    /// Every group under `base` with its members, read in pages. The
    /// stand-in member of an otherwise empty group is left out.
    pub async fn groups(
        &mut self,
        base: &str,
        page_size: i32,
    ) -> Result<Vec<GroupView>, DirectoryError> {
        let filter = format!("(objectClass={})", self.schema.group_class);
        let member = self.schema.member_attr.clone();
        let entries = self
            .paged(base, &filter, vec![member.clone()], page_size)
            .await?;
        let stand_in = self
            .schema
            .empty_group_member
            .clone()
            .map(|s| s.to_lowercase());
        Ok(entries
            .into_iter()
            .map(|mut e| GroupView {
                members: e
                    .attrs
                    .remove(&member)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| Some(m.to_lowercase()) != stand_in)
                    .collect(),
                dn: e.dn,
            })
            .collect())
    }

    async fn paged(
        &mut self,
        base: &str,
        filter: &str,
        attrs: Vec<String>,
        page_size: i32,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(page_size)),
        ];
        let mut stream = self
            .ldap
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
            .await?;
        let mut out = Vec::new();
        while let Some(entry) = stream.next().await? {
            out.push(SearchEntry::construct(entry));
        }
        stream.finish().await.success()?;
        Ok(out)
    }

    /// Creates an entry with `attrs` (each with at least one value).
    pub async fn add_entry(
        &mut self,
        dn: &str,
        attrs: Vec<(String, Vec<String>)>,
    ) -> Result<(), DirectoryError> {
        let attrs: Vec<(String, HashSet<String>)> = attrs
            .into_iter()
            .map(|(a, v)| (a, v.into_iter().collect()))
            .collect();
        let r = self.ldap.add(dn, attrs).await;
        accept(r, &[]).map(|_| ())
    }

    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}
