//! Authentication: who is calling. Authorization (what they may do) is
//! decided by `idgov-authz`; [`layer`] runs both for every call.
//!
//! Until an OIDC issuer is configured, the service runs in development mode:
//! it accepts only tokens minted by `idgov dev token` with a key kept in the
//! data directory, and it listens on loopback only.

pub mod config;
pub use idgov_app::denials;
pub mod dev;
pub mod layer;
pub mod oidc;

use crate::error::AppError;
use config::UserKey;
use idgov_authz::{Caller, Role};
use idgov_store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Verifies bearer tokens and names the caller.
#[derive(Debug)]
pub enum Authenticator {
    /// Development mode: locally minted tokens.
    Dev(dev::DevAuth),
    /// Tokens of the organisation's OIDC provider.
    Oidc(Arc<oidc::OidcAuth>),
}

impl Authenticator {
    /// Authenticates a call from its bearer token.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        store: &Store,
    ) -> Result<Caller, AppError> {
        let token = bearer(headers)?;
        match self {
            Authenticator::Dev(d) => d.verify(token).map_err(AppError::Unauthenticated),
            Authenticator::Oidc(o) => {
                let v = o.verify(token).await.map_err(AppError::Unauthenticated)?;
                let employee_id = match (&v.user, o.user_key()) {
                    (None, _) => None,
                    (Some(id), UserKey::EmployeeId) => Some(id.clone()),
                    (Some(email), UserKey::Email) => store.identity_id_by_email(email).await?,
                };
                Ok(oidc::caller(v, employee_id))
            }
        }
    }

    /// A short name of the mode, for the start-up banner.
    pub fn mode(&self) -> &'static str {
        match self {
            Authenticator::Dev(_) => "development (locally minted tokens)",
            Authenticator::Oidc(_) => "OIDC bearer tokens",
        }
    }
}

/// Roles of machine clients by the CN or DNS SAN of their (verified)
/// client certificate.
#[derive(Debug, Clone, Default)]
pub struct CertRoles(pub BTreeMap<String, Vec<Role>>);

impl CertRoles {
    /// The caller a client certificate names, if it is mapped.
    pub fn caller(&self, cert_der: &[u8]) -> Result<Caller, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| format!("bad client certificate: {e}"))?;
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(String::from))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_string());
                }
            }
        }
        let name = names
            .iter()
            .find(|n| self.0.contains_key(n.as_str()))
            .ok_or_else(|| {
                format!(
                    "client certificate {} is not mapped to a role",
                    idgov_domain::error::echo(&names.join(", "))
                )
            })?;
        Ok(Caller {
            subject: name.clone(),
            employee_id: None,
            roles: self
                .0
                .get(name)
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default(),
            method: "mtls".into(),
        })
    }
}

/// The longest bearer token read at all: real access tokens are a few
/// kilobytes; anything longer is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The longest subject (`sub`, client id, certificate name) a caller may
/// have: it is written into the audit log as the actor.
const MAX_SUBJECT: usize = 256;

/// Refuses a caller that cannot be named in the audit log: an empty or
/// blank subject, one with control characters or longer than 256
/// characters, or an employee id that is not one.
pub fn nameable(c: &Caller) -> Result<(), String> {
    let s = c.subject.as_str();
    if s.trim().is_empty() {
        return Err("the credentials name nobody (empty subject); idgov refuses a caller it cannot name in the audit log".into());
    }
    if s.chars().count() > MAX_SUBJECT || s.chars().any(char::is_control) || s.trim() != s {
        return Err(format!(
            "the credentials' subject {} is not a name idgov can write to the audit log",
            idgov_domain::error::echo(s)
        ));
    }
    if let Some(e) = &c.employee_id
        && idgov_domain::identity::validate_employee_id(e).is_err()
    {
        return Err(format!(
            "the credentials name {} as the employee, which is not an employee id",
            idgov_domain::error::echo(e)
        ));
    }
    Ok(())
}

/// JOSE header checks before a token is verified: no `crit` extension
/// idgov does not understand (RFC 7515 §4.1.11: it understands none).
pub fn check_jose_header(token: &str) -> Result<(), String> {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| "not a JWT (the header is not base64url)".to_string())?;
    let header: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| "not a JWT (the header is not JSON)".to_string())?;
    if let Some(crit) = header.get("crit") {
        let names: Vec<String> = crit
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| idgov_domain::error::echo(v.as_str().unwrap_or("?")))
                    .take(5)
                    .collect()
            })
            .unwrap_or_default();
        return Err(format!(
            "the token marks header parameter(s) {} as critical; idgov understands no such extension",
            if names.is_empty() {
                "(malformed crit)".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    Ok(())
}

/// The bearer token of the `authorization` header.
fn bearer(headers: &http::HeaderMap) -> Result<&str, AppError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| {
            AppError::Unauthenticated("no credentials: send `authorization: Bearer <token>`".into())
        })?
        .to_str()
        .map_err(|_| AppError::Unauthenticated("the authorization header is not text".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        AppError::Unauthenticated("the authorization header is not `Bearer <token>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AppError::Unauthenticated(
            "the authorization header is not `Bearer <token>`".into(),
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AppError::Unauthenticated(format!(
            "the bearer token is {} bytes long; at most {MAX_TOKEN_BYTES} are accepted",
            token.len()
        )));
    }
    check_jose_header(token.trim()).map_err(AppError::Unauthenticated)?;
    Ok(token.trim())
}
