//! Web sessions: a person signed in through the browser. The web adapter
//! keeps only the session id in a cookie; everything else is here, in the
//! database, so replicas share sessions and a leaver is signed out
//! everywhere at once (every request checks the person is still active).

use crate::{App, AppError};
use chrono::{DateTime, Duration, Utc};
use idgov_authz::{Caller, Role};
use idgov_domain::audit::{Action, AuditEntry, Target};
use idgov_domain::identity::Status;
use idgov_store::{WebLogin, WebSession};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long a sign-in started at the provider may take.
pub const LOGIN_TTL_MINUTES: i64 = 10;

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Ended after this long without a request.
    pub idle: Duration,
    /// Ended this long after sign-in, whatever happens.
    pub absolute: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle: Duration::minutes(30),
            absolute: Duration::hours(12),
        }
    }
}

/// A new random secret: 32 bytes, URL-safe text.
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// What is stored for a secret the browser holds.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The caller a session speaks for.
pub fn session_caller(s: &WebSession) -> Caller {
    Caller {
        subject: s.subject.clone(),
        employee_id: Some(s.employee_id.clone()),
        roles: s
            .roles
            .iter()
            .filter_map(|r| r.parse::<Role>().ok())
            .collect(),
        method: format!("web-{}", s.method),
    }
}

/// Why a session cookie does not sign anybody in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    Unknown,
    Ended,
    Idle,
    Expired,
    Left,
}

impl App {
    /// Signs a person in: a new session (never one the browser brought
    /// along), audited. Refused for people idgov does not know as active.
    pub async fn sign_in(
        &self,
        caller: &Caller,
        method: &str,
        id_token: &str,
        limits: SessionLimits,
    ) -> Result<(String, WebSession), AppError> {
        let Some(emp) = caller.employee_id.clone() else {
            return Err(AppError::PermissionDenied(
                "the provider's answer names no person idgov knows; sign in with a personal account"
                    .into(),
            ));
        };
        match self.store.get_identity(&emp).await? {
            Some(p) if p.status == Status::Active => {}
            Some(p) => {
                return Err(AppError::PermissionDenied(format!(
                    "{emp} is {}; only active people sign in",
                    p.status
                )));
            }
            None => {
                return Err(AppError::PermissionDenied(format!(
                    "{emp} is not a person idgov knows; ask HR or an administrator"
                )));
            }
        }
        let now = self.now();
        let id = new_secret();
        let s = WebSession {
            id_hash: secret_hash(&id),
            subject: caller.subject.clone(),
            employee_id: emp.clone(),
            roles: caller
                .roles
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            method: method.to_string(),
            csrf_token: new_secret(),
            id_token: id_token.to_string(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + limits.absolute,
            ended_at: None,
        };
        let mut tx = self.store.begin().await?;
        tx.insert_web_session(&s).await?;
        tx.audit(AuditEntry::new(
            &caller.actor(),
            Action::WebSignedIn,
            Target::identity(&emp),
            json!({"method": method, "session": &s.id_hash[..16],
                   "roles": &s.roles, "expires_at": s.expires_at.to_rfc3339()}),
        ));
        tx.commit(now).await?;
        tracing::info!(employee_id = %emp, method, "signed in on the web");
        Ok((id, s))
    }

    /// The live session a cookie names, with its caller. A session past
    /// its idle or absolute limit, or of a person who has left, is ended
    /// here (audited) and signs nobody in.
    pub async fn web_session(
        &self,
        id: &str,
        limits: SessionLimits,
    ) -> Result<Result<(Caller, WebSession), NoSession>, AppError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Err(NoSession::Unknown));
        }
        let hash = secret_hash(id);
        let Some(s) = self.store.get_web_session(&hash).await? else {
            return Ok(Err(NoSession::Unknown));
        };
        if s.ended_at.is_some() {
            return Ok(Err(NoSession::Ended));
        }
        let now = self.now();
        let why = if now >= s.expires_at {
            Some(NoSession::Expired)
        } else if now - s.last_seen_at > limits.idle {
            Some(NoSession::Idle)
        } else {
            match self.store.get_identity(&s.employee_id).await? {
                Some(p) if p.status == Status::Active => None,
                _ => Some(NoSession::Left),
            }
        };
        if let Some(why) = why {
            let reason = match why {
                NoSession::Expired => "absolute timeout",
                NoSession::Idle => "idle timeout",
                _ => "the person is no longer active",
            };
            self.end_session(&s, "system:web", reason, Action::WebSessionEnded)
                .await?;
            return Ok(Err(why));
        }
        // Activity is recorded at most twice a minute: enough for the idle
        // limit, and no write per page view.
        if now - s.last_seen_at > Duration::seconds(30) {
            self.store.touch_web_session(&hash, now).await?;
        }
        Ok(Ok((session_caller(&s), s)))
    }

    /// Signs out: ends the session (audited).
    pub async fn sign_out(&self, s: &WebSession) -> Result<(), AppError> {
        let actor = format!("user:{}", s.employee_id);
        self.end_session(s, &actor, "signed out", Action::WebSignedOut)
            .await
    }

    async fn end_session(
        &self,
        s: &WebSession,
        actor: &str,
        reason: &str,
        action: Action,
    ) -> Result<(), AppError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if tx.end_web_session(&s.id_hash, now, reason).await? {
            tx.audit(AuditEntry::new(
                actor,
                action,
                Target::identity(&s.employee_id),
                json!({"session": &s.id_hash[..16], "reason": reason}),
            ));
            tx.commit(now).await?;
        } else {
            tx.rollback().await?;
        }
        Ok(())
    }

    /// The employee id of the identity with this email, if exactly one.
    pub async fn employee_by_email(&self, email: &str) -> Result<Option<String>, AppError> {
        Ok(self.store.identity_id_by_email(email).await?)
    }

    /// Remembers a sign-in under way; returns the secret for the browser's
    /// cookie that binds it.
    pub async fn begin_web_login(
        &self,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        return_to: &str,
    ) -> Result<String, AppError> {
        let secret = new_secret();
        self.store
            .insert_web_login(&WebLogin {
                id_hash: secret_hash(&secret),
                state: state.to_string(),
                nonce: nonce.to_string(),
                pkce_verifier: pkce_verifier.to_string(),
                return_to: return_to.to_string(),
                created_at: self.now(),
            })
            .await?;
        Ok(secret)
    }

    /// Takes the sign-in under way the browser's cookie names (once).
    pub async fn take_web_login(&self, secret: &str) -> Result<Option<WebLogin>, AppError> {
        let now: DateTime<Utc> = self.now();
        let l = self
            .store
            .take_web_login(
                &secret_hash(secret),
                now - Duration::minutes(LOGIN_TTL_MINUTES),
            )
            .await?;
        Ok(l.filter(|l| now - l.created_at <= Duration::minutes(LOGIN_TTL_MINUTES)))
    }
}
