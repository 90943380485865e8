//! The directory operations idgov performs, each idempotent so an operation
//! retried after a failure or a crash is harmless.

use crate::escape::eq_filter;
use crate::preset::{DisableMethod, PERMANENT_LOCK, Schema};
use idgov_domain::drift::{AccountView, GroupView};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry, SearchStream};
use std::collections::HashSet;
use std::time::Duration;
use thiserror::Error;

/// LDAP result codes idgov interprets.
pub mod rc {
    pub const SUCCESS: u32 = 0;
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const TYPE_OR_VALUE_EXISTS: u32 = 20;
    pub const OBJECT_CLASS_VIOLATION: u32 = 65;
    pub const INVALID_CREDENTIALS: u32 = 49;

    /// Result codes that may go away by themselves: the server is busy,
    /// unavailable, over a limit, or (often on a replica) unwilling now.
    /// Every other refusal needs a person to fix something first.
    pub const TRANSIENT: [u32; 8] = [
        1,  // operationsError
        3,  // timeLimitExceeded
        11, // adminLimitExceeded
        51, // busy
        52, // unavailable
        53, // unwillingToPerform
        54, // loopDetect
        80, // other
    ];
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
    /// True when the connection is suspect (unreachable, timed out): it is
    /// dropped and replaced.
    pub fn is_connection(&self) -> bool {
        matches!(self, DirectoryError::Unreachable(_))
    }

    /// True when retrying later can succeed by itself. A refusal such as a
    /// value the schema cannot hold (21), an entry that already exists (68)
    /// or an object class violation (65) is permanent: retrying cannot help.
    pub fn is_transient(&self) -> bool {
        match self {
            DirectoryError::Unreachable(_) | DirectoryError::NotFound(_) => true,
            DirectoryError::Refused { code, .. } => rc::TRANSIENT.contains(code),
        }
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
    /// Connect, TLS and bind, each.
    pub timeout: Duration,
    /// Every search, modify and add.
    pub op_timeout: Duration,
    /// TCP keepalive interval.
    pub keepalive: Duration,
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
    op_timeout: Duration,
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
    /// Connects and binds, each step within the connect timeout. The TCP
    /// socket has keepalive on, so a connection a firewall or load balancer
    /// dropped silently is noticed.
    pub async fn connect(c: &Connection, schema: Schema) -> Result<Directory, DirectoryError> {
        let deadline = |what: &str| {
            DirectoryError::Unreachable(format!(
                "{what} took longer than {} s",
                c.timeout.as_secs()
            ))
        };
        let addr = authority(&c.url)?;
        let tcp = tokio::time::timeout(c.timeout, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| deadline("connecting"))?
            .map_err(|e| DirectoryError::Unreachable(format!("cannot connect to {addr}: {e}")))?;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(c.keepalive)
            .with_interval(c.keepalive);
        socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&keepalive)
            .map_err(|e| DirectoryError::Unreachable(format!("keepalive: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let std = tcp
            .into_std()
            .map_err(|e| DirectoryError::Unreachable(e.to_string()))?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(c.timeout)
            .set_starttls(c.starttls)
            .set_std_stream(ldap3::StdStream::Tcp(std));
        let (conn, mut ldap) =
            tokio::time::timeout(c.timeout, LdapConnAsync::with_settings(settings, &c.url))
                .await
                .map_err(|_| deadline("the TLS handshake"))??;
        ldap3::drive!(conn);
        let bound = tokio::time::timeout(
            c.timeout,
            ldap.with_timeout(c.timeout)
                .simple_bind(&c.bind_dn, &c.password),
        )
        .await
        .map_err(|_| deadline("binding"))??;
        if bound.rc != rc::SUCCESS {
            return Err(DirectoryError::Refused {
                code: bound.rc,
                message: format!("bind as {} failed: {}", c.bind_dn, bound.text),
            });
        }
        Ok(Directory {
            ldap,
            schema,
            op_timeout: c.op_timeout,
        })
    }

    /// The session, with the operation timeout armed for its next request
    /// (ldap3 applies a timeout to one operation only).
    fn op(&mut self) -> &mut ldap3::Ldap {
        self.ldap.with_timeout(self.op_timeout)
    }

    /// A cheap round trip (the root DSE): true when the session answers
    /// within the operation timeout.
    pub async fn is_alive(&mut self) -> bool {
        matches!(
            self.op()
                .search("", Scope::Base, "(objectClass=*)", vec!["1.1"])
                .await,
            Ok(r) if r.1.rc == rc::SUCCESS
        )
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
            .op()
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
            .op()
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
            .op()
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
                .op()
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

    /// Disables the account at `dn` if it still belongs to `employee_id`
    /// (its correlation attribute is read in the same round trip as its
    /// lock state); `NotFound` when the entry is gone or someone else's.
    pub async fn disable_if_theirs(
        &mut self,
        dn: &str,
        employee_id: &str,
    ) -> Result<bool, DirectoryError> {
        let method = self.schema.disable.clone();
        let attr = method.attribute().to_string();
        let corr = self.schema.correlation_attr.clone();
        let res = self
            .op()
            .search(
                dn,
                Scope::Base,
                "(objectClass=*)",
                vec![attr.as_str(), corr.as_str()],
            )
            .await?;
        if res.1.rc == rc::NO_SUCH_OBJECT {
            return Err(DirectoryError::NotFound(dn.to_string()));
        }
        let (entries, _) = res.success()?;
        let entry = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| DirectoryError::NotFound(dn.to_string()))?;
        let owner = entry.attrs.get(&corr).and_then(|v| v.first().cloned());
        if owner.as_deref() != Some(employee_id) {
            return Err(DirectoryError::NotFound(format!(
                "{dn} is not {employee_id}'s account any more"
            )));
        }
        let current = entry.attrs.get(&attr).and_then(|v| v.first().cloned());
        self.lock_with(dn, &method, current).await
    }

    /// Disables an account. Returns false when it was disabled already.
    pub async fn disable(&mut self, dn: &str) -> Result<bool, DirectoryError> {
        let method = self.schema.disable.clone();
        let attr = method.attribute();
        let current = self.read_attr(dn, attr).await?;
        self.lock_with(dn, &method, current).await
    }

    async fn lock_with(
        &mut self,
        dn: &str,
        method: &DisableMethod,
        current: Option<String>,
    ) -> Result<bool, DirectoryError> {
        let attr = method.attribute();
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
        let r = self.op().modify(dn, vec![change]).await;
        accept(r, tolerated)
    }

    /// One value of `attr` of the entry `dn` (operational attributes too).
    async fn read_attr(&mut self, dn: &str, attr: &str) -> Result<Option<String>, DirectoryError> {
        let res = self
            .op()
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

    /// The accounts under `base`, read in pages of `page_size` as the
    /// caller asks for them (never more than a page held here).
    pub async fn read_accounts(
        &mut self,
        base: &str,
        page_size: i32,
    ) -> Result<AccountReader, DirectoryError> {
        let filter = format!("(objectClass={})", self.schema.account_class);
        let corr = self.schema.correlation_attr.clone();
        let method = self.schema.disable.clone();
        let attrs = vec![corr.clone(), method.attribute().to_string()];
        Ok(AccountReader {
            entries: self.paged(base, &filter, attrs, page_size).await?,
            corr,
            method,
        })
    }

    /// The groups under `base` with their members, read in pages of
    /// `page_size` as the caller asks for them.
    pub async fn read_groups(
        &mut self,
        base: &str,
        page_size: i32,
    ) -> Result<GroupReader, DirectoryError> {
        let filter = format!("(objectClass={})", self.schema.group_class);
        let member = self.schema.member_attr.clone();
        Ok(GroupReader {
            entries: self
                .paged(base, &filter, vec![member.clone()], page_size)
                .await?,
            member,
            stand_in: self
                .schema
                .empty_group_member
                .clone()
                .map(|s| s.to_lowercase()),
        })
    }

    async fn paged(
        &mut self,
        base: &str,
        filter: &str,
        attrs: Vec<String>,
        page_size: i32,
    ) -> Result<Entries, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(page_size)),
        ];
        let stream = self
            .op()
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
            .await?;
        Ok(Entries {
            stream,
            done: false,
        })
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
        let r = self.op().add(dn, attrs).await;
        accept(r, &[]).map(|_| ())
    }

    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

/// The entries of one paged search, read as the caller asks: the paged
/// results control asks the server for the next page only once this one is
/// read.
struct Entries {
    stream: SearchStream<'static, String, Vec<String>>,
    done: bool,
}

impl Entries {
    async fn next(&mut self) -> Result<Option<SearchEntry>, DirectoryError> {
        if self.done {
            return Ok(None);
        }
        match self.stream.next().await? {
            Some(e) => Ok(Some(SearchEntry::construct(e))),
            None => {
                self.done = true;
                self.stream.finish().await.success()?;
                Ok(None)
            }
        }
    }
}

/// Accounts as a directory lists them ([`Directory::read_accounts`]).
pub struct AccountReader {
    entries: Entries,
    corr: String,
    method: DisableMethod,
}

impl AccountReader {
    /// Up to `n` more accounts; an empty batch once all are read.
    pub async fn next_batch(&mut self, n: usize) -> Result<Vec<AccountView>, DirectoryError> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(e) = self.entries.next().await? else {
                break;
            };
            let first = |a: &str| e.attrs.get(a).and_then(|v| v.first().cloned());
            out.push(AccountView {
                employee_id: first(&self.corr),
                disabled: self
                    .method
                    .is_disabled(first(self.method.attribute()).as_deref()),
                dn: e.dn,
            });
        }
        Ok(out)
    }
}

/// Groups with their members as a directory lists them
/// ([`Directory::read_groups`]). The stand-in member of an otherwise empty
/// group is left out.
pub struct GroupReader {
    entries: Entries,
    member: String,
    stand_in: Option<String>,
}

impl GroupReader {
    /// The next group; none once all are read.
    pub async fn next(&mut self) -> Result<Option<GroupView>, DirectoryError> {
        let Some(mut e) = self.entries.next().await? else {
            return Ok(None);
        };
        Ok(Some(GroupView {
            members: e
                .attrs
                .remove(&self.member)
                .unwrap_or_default()
                .into_iter()
                .filter(|m| Some(m.to_lowercase()) != self.stand_in)
                .collect(),
            dn: e.dn,
        }))
    }
}

/// `host:port` of an `ldap://` or `ldaps://` URL (389 and 636 by default).
fn authority(url: &str) -> Result<String, DirectoryError> {
    let (rest, port) = if let Some(r) = url.strip_prefix("ldaps://") {
        (r, 636)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        (r, 389)
    } else {
        return Err(DirectoryError::Unreachable(format!(
            "{url:?} is not an ldap:// or ldaps:// URL"
        )));
    };
    let host = rest.split('/').next().unwrap_or_default();
    let has_port = match host.rfind(']') {
        Some(i) => host[i..].contains(':'),
        None => host.contains(':'),
    };
    Ok(if has_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    })
}

/// Account DNs by correlation value (employee id), remembered so that an
/// operation does not search for the account every time. An entry that
/// turns out stale (the account moved or went) is forgotten and looked up
/// again. Bounded: it forgets everything past `capacity` entries.
#[derive(Debug)]
pub struct DnCache {
    map: std::sync::Mutex<std::collections::HashMap<String, String>>,
    capacity: usize,
}

impl DnCache {
    pub fn new(capacity: usize) -> DnCache {
        DnCache {
            map: Default::default(),
            capacity,
        }
    }

    pub fn get(&self, employee_id: &str) -> Option<String> {
        match self.map.lock() {
            Ok(m) => m.get(employee_id).cloned(),
            Err(p) => p.into_inner().get(employee_id).cloned(),
        }
    }

    pub fn put(&self, employee_id: &str, dn: &str) {
        let mut m = match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if m.len() >= self.capacity {
            m.clear();
        }
        m.insert(employee_id.to_string(), dn.to_string());
    }

    pub fn forget(&self, employee_id: &str) {
        match self.map.lock() {
            Ok(mut m) => m.remove(employee_id),
            Err(p) => p.into_inner().remove(employee_id),
        };
    }
}

/// Connections to the directory, reused across operations. A connection
/// that failed is never returned here: it is dropped, and the next
/// operation gets a new one. One idle longer than `check_after` is checked
/// with a round trip before it is lent out.
pub struct Pool {
    connection: Connection,
    schema: Schema,
    idle: std::sync::Mutex<Vec<(Directory, std::time::Instant)>>,
    max_idle: usize,
    check_after: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("url", &self.connection.url)
            .field("max_idle", &self.max_idle)
            .finish()
    }
}

impl Pool {
    pub fn new(connection: Connection, schema: Schema, max_idle: usize) -> Pool {
        Pool {
            connection,
            schema,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            check_after: Duration::from_secs(30),
        }
    }

    /// A live connection: an idle one (checked if it idled long), or a new one.
    pub async fn get(&self) -> Result<Directory, DirectoryError> {
        loop {
            let taken = match self.idle.lock() {
                Ok(mut v) => v.pop(),
                Err(p) => p.into_inner().pop(),
            };
            match taken {
                None => return Directory::connect(&self.connection, self.schema.clone()).await,
                Some((d, since)) if since.elapsed() < self.check_after => return Ok(d),
                Some((mut d, _)) => {
                    if d.is_alive().await {
                        return Ok(d);
                    }
                    // Dead: dropped; try the next idle one or connect.
                }
            }
        }
    }

    /// Returns a connection that worked.
    pub fn put(&self, d: Directory) {
        let mut v = match self.idle.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        if v.len() < self.max_idle {
            v.push((d, std::time::Instant::now()));
        }
    }

    /// Drops every idle connection (after the directory was unreachable).
    pub fn clear(&self) {
        match self.idle.lock() {
            Ok(mut v) => v.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_have_ports() {
        assert_eq!(authority("ldap://h").ok().as_deref(), Some("h:389"));
        assert_eq!(authority("ldaps://h/").ok().as_deref(), Some("h:636"));
        assert_eq!(authority("ldap://h:3890").ok().as_deref(), Some("h:3890"));
        assert_eq!(authority("ldap://[::1]").ok().as_deref(), Some("[::1]:389"));
        assert_eq!(
            authority("ldap://[::1]:1389").ok().as_deref(),
            Some("[::1]:1389")
        );
        assert!(authority("http://h").is_err());
    }

    #[test]
    fn refusals_are_classified() {
        let refused = |code| DirectoryError::Refused {
            code,
            message: String::new(),
        };
        for code in [21, 65, 68, 19, 34, 50] {
            assert!(!refused(code).is_transient(), "{code}");
        }
        for code in [51, 52, 53, 80] {
            assert!(refused(code).is_transient(), "{code}");
        }
        assert!(DirectoryError::Unreachable("x".into()).is_transient());
    }
}
