//! Web sessions and sign-ins under way (issue 12). Only hashes of the
//! browser's secrets are stored.

use crate::convert::{get, micros, opt_time, time};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    /// SHA-256 (hex) of the session id the cookie holds.
    pub id_hash: String,
    pub subject: String,
    pub employee_id: String,
    /// Role names, as `idgov_authz::Role` spells them.
    pub roles: Vec<String>,
    /// How the person signed in: `oidc` or `dev`.
    pub method: String,
    /// The per-session token every form carries.
    pub csrf_token: String,
    /// The provider's ID token ('' without one), for RP-initiated logout.
    pub id_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A sign-in under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLogin {
    pub id_hash: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub created_at: DateTime<Utc>,
}

const SESSION_COLUMNS: &str = "id_hash, subject, employee_id, roles, method, csrf_token, id_token, \
     created_at, last_seen_at, expires_at, ended_at";

fn session_from_row(r: &AnyRow) -> Result<WebSession, StoreError> {
    let roles: String = get(r, "roles")?;
    Ok(WebSession {
        id_hash: get(r, "id_hash")?,
        subject: get(r, "subject")?,
        employee_id: get(r, "employee_id")?,
        roles: roles
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        method: get(r, "method")?,
        csrf_token: get(r, "csrf_token")?,
        id_token: get(r, "id_token")?,
        created_at: time(get(r, "created_at")?)?,
        last_seen_at: time(get(r, "last_seen_at")?)?,
        expires_at: time(get(r, "expires_at")?)?,
        ended_at: opt_time(get(r, "ended_at")?)?,
    })
}

impl Store {
    /// A session by the hash of its id (ended ones too).
    pub async fn get_web_session(&self, id_hash: &str) -> Result<Option<WebSession>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM web_sessions WHERE id_hash = $1"
        )))
        .bind(id_hash)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Records activity on a live session (the idle timeout counts from it).
    pub async fn touch_web_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE web_sessions SET last_seen_at = $1 WHERE id_hash = $2 AND ended_at IS NULL",
        )
        .bind(micros(now))
        .bind(id_hash)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Records a sign-in under way.
    pub async fn insert_web_login(&self, l: &WebLogin) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO web_logins (id_hash, state, nonce, pkce_verifier, return_to, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&l.id_hash)
        .bind(&l.state)
        .bind(&l.nonce)
        .bind(&l.pkce_verifier)
        .bind(&l.return_to)
        .bind(micros(l.created_at))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Takes a sign-in under way (it can be used once), and forgets
    /// sign-ins older than `stale_before`.
    pub async fn take_web_login(
        &self,
        id_hash: &str,
        stale_before: DateTime<Utc>,
    ) -> Result<Option<WebLogin>, StoreError> {
        sqlx::query("DELETE FROM web_logins WHERE created_at < $1")
            .bind(micros(stale_before))
            .execute(self.writer())
            .await?;
        let row = sqlx::query(
            "DELETE FROM web_logins WHERE id_hash = $1 \
             RETURNING id_hash, state, nonce, pkce_verifier, return_to, created_at",
        )
        .bind(id_hash)
        .fetch_optional(self.writer())
        .await?;
        row.map(|r| {
            Ok(WebLogin {
                id_hash: get(&r, "id_hash")?,
                state: get(&r, "state")?,
                nonce: get(&r, "nonce")?,
                pkce_verifier: get(&r, "pkce_verifier")?,
                return_to: get(&r, "return_to")?,
                created_at: time(get(&r, "created_at")?)?,
            })
        })
        .transpose()
    }
}

impl WriteTx {
    pub async fn insert_web_session(&mut self, s: &WebSession) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO web_sessions ({SESSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(&s.id_hash)
        .bind(&s.subject)
        .bind(&s.employee_id)
        .bind(s.roles.join(","))
        .bind(&s.method)
        .bind(&s.csrf_token)
        .bind(&s.id_token)
        .bind(micros(s.created_at))
        .bind(micros(s.last_seen_at))
        .bind(micros(s.expires_at))
        .bind(s.ended_at.map(micros))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Ends a live session; false when it was not live.
    pub async fn end_web_session(
        &mut self,
        id_hash: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE web_sessions SET ended_at = $1, end_reason = $2 \
             WHERE id_hash = $3 AND ended_at IS NULL",
        )
        .bind(micros(now))
        .bind(reason)
        .bind(id_hash)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Ends every live session of a person (a leaver); returns how many.
    pub async fn end_web_sessions_of(
        &mut self,
        employee_ids: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<u64, StoreError> {
        if employee_ids.is_empty() {
            return Ok(0);
        }
        let params: Vec<String> = (0..employee_ids.len())
            .map(|i| format!("${}", i + 3))
            .collect();
        let sql = format!(
            "UPDATE web_sessions SET ended_at = $1, end_reason = $2 \
             WHERE ended_at IS NULL AND employee_id IN ({})",
            params.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(micros(now))
            .bind(reason);
        for e in employee_ids {
            q = q.bind(e);
        }
        Ok(q.execute(&mut *self.tx).await?.rows_affected())
    }
}
