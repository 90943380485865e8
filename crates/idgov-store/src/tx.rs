//! Write transactions. Changes and their audit events commit together.

use crate::convert::micros;
use crate::{Backend, StoreError};
use chrono::{DateTime, Utc};
use idgov_domain::audit::{AuditEntry, event_hash};
use sqlx::{Any, AnyPool, Row, Transaction};

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    pub(crate) backend: Backend,
    audit: Vec<AuditEntry>,
}

impl WriteTx {
    pub(crate) async fn begin(pool: &AnyPool, backend: Backend) -> Result<WriteTx, StoreError> {
        let tx = match backend {
            // Take the write lock up front: a deferred transaction that reads
            // first could fail to upgrade.
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        Ok(WriteTx {
            tx,
            backend,
            audit: Vec::new(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Records an audit event, written when the transaction commits.
    pub fn audit(&mut self, entry: AuditEntry) {
        self.audit.push(entry);
    }

    /// Number of audit events pending in this transaction.
    pub fn pending_audit(&self) -> usize {
        self.audit.len()
    }

    /// Appends the pending audit events to the chain and commits. Returns the
    /// sequence number of the last audit event written (0 if none).
    pub async fn commit(mut self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let mut last = 0;
        if !self.audit.is_empty() {
            let head_sql = match self.backend {
                Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
                Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            };
            let head = sqlx::query(head_sql).fetch_one(&mut *self.tx).await?;
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
            for chunk in rows.chunks(500) {
                let sql = format!(
                    "INSERT INTO audit_events (seq, occurred_at, actor, action, target, detail, security, \
                     prev_hash, hash) VALUES {}",
                    crate::bulk::values(self.backend, chunk.len(), 9)
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                for (seq, e, detail, prev_hash, hash) in chunk {
                    q = q
                        .bind(*seq)
                        .bind(at)
                        .bind(e.actor.clone())
                        .bind(e.action.clone())
                        .bind(e.target.clone())
                        .bind(detail.clone())
                        .bind(i64::from(e.security))
                        .bind(prev_hash.clone())
                        .bind(hash.clone());
                }
                q.execute(&mut *self.tx).await?;
            }
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&prev)
                .execute(&mut *self.tx)
                .await?;
            last = seq;
        }
        self.tx.commit().await?;
        Ok(last)
    }

    /// Rolls back explicitly.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
