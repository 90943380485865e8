//! Webhook subscriptions, their cursors over the audit log, and delivery
//! attempts (issue 13).

use crate::audit::record_from_row;
use crate::convert::{get, micros, time};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use idgov_domain::audit::AuditRecord;
use sqlx::AssertSqlSafe;

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Event patterns, as configured (see `idgov_domain::audit::pattern_matches`).
    pub events: Vec<String>,
    /// The last audit event delivered (or skipped as not matching).
    pub cursor: i64,
    /// `active` or `disabled`.
    pub state: String,
    pub state_reason: Option<String>,
    pub failures: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// `file` (the webhooks file) or `api` (created through the API).
    pub origin: String,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub subscription_id: String,
    pub seq: i64,
    pub attempt: i64,
    pub at: DateTime<Utc>,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub millis: i64,
}

const SUB_COLUMNS: &str =
    "id, url, events, cursor, state, state_reason, failures, next_attempt_at, created_at, origin";

fn sub_from_row(r: &sqlx::any::AnyRow) -> Result<Subscription, StoreError> {
    let events: String = get(r, "events")?;
    Ok(Subscription {
        id: get(r, "id")?,
        url: get(r, "url")?,
        events: events
            .split(' ')
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect(),
        cursor: get(r, "cursor")?,
        state: get(r, "state")?,
        state_reason: get(r, "state_reason")?,
        failures: get(r, "failures")?,
        next_attempt_at: time(get(r, "next_attempt_at")?)?,
        created_at: time(get(r, "created_at")?)?,
        origin: get(r, "origin")?,
    })
}

impl Store {
    /// Creates a subscription starting after event `from_seq`, or updates
    /// its URL and events (its cursor and state stay).
    pub async fn upsert_subscription(
        &self,
        id: &str,
        url: &str,
        events: &[String],
        from_seq: i64,
        now: DateTime<Utc>,
    ) -> Result<Subscription, StoreError> {
        let events = events.join(" ");
        if let Some(s) = self.get_subscription(id).await?
            && s.origin != "file"
        {
            return Err(StoreError::Conflict(format!(
                "the webhooks file names subscription {id}, which was created through the API; \
                 rename one of them"
            )));
        }
        let n = sqlx::query("UPDATE webhook_subscriptions SET url = $1, events = $2 WHERE id = $3")
            .bind(url)
            .bind(&events)
            .bind(id)
            .execute(self.writer())
            .await?
            .rows_affected();
        if n == 0 {
            sqlx::query(
                "INSERT INTO webhook_subscriptions (id, url, events, cursor, state, created_at) \
                 VALUES ($1, $2, $3, $4, 'active', $5)",
            )
            .bind(id)
            .bind(url)
            .bind(&events)
            .bind(from_seq)
            .bind(micros(now))
            .execute(self.writer())
            .await?;
        }
        self.get_subscription(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("subscription {id} vanished")))
    }

    pub async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUB_COLUMNS} FROM webhook_subscriptions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(sub_from_row).transpose()
    }

    /// The subscriptions created through the API, each with its secrets
    /// (base64, newest first).
    pub async fn api_subscriptions(&self) -> Result<Vec<(Subscription, Vec<String>)>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUB_COLUMNS}, secrets FROM webhook_subscriptions WHERE origin = 'api' \
             ORDER BY id LIMIT 1000"
        )))
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                let secrets: String = get(r, "secrets")?;
                Ok((
                    sub_from_row(r)?,
                    secrets
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                ))
            })
            .collect()
    }

    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUB_COLUMNS} FROM webhook_subscriptions ORDER BY id LIMIT 1000"
        )))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(sub_from_row).collect()
    }

    /// Takes the subscription's lease until `until` when it is active, due
    /// and free; false otherwise (another replica delivers it).
    pub async fn claim_subscription(
        &self,
        id: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_subscriptions SET claimed_until = $1 WHERE id = $2 AND state = 'active' \
             AND next_attempt_at <= $3 AND claimed_until <= $4",
        )
        .bind(micros(until))
        .bind(id)
        .bind(micros(now))
        .bind(micros(now))
        .execute(self.writer())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Gives the lease back.
    pub async fn release_subscription(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_subscriptions SET claimed_until = 0 WHERE id = $1")
            .bind(id)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// The first audit event after `after` whose action matches one of the
    /// patterns (`*`, `prefix.*`, an exact action, or `security` for every
    /// security event).
    pub async fn next_event_matching(
        &self,
        patterns: &[String],
        after: i64,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let mut conds = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        for p in patterns {
            if p == "*" {
                conds.push("1 = 1".to_string());
            } else if p == "security" {
                conds.push("security = TRUE".to_string());
            } else if let Some(prefix) = p.strip_suffix(".*") {
                binds.push(format!("{prefix}.%"));
                conds.push(format!("action LIKE ${}", binds.len() + 1));
            } else {
                binds.push(p.clone());
                conds.push(format!("action = ${}", binds.len() + 1));
            }
        }
        if conds.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT seq, occurred_at, actor, action, target, detail, security, prev_hash, hash \
             FROM audit_events WHERE seq > $1 AND ({}) ORDER BY seq LIMIT 1",
            conds.join(" OR ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(after);
        for b in &binds {
            q = q.bind(b);
        }
        let row = q.fetch_optional(self.reader()).await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Records a delivered event: the cursor moves past it (only from
    /// where this replica found it), failures reset.
    pub async fn advance_subscription(
        &self,
        id: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_subscriptions SET cursor = $1, failures = 0, next_attempt_at = 0 \
             WHERE id = $2 AND cursor = $3",
        )
        .bind(to)
        .bind(id)
        .bind(from)
        .execute(self.writer())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Records a failed attempt and when to try again.
    pub async fn retry_subscription(
        &self,
        id: &str,
        failures: i64,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_subscriptions SET failures = $1, next_attempt_at = $2 WHERE id = $3",
        )
        .bind(failures)
        .bind(micros(next))
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub async fn record_attempt(&self, a: &Attempt) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_attempts (subscription_id, seq, attempt, at, status, error, millis) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.subscription_id)
        .bind(a.seq)
        .bind(a.attempt)
        .bind(micros(a.at))
        .bind(a.status)
        .bind(&a.error)
        .bind(a.millis)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// A subscription's attempts, newest first.
    pub async fn list_attempts(
        &self,
        subscription_id: &str,
        limit: i64,
    ) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT subscription_id, seq, attempt, at, status, error, millis FROM webhook_attempts \
             WHERE subscription_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(subscription_id)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Attempt {
                    subscription_id: get(r, "subscription_id")?,
                    seq: get(r, "seq")?,
                    attempt: get(r, "attempt")?,
                    at: time(get(r, "at")?)?,
                    status: get(r, "status")?,
                    error: get(r, "error")?,
                    millis: get(r, "millis")?,
                })
            })
            .collect()
    }
}

impl crate::WriteTx {
    /// Delivers again from `from_seq` on (None: from the cursor), active
    /// and due now.
    pub async fn redeliver_subscription(
        &mut self,
        id: &str,
        from_seq: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n = match from_seq {
            Some(seq) => {
                sqlx::query(
                    "UPDATE webhook_subscriptions SET state = 'active', state_reason = NULL, failures = 0, \
                     next_attempt_at = 0, cursor = $1 WHERE id = $2",
                )
                .bind(seq - 1)
                .bind(id)
                .execute(&mut *self.tx)
                .await?
            }
            None => {
                sqlx::query(
                    "UPDATE webhook_subscriptions SET state = 'active', state_reason = NULL, failures = 0, \
                     next_attempt_at = 0 WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *self.tx)
                .await?
            }
        };
        Ok(n.rows_affected() > 0)
    }

    /// Stops delivering to a subscription, saying why.
    pub async fn disable_subscription(&mut self, id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_subscriptions SET state = 'disabled', state_reason = $1 WHERE id = $2",
        )
        .bind(reason)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Creates a subscription through the API, starting after event
    /// `from_seq`; a taken id is a conflict.
    pub async fn insert_api_subscription(
        &mut self,
        id: &str,
        url: &str,
        events: &[String],
        secrets: &[String],
        from_seq: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_subscriptions (id, url, events, cursor, state, created_at, origin, secrets) \
             VALUES ($1, $2, $3, $4, 'active', $5, 'api', $6)",
        )
        .bind(id)
        .bind(url)
        .bind(events.join(" "))
        .bind(from_seq)
        .bind(micros(now))
        .bind(secrets.join(" "))
        .execute(&mut *self.tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("there is already a webhook subscription {id}"))
            }
            other => other,
        })?;
        Ok(())
    }

    /// The secrets of an API subscription, locked until commit (None: no
    /// such subscription created through the API).
    pub async fn api_subscription_secrets(
        &mut self,
        id: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let sql = format!(
            "SELECT secrets FROM webhook_subscriptions WHERE id = $1 AND origin = 'api'{}",
            self.backend.for_update()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| {
            let s: String = get(&r, "secrets")?;
            Ok(s.split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect())
        })
        .transpose()
    }

    pub async fn set_subscription_secrets(
        &mut self,
        id: &str,
        secrets: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_subscriptions SET secrets = $1 WHERE id = $2 AND origin = 'api'",
        )
        .bind(secrets.join(" "))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Deletes an API subscription (its attempts stay, for the record).
    pub async fn delete_api_subscription(&mut self, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1 AND origin = 'api'")
            .bind(id)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}
