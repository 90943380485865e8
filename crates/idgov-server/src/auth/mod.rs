//! Authentication: who is calling. Authorization (what they may do) is
//! decided by `idgov-authz`; [`layer`] runs both for every call.
//!
//! Until an OIDC issuer is configured, the service runs in development mode:
//! it accepts only tokens minted by `idgov dev token` with a key kept in the
//! data directory, and it listens on loopback only.

pub mod dev;
pub mod layer;

use crate::error::AppError;
use idgov_authz::Caller;

/// Verifies credentials and names the caller.
#[derive(Debug)]
pub enum Authenticator {
    /// Development mode: locally minted tokens.
    Dev(dev::DevAuth),
}

impl Authenticator {
    /// Authenticates a call from its headers.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, AppError> {
        let token = bearer(headers)?;
        match self {
            Authenticator::Dev(d) => d.verify(token).map_err(AppError::Unauthenticated),
        }
    }

    /// A short name of the mode, for the start-up banner.
    pub fn mode(&self) -> &'static str {
        match self {
            Authenticator::Dev(_) => "development (locally minted tokens)",
        }
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
