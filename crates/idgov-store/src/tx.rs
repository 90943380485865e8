//! Write transactions. Changes and their audit events commit together.

use crate::convert::micros;
use crate::{Backend, StoreError};
use chrono::{DateTime, Utc};
use idgov_domain::audit::{AuditEntry, event_hash};
use sqlx::{Any, AnyPool, Row, Transaction};

/// Begins a transaction on `pool` in a task of its own, so that it runs to
/// the end even when the caller is dropped half-way (a cancelled request,
/// an aborted job).
///
/// sqlx counts a transaction as open only once the server has answered its
/// `BEGIN`; a caller dropped in between left the connection inside a
/// transaction sqlx did not know of, and the pool lent it out again. Every
/// statement run on it afterwards (autocommit writes included) then
/// belonged to that transaction: acknowledged, never committed, holding its
/// row locks (seen as a job step waiting two minutes on a lease row, and
/// reproduced by the store suite's abandoned-begin test). Run to the end,
/// the transaction is known, and dropping it rolls it back.
async fn begin_to_the_end(
    pool: &AnyPool,
    begin: &'static str,
) -> Result<Transaction<'static, Any>, StoreError> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin_with(begin).await })
        .await
        .map_err(|e| StoreError::Unavailable(format!("beginning a transaction: {e}")))?
        .map_err(StoreError::from)
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    pub(crate) backend: Backend,
    audit: Vec<AuditEntry>,
    expected_policy: Option<i64>,
    /// Told after a commit that appended audit events.
    appended: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl WriteTx {
    pub(crate) async fn begin(
        pool: &AnyPool,
        backend: Backend,
        appended: std::sync::Arc<tokio::sync::Notify>,
    ) -> Result<WriteTx, StoreError> {
        let tx = match backend {
            // Take the write lock up front: a deferred transaction that reads
            // first could fail to upgrade.
            Backend::Sqlite => begin_to_the_end(pool, "BEGIN IMMEDIATE").await?,
            Backend::Postgres => begin_to_the_end(pool, "BEGIN").await?,
        };
        Ok(WriteTx {
            tx,
            backend,
            audit: Vec::new(),
            expected_policy: None,
            appended: Some(appended),
        })
    }

    /// A read-only transaction on a reader connection: a consistent view
    /// that never holds SQLite's writer. Roll it back when done; writes in
    /// it fail.
    pub(crate) async fn begin_read(
        pool: &AnyPool,
        backend: Backend,
    ) -> Result<WriteTx, StoreError> {
        let tx = match backend {
            Backend::Sqlite => begin_to_the_end(pool, "BEGIN").await?,
            Backend::Postgres => {
                begin_to_the_end(
                    pool,
                    "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
                )
                .await?
            }
        };
        Ok(WriteTx {
            tx,
            backend,
            audit: Vec::new(),
            expected_policy: None,
            appended: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Records an audit event, written when the transaction commits.
    pub fn audit(&mut self, entry: AuditEntry) {
        self.audit.push(entry);
    }

    /// Makes the commit fail with a conflict unless the policy in force is
    /// still `version` (checked under the audit-head lock, so no policy can
    /// change between the check and the commit).
    pub fn expect_policy_version(&mut self, version: i64) {
        self.expected_policy = Some(version);
    }

    /// Appends the pending audit events to the chain and commits. Returns the
    /// sequence number of the last audit event written (0 if none).
    pub async fn commit(mut self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let mut last = 0;
        if !self.audit.is_empty() || self.expected_policy.is_some() {
            let head_sql = match self.backend {
                Backend::Postgres => {
                    "SELECT seq, hash, (SELECT COALESCE(MAX(version), 0) FROM policies) AS policy \
                     FROM audit_head WHERE id = 1 FOR UPDATE"
                }
                Backend::Sqlite => {
                    "SELECT seq, hash, (SELECT COALESCE(MAX(version), 0) FROM policies) AS policy \
                     FROM audit_head WHERE id = 1"
                }
            };
            let head = sqlx::query(head_sql).fetch_one(&mut *self.tx).await?;
            if let Some(expected) = self.expected_policy {
                let policy: i64 = head.try_get("policy")?;
                if policy != expected {
                    return Err(StoreError::PolicyChanged(policy));
                }
            }
            let mut seq: i64 = head.try_get("seq")?;
            let mut prev: String = head.try_get("hash")?;
            let at = micros(now);
            let mut rows = Vec::with_capacity(self.audit.len());
            for e in std::mem::take(&mut self.audit) {
                seq += 1;
                let detail = serde_json::to_string(&e.detail).unwrap_or_else(|_| "{}".into());
                let hash = event_hash(
                    &prev, seq, at, &e.actor, &e.action, &e.target, &detail, e.security,
                );
                rows.push((seq, e, detail, prev.clone(), hash.clone()));
                prev = hash;
            }
            // On PostgreSQL the last chunk and the head update travel as one
            // statement; SQLite (in-process) runs them one after the other.
            let chunks: Vec<_> = crate::bulk::stable_chunks(self.backend, &rows, 500).collect();
            for (n, chunk) in chunks.iter().enumerate() {
                let cols = crate::bulk::values(self.backend, chunk.len(), 10);
                let fold_head = self.backend == Backend::Postgres && n + 1 == chunks.len();
                let sql = if fold_head {
                    let p = chunk.len() * 10;
                    format!(
                        "WITH appended AS (INSERT INTO audit_events (seq, occurred_at, actor, action, target, \
                         detail, security, prev_hash, hash, subject) VALUES {cols}) \
                         UPDATE audit_head SET seq = ${}, hash = ${} WHERE id = 1",
                        p + 1,
                        p + 2
                    )
                } else {
                    format!(
                        "INSERT INTO audit_events (seq, occurred_at, actor, action, target, detail, security, \
                         prev_hash, hash, subject) VALUES {cols}"
                    )
                };
                let mut q =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(self.backend.prepares());
                for (seq, e, detail, prev_hash, hash) in chunk.iter() {
                    q = q
                        .bind(*seq)
                        .bind(at)
                        .bind(e.actor.clone())
                        .bind(e.action.clone())
                        .bind(e.target.clone())
                        .bind(detail.clone())
                        .bind(i64::from(e.security))
                        .bind(prev_hash.clone())
                        .bind(hash.clone())
                        .bind(e.subject().map(str::to_string));
                }
                if fold_head {
                    q = q.bind(seq).bind(prev.clone());
                }
                q.execute(&mut *self.tx).await?;
            }
            if self.backend == Backend::Sqlite && !rows.is_empty() {
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(&prev)
                    .execute(&mut *self.tx)
                    .await?;
            }
            last = seq;
        }
        self.tx.commit().await?;
        if last > 0
            && let Some(n) = &self.appended
        {
            n.notify_one();
        }
        Ok(last)
    }

    /// Rolls back explicitly.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
