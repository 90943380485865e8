//! Applied policy documents, versioned.

use crate::convert::{get, micros, time};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A policy document as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub version: i64,
    pub document: String,
    pub sha256: String,
    pub applied_at: DateTime<Utc>,
    pub applied_by: String,
    pub reason: String,
}

impl Store {
    /// The policy in force: the highest version.
    pub async fn current_policy(&self) -> Result<Option<StoredPolicy>, StoreError> {
        self.policy_at(i64::MAX).await
    }

    /// The policy that was in force as version `version` (the highest at or
    /// below it).
    pub async fn policy_at(&self, version: i64) -> Result<Option<StoredPolicy>, StoreError> {
        let row = sqlx::query(
            "SELECT version, document, sha256, applied_at, applied_by, reason FROM policies \
             WHERE version <= $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(version)
        .fetch_optional(self.reader())
        .await?;
        row.map(|r| {
            Ok(StoredPolicy {
                version: get(&r, "version")?,
                document: get(&r, "document")?,
                sha256: get(&r, "sha256")?,
                applied_at: time(get(&r, "applied_at")?)?,
                applied_by: get(&r, "applied_by")?,
                reason: get(&r, "reason")?,
            })
        })
        .transpose()
    }
}

impl WriteTx {
    /// The version of the policy in force (0 when none was applied).
    pub async fn policy_version(&mut self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM policies")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get("v")?)
    }

    /// Stores a new policy version; fails with a conflict if `expected_version`
    /// is no longer the current one (someone applied a policy meanwhile).
    pub async fn insert_policy(
        &mut self,
        expected_version: i64,
        document: &str,
        sha256: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let current = self.policy_version().await?;
        if current != expected_version {
            return Err(StoreError::Conflict(format!(
                "the policy changed meanwhile (now version {current}); review it and apply again"
            )));
        }
        let version = current + 1;
        sqlx::query(
            "INSERT INTO policies (version, document, sha256, applied_at, applied_by, reason) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(version)
        .bind(document)
        .bind(sha256)
        .bind(micros(now))
        .bind(by)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(version)
    }
}
