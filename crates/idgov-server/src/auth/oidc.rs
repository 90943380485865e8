//! OIDC bearer tokens: discovery with `openidconnect`, the provider's JWKS
//! cached by key id and refetched when an unknown key id shows up (at most
//! once per `jwks_refresh_seconds`, so rotation needs no restart and a flood
//! of made-up key ids cannot hammer the provider), and validation with
//! `jsonwebtoken`: asymmetric algorithms only (RS256, ES256, EdDSA: never
//! `none`, never HMAC), issuer, audience, `exp`/`nbf` with bounded leeway.

use super::config::{OidcConfig, UserKey};
use idgov_authz::Caller;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use openidconnect::core::CoreProviderMetadata;
use openidconnect::{IssuerUrl, reqwest};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// The algorithms idgov accepts.
pub const ALLOWED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// What a verified token says about its caller, before identities are
/// looked up.
pub type Verified = idgov_authz::Claimed;

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    jwks_uri: Option<String>,
}

/// Verifies OIDC access tokens.
pub struct OidcAuth {
    cfg: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    last_refresh: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcAuth")
            .field("issuer", &self.cfg.issuer)
            .finish()
    }
}

fn key_of(jwk: &Jwk) -> Option<(DecodingKey, Algorithm)> {
    let alg = match jwk.common.key_algorithm? {
        jsonwebtoken::jwk::KeyAlgorithm::RS256 => Algorithm::RS256,
        jsonwebtoken::jwk::KeyAlgorithm::ES256 => Algorithm::ES256,
        jsonwebtoken::jwk::KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    DecodingKey::from_jwk(jwk).ok().map(|k| (k, alg))
}

impl OidcAuth {
    pub fn new(cfg: OidcConfig) -> Result<OidcAuth, String> {
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(OidcAuth {
            cfg,
            http,
            keys: RwLock::new(Keys {
                by_kid: HashMap::new(),
                jwks_uri: None,
            }),
            last_refresh: Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// Discovers the provider (if not yet) and fetches its keys.
    pub async fn refresh(&self) -> Result<usize, String> {
        let uri = match self.keys.read().await.jwks_uri.clone() {
            Some(u) => u,
            None => {
                let issuer = IssuerUrl::new(self.cfg.issuer.clone())
                    .map_err(|e| format!("issuer URL: {e}"))?;
                let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| format!("OIDC discovery at {} failed: {e}", self.cfg.issuer))?;
                meta.jwks_uri().url().to_string()
            }
        };
        let body = self
            .http
            .get(&uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot fetch the JWKS at {uri}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("cannot read the JWKS at {uri}: {e}"))?;
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| format!("the JWKS at {uri} is not valid: {e}"))?;
        let by_kid: HashMap<String, (DecodingKey, Algorithm)> = set
            .keys
            .iter()
            .filter_map(|k| Some((k.common.key_id.clone()?, key_of(k)?)))
            .collect();
        let n = by_kid.len();
        *self.keys.write().await = Keys {
            by_kid,
            jwks_uri: Some(uri),
        };
        tracing::info!(issuer = %self.cfg.issuer, keys = n, "fetched the provider's signing keys");
        Ok(n)
    }

    /// The key for `kid`, refreshing the JWKS once if it is unknown (unless
    /// a refresh happened too recently).
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), String> {
        if let Some(k) = self.keys.read().await.by_kid.get(kid) {
            return Ok(k.clone());
        }
        {
            let mut last = self.last_refresh.lock().await;
            let allowed = last
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.cfg.jwks_refresh_seconds));
            if allowed {
                *last = Some(Instant::now());
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "cannot refresh the provider's signing keys");
                }
            }
        }
        self.keys
            .read()
            .await
            .by_kid
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("unknown signing key {}", idgov_domain::error::echo(kid)))
    }

    /// Verifies a token and reads who it names.
    pub async fn verify(&self, token: &str) -> Result<Verified, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT ({e})"))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(format!(
                "algorithm {:?} is not accepted; only RS256, ES256 and EdDSA",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("the token names no signing key (kid)")?;
        let (key, key_alg) = self.key(&kid).await?;
        if key_alg != header.alg {
            return Err(format!(
                "key {} is for {key_alg:?}, not {:?}",
                idgov_domain::error::echo(&kid),
                header.alg
            ));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = self.cfg.leeway_seconds.min(60);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
                .map_err(|e| format!("invalid token: {e}"))?;
        idgov_authz::read_claims(&self.rules(), &data.claims)
    }

    /// How this provider's claims name callers and give roles.
    pub fn rules(&self) -> idgov_authz::ClaimRules {
        idgov_authz::ClaimRules {
            user_claim: self.cfg.user_claim.clone(),
            roles_claim: self.cfg.roles_claim.clone(),
            roles: self.cfg.roles.clone(),
            clients: self.cfg.clients.clone(),
        }
    }

    /// What the user claim holds.
    pub fn user_key(&self) -> UserKey {
        self.cfg.user_claim_is
    }
}

/// A caller from a verified token; `employee_id` as resolved by the caller.
pub fn caller(v: Verified, employee_id: Option<String>) -> Caller {
    Caller {
        subject: v.subject,
        employee_id,
        roles: v.roles,
        method: "oidc".into(),
    }
}
