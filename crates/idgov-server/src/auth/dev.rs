//! Development-mode tokens: HS256 JWTs signed with a random key kept in the
//! data directory (mode 0600). Whoever can read the data directory can mint
//! tokens, which is why development mode listens on loopback only.

use chrono::{Duration, Utc};
use idgov_authz::{Caller, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Issuer and audience of development tokens.
pub const DEV_ISSUER: &str = "idgov-dev";
/// The key file in the data directory.
pub const KEY_FILE: &str = "dev-signing-key";

#[derive(Debug, Serialize, Deserialize)]
struct DevClaims {
    iss: String,
    aud: String,
    sub: String,
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    employee_id: Option<String>,
    iat: i64,
    exp: i64,
}

/// Verifies (and mints) development tokens.
pub struct DevAuth {
    key: Vec<u8>,
}

impl std::fmt::Debug for DevAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevAuth { key: <redacted> }")
    }
}

/// The key file path in `data_dir`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

impl DevAuth {
    /// Loads the key of an existing data directory; never makes one (a
    /// token signed with a key the server does not have is useless).
    pub fn load(data_dir: &Path) -> Result<DevAuth, String> {
        if !key_path(data_dir).exists() {
            return Err(format!(
                "there is no development signing key in {dir} (no {KEY_FILE} there): \
                 tokens must be signed with the key of the data directory `idgov serve` uses. \
                 Run this where the server runs, or pass --data-dir (or IDGOV_DATA_DIR) naming \
                 its data directory, and start the server first if it never ran",
                dir = data_dir.display()
            ));
        }
        DevAuth::load_or_create(data_dir)
    }

    /// Loads the key from `data_dir`, creating it (0600) if missing.
    pub fn load_or_create(data_dir: &Path) -> Result<DevAuth, String> {
        Ok(DevAuth {
            key: idgov_app::keyfile::load_or_create(&key_path(data_dir), 32)?,
        })
    }

    /// Mints a token for `roles`, optionally as the person `employee_id`.
    pub fn mint(
        &self,
        subject: &str,
        employee_id: Option<&str>,
        roles: &[Role],
        ttl: Duration,
    ) -> Result<String, String> {
        let now = Utc::now();
        let claims = DevClaims {
            iss: DEV_ISSUER.into(),
            aud: DEV_ISSUER.into(),
            sub: subject.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            employee_id: employee_id.map(String::from),
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.key),
        )
        .map_err(|e| format!("cannot sign the token: {e}"))
    }

    /// Verifies a token and names its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[DEV_ISSUER]);
        v.set_audience(&[DEV_ISSUER]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 30;
        let data =
            jsonwebtoken::decode::<DevClaims>(token, &DecodingKey::from_secret(&self.key), &v)
                .map_err(|e| {
                    format!("invalid token ({e}); mint a new one with `idgov dev token`")
                })?;
        let c = data.claims;
        let roles = c
            .roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid token: {e}"))?;
        Ok(Caller {
            subject: c.sub,
            employee_id: c.employee_id,
            roles,
            method: "dev".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_forgeries_do_not() -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("idgov-dev-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let auth = DevAuth::load_or_create(&dir)?;
        let token = auth.mint("alice", Some("E1"), &[Role::Auditor], Duration::hours(1))?;
        let caller = auth.verify(&token)?;
        assert_eq!(caller.employee_id.as_deref(), Some("E1"));
        assert!(caller.roles.contains(&Role::Auditor));

        let other = DevAuth { key: vec![7; 32] };
        let forged = other.mint("mallory", None, &[Role::ItAdmin], Duration::hours(1))?;
        assert!(
            auth.verify(&forged).is_err(),
            "a token of another key is refused"
        );
        let expired = auth.mint("alice", None, &[Role::Auditor], Duration::hours(-2))?;
        assert!(
            auth.verify(&expired).is_err(),
            "an expired token is refused"
        );
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        // Grant oneself a role by re-encoding the claims, signature kept.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = base64::Engine::decode(&b64, &parts[1]).map_err(|e| e.to_string())?;
        let claims =
            String::from_utf8_lossy(&claims).replace("\"auditor\"", "\"auditor\",\"it-admin\"");
        assert!(claims.contains("it-admin"));
        parts[1] = base64::Engine::encode(&b64, claims);
        assert!(
            auth.verify(&parts.join(".")).is_err(),
            "an altered payload is refused"
        );
        // The same directory gives the same key.
        let again = DevAuth::load_or_create(&dir)?;
        assert!(again.verify(&token).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
