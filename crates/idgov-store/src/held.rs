//! Changes held by the mass-change guard.

use crate::convert::{get, json, micros, opt_time, parsed, time, to_json};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::guard::Verdict;
pub use idgov_domain::guard::{HeldKind, HeldState};
use sqlx::any::AnyRow;

/// A change held until a person releases or discards it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldChange {
    pub id: String,
    pub kind: HeldKind,
    pub state: HeldState,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub summary: String,
    pub guard: Verdict,
    /// What to apply on release (staged events, or a policy document).
    pub payload: serde_json::Value,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
}

fn held_from_row(row: &AnyRow) -> Result<HeldChange, StoreError> {
    Ok(HeldChange {
        id: get(row, "id")?,
        kind: parsed(row, "kind")?,
        state: parsed(row, "state")?,
        created_at: time(get(row, "created_at")?)?,
        created_by: get(row, "created_by")?,
        summary: get(row, "summary")?,
        guard: json(row, "guard")?,
        payload: json(row, "payload")?,
        decided_by: get(row, "decided_by")?,
        decided_at: opt_time(get(row, "decided_at")?)?,
        decision_reason: get(row, "decision_reason")?,
    })
}

macro_rules! select_held {
    ($where:literal) => {
        concat!(
            "SELECT id, kind, state, created_at, created_by, summary, guard, payload, decided_by, decided_at, \
             decision_reason FROM held_changes ",
            $where
        )
    };
}

impl Store {
    pub async fn get_held_change(&self, id: &str) -> Result<Option<HeldChange>, StoreError> {
        let row = sqlx::query(select_held!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(held_from_row).transpose()
    }

    /// Held changes in `state`, ordered by id (ids are time-ordered).
    pub async fn list_held_changes(
        &self,
        state: HeldState,
        after: &str,
        limit: i64,
    ) -> Result<Vec<HeldChange>, StoreError> {
        let rows = sqlx::query(select_held!(
            "WHERE state = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(state.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(held_from_row).collect()
    }
}

impl WriteTx {
    pub async fn insert_held_change(&mut self, h: &HeldChange) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO held_changes (id, kind, state, created_at, created_by, summary, guard, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&h.id)
        .bind(h.kind.as_str())
        .bind(h.state.as_str())
        .bind(micros(h.created_at))
        .bind(&h.created_by)
        .bind(&h.summary)
        .bind(to_json(&h.guard))
        .bind(to_json(&h.payload))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Reads a held change within the transaction.
    pub async fn get_held_change(&mut self, id: &str) -> Result<Option<HeldChange>, StoreError> {
        let sql = match self.backend {
            crate::Backend::Postgres => select_held!("WHERE id = $1 FOR UPDATE"),
            crate::Backend::Sqlite => select_held!("WHERE id = $1"),
        };
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(held_from_row).transpose()
    }

    /// Records the decision on a held change; fails with a conflict if it
    /// was decided already.
    pub async fn decide_held_change(
        &mut self,
        id: &str,
        state: HeldState,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE held_changes SET state = $1, decided_by = $2, decided_at = $3, decision_reason = $4 \
             WHERE id = $5 AND state = 'held'",
        )
        .bind(state.as_str())
        .bind(by)
        .bind(micros(now))
        .bind(reason)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "held change {id} was already decided"
            )));
        }
        Ok(())
    }
}
