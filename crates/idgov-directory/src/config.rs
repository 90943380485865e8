//! The directory configuration file (TOML). The bind password comes from a
//! file or an environment variable, never from this file and never into logs.
//!
//! ```toml
//! url = "ldaps://ldap.example.com"      # or ldap://… with starttls = true
//! starttls = false
//! bind_dn = "cn=idgov,ou=services,dc=example,dc=com"
//! password_file = "/etc/idgov/ldap-password"   # or password_env = "IDGOV_LDAP_PASSWORD"
//! accounts_base = "ou=people,dc=example,dc=com"
//! groups_base = "ou=groups,dc=example,dc=com"
//! preset = "openldap"                   # openldap | active-directory | 389-ds
//! page_size = 500
//! workers = 8                           # operations applied concurrently (across people)
//! timeout_seconds = 5                   # connect, TLS and bind
//! operation_timeout_seconds = 10        # each search, modify, add
//! keepalive_seconds = 30                # TCP keepalive on idle connections
//! ```

use crate::account::AccountTemplate;
use crate::client::Connection;
use crate::preset::{Preset, Schema};
use idgov_domain::drift::DriftKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigDoc {
    url: String,
    #[serde(default)]
    starttls: bool,
    bind_dn: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    accounts_base: String,
    groups_base: String,
    #[serde(default = "default_preset")]
    preset: Preset,
    #[serde(default = "default_page_size")]
    page_size: i32,
    #[serde(default = "default_workers")]
    workers: usize,
    /// Connecting: TCP, TLS and bind, each within this (default 5 s).
    #[serde(default = "default_timeout")]
    timeout_seconds: u64,
    /// Every search, modify and add, within this (default 10 s); a
    /// connection that misses it is dropped and replaced.
    #[serde(default = "default_operation_timeout")]
    operation_timeout_seconds: u64,
    /// TCP keepalive probes on idle connections, every this many seconds
    /// (default 30).
    #[serde(default = "default_keepalive")]
    keepalive_seconds: u64,
    /// What a sync does about each drift kind (default: report).
    #[serde(default)]
    drift: BTreeMap<DriftKind, DriftAction>,
    /// Account creation for joiners (off by default).
    #[serde(default)]
    accounts: AccountTemplate,
}

/// What a directory sync does about a kind of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftAction {
    /// Record it (and raise a security event where it matters).
    Report,
    /// Make the directory match idgov, through the provisioning outbox.
    Remediate,
    /// For first onboarding (unmanaged memberships only): adopt the
    /// membership as a grant with source `imported`, pending review.
    Import,
}

fn default_preset() -> Preset {
    Preset::Openldap
}
fn default_page_size() -> i32 {
    500
}
fn default_workers() -> usize {
    8
}
fn default_timeout() -> u64 {
    5
}
fn default_operation_timeout() -> u64 {
    10
}
fn default_keepalive() -> u64 {
    30
}

/// A loaded directory configuration.
#[derive(Clone)]
pub struct DirectoryConfig {
    pub connection: Connection,
    pub accounts_base: String,
    pub groups_base: String,
    pub preset: Preset,
    pub schema: Schema,
    pub page_size: i32,
    pub workers: usize,
    /// What a sync does about each drift kind; kinds not named are reported.
    pub drift: BTreeMap<DriftKind, DriftAction>,
    /// How joiners' accounts are created, if they are.
    pub accounts: AccountTemplate,
}

impl std::fmt::Debug for DirectoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("url", &self.connection.url)
            .field("bind_dn", &self.connection.bind_dn)
            .field("password", &"<redacted>")
            .field("accounts_base", &self.accounts_base)
            .field("groups_base", &self.groups_base)
            .field("preset", &self.preset)
            .finish()
    }
}

impl DirectoryConfig {
    /// Reads and checks a configuration file; resolves the password.
    pub fn load(path: &Path) -> Result<DirectoryConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses a configuration; a relative `password_file` is read from `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<DirectoryConfig, String> {
        let doc: ConfigDoc =
            toml::from_str(text).map_err(|e| format!("directory configuration: {e}"))?;
        if !(doc.url.starts_with("ldap://") || doc.url.starts_with("ldaps://")) {
            return Err(format!(
                "directory url {:?} must start with ldap:// or ldaps://",
                doc.url
            ));
        }
        if doc.starttls && doc.url.starts_with("ldaps://") {
            return Err("starttls applies to ldap:// URLs; ldaps:// is already TLS".into());
        }
        let password = match (&doc.password_file, &doc.password_env) {
            (Some(f), None) => {
                let f = if f.is_absolute() {
                    f.clone()
                } else {
                    dir.join(f)
                };
                std::fs::read_to_string(&f)
                    .map_err(|e| {
                        format!(
                            "cannot read the directory password file {}: {e}",
                            f.display()
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            }
            (None, Some(v)) => std::env::var(v)
                .map_err(|_| format!("the directory password variable {v} is not set"))?,
            _ => return Err("give exactly one of password_file and password_env".into()),
        };
        for (kind, action) in &doc.drift {
            let able = |can: fn(DriftKind) -> bool| {
                DriftKind::ALL
                    .iter()
                    .filter(|k| can(**k))
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match action {
                DriftAction::Remediate if !kind.can_remediate() => {
                    return Err(format!(
                        "drift.{kind} can only be reported; remediable kinds are {}",
                        able(DriftKind::can_remediate)
                    ));
                }
                DriftAction::Import if !kind.can_import() => {
                    return Err(format!(
                        "drift.{kind}: only {} can be imported",
                        able(DriftKind::can_import)
                    ));
                }
                _ => {}
            }
        }
        doc.accounts.validate()?;
        if !(1..=100_000).contains(&doc.page_size) || !(1..=256).contains(&doc.workers) {
            return Err("page_size must be 1..=100000 and workers 1..=256".into());
        }
        Ok(DirectoryConfig {
            connection: Connection {
                url: doc.url,
                starttls: doc.starttls,
                bind_dn: doc.bind_dn,
                password,
                timeout: Duration::from_secs(doc.timeout_seconds.max(1)),
                op_timeout: Duration::from_secs(doc.operation_timeout_seconds.max(1)),
                keepalive: Duration::from_secs(doc.keepalive_seconds.max(1)),
            },
            accounts_base: doc.accounts_base,
            groups_base: doc.groups_base,
            schema: doc.preset.schema(),
            preset: doc.preset,
            page_size: doc.page_size,
            workers: doc.workers,
            drift: doc.drift,
            accounts: doc.accounts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
url = "ldap://127.0.0.1:389"
bind_dn = "cn=admin,dc=example,dc=com"
password_file = "pw"
accounts_base = "ou=people,dc=example,dc=com"
groups_base = "ou=groups,dc=example,dc=com"
preset = "active-directory"
"#;

    #[test]
    fn password_from_a_file_and_never_in_debug_output() -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("idgov-dircfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("pw"), "s3cret\n").map_err(|e| e.to_string())?;
        let c = DirectoryConfig::parse(DOC, &dir)?;
        assert_eq!(c.connection.password, "s3cret");
        assert_eq!(c.schema.correlation_attr, "employeeID");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!format!("{:?}", c.connection).contains("s3cret"));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn mistakes_are_named() {
        let dir = Path::new("/nonexistent");
        assert!(DirectoryConfig::parse(&DOC.replace("ldap://", "http://"), dir).is_err());
        assert!(DirectoryConfig::parse(&format!("{DOC}\npassword_env = \"X\"\n"), dir).is_err());
        let e = DirectoryConfig::parse(&format!("{DOC}\ncolour = 1\n"), dir)
            .err()
            .unwrap_or_default();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn drift_actions_are_checked_against_what_each_kind_allows() {
        let dir = Path::new("/nonexistent");
        let with = |drift: &str| {
            DirectoryConfig::parse(
                &format!(
                    "{}\n[drift]\n{drift}\n",
                    DOC.replace("password_file = \"pw\"", "password_env = \"HOME\"")
                ),
                dir,
            )
        };
        let ok = with("enabled_leaver = \"remediate\"\nunmanaged_membership = \"import\"")
            .map(|c| c.drift);
        assert_eq!(
            ok,
            Ok(BTreeMap::from([
                (DriftKind::EnabledLeaver, DriftAction::Remediate),
                (DriftKind::UnmanagedMembership, DriftAction::Import),
            ]))
        );
        let err = |d: &str| with(d).err().unwrap_or_default();
        assert!(err("orphan_account = \"remediate\"").contains("can only be reported"));
        assert!(err("missing_membership = \"import\"").contains("only unmanaged_membership"));
        let unknown = err("stale_group = \"report\"");
        assert!(unknown.contains("stale_group"), "{unknown}");
    }
}
