//! The authentication configuration file (`idgov serve --auth FILE`).
//!
//! ```toml
//! [oidc]
//! issuer = "https://login.example.com"   # discovery: ISSUER/.well-known/openid-configuration
//! audience = "idgov"
//! user_claim = "sub"               # the claim naming the person
//! user_claim_is = "employee_id"    # employee_id | email
//! roles_claim = "groups"
//! leeway_seconds = 30              # clock skew allowed on exp/nbf; at most 60
//! [oidc.roles]                     # roles_claim value → idgov role
//! "idgov-admins" = "it-admin"
//! "security-team" = "security-officer"
//! [oidc.clients]                   # client_credentials clients → roles
//! "workday-feed" = ["hr-feed"]
//!
//! [web]                            # the web app's sign-in (OIDC code + PKCE)
//! client_id = "idgov-web"
//! client_secret_file = "web-client-secret"
//! redirect_url = "https://idgov.example.com/auth/callback"
//!
//! [tls]                            # TLS on the listener
//! cert_file = "server.pem"
//! key_file = "server.key"
//! client_ca_file = "clients-ca.pem"   # optional: mutual TLS for machine clients
//! [tls.client_roles]               # client certificate CN or DNS SAN → roles
//! "hr-feed.internal" = ["hr-feed"]
//! ```

use idgov_authz::Role;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the user claim holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKey {
    EmployeeId,
    Email,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_user_key")]
    pub user_claim_is: UserKey,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Least time between two JWKS refreshes caused by unknown key ids.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_seconds: u64,
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    #[serde(default)]
    pub clients: BTreeMap<String, Vec<Role>>,
}

fn default_user_claim() -> String {
    "sub".into()
}
fn default_user_key() -> UserKey {
    UserKey::EmployeeId
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_leeway() -> u64 {
    30
}
fn default_refresh() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_roles: BTreeMap<String, Vec<Role>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub oidc: Option<OidcConfig>,
    pub tls: Option<TlsConfig>,
    /// The web app's sign-in (needs `[oidc]`).
    pub web: Option<idgov_web::WebConfig>,
}

impl AuthConfig {
    /// Reads and checks the file; relative paths are read from its folder.
    pub fn load(path: &Path) -> Result<AuthConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut c: AuthConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(o) = &c.oidc {
            if o.leeway_seconds > 60 {
                return Err("oidc.leeway_seconds must be at most 60".into());
            }
            if !(o.issuer.starts_with("https://")
                || o.issuer.starts_with("http://127.0.0.1")
                || o.issuer.starts_with("http://localhost"))
            {
                return Err(format!(
                    "oidc.issuer {:?} must be https:// (http only on loopback)",
                    o.issuer
                ));
            }
            if o.audience.is_empty() {
                return Err("oidc.audience is required".into());
            }
        }
        if let Some(w) = &mut c.web {
            if c.oidc.is_none() {
                return Err("[web] needs [oidc]: people sign in to the web app through the organisation's provider".into());
            }
            w.check(dir)?;
        }
        if let Some(t) = &mut c.tls {
            for p in [&mut t.cert_file, &mut t.key_file] {
                if p.is_relative() {
                    *p = dir.join(&p);
                }
            }
            if let Some(ca) = &mut t.client_ca_file
                && ca.is_relative()
            {
                *ca = dir.join(&ca);
            }
            if !t.client_roles.is_empty() && t.client_ca_file.is_none() {
                return Err("tls.client_roles needs tls.client_ca_file (client certificates are verified against it)".into());
            }
        }
        Ok(c)
    }
}
