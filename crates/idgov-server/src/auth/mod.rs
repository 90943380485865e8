//! Authentication: who is calling. Authorization (what they may do) is
//! decided by `idgov-authz`; [`layer`] runs both for every call.
//!
//! Until an OIDC issuer is configured, the service runs in development mode:
//! it accepts only tokens minted by `idgov dev token` with a key kept in the
//! data directory, and it listens on loopback only.

pub mod config;
pub mod denials;
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
            .ok_or_else(|| format!("client certificate {names:?} is not mapped to a role"))?;
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
    Ok(token.trim())
}
