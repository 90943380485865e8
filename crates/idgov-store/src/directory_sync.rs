//! Directory sync runs and their drift.

use crate::convert::{ReadRow, get, micros, parsed, time};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::drift::{Drift, DriftKind};

/// A sync run's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub actor: String,
    pub dry_run: bool,
    pub accounts: i64,
    pub groups: i64,
    /// Counts per drift kind and per action, as JSON.
    pub summary: serde_json::Value,
    /// All its drift is recorded (a sync records in steps; one a crash cut
    /// short stays incomplete).
    pub complete: bool,
}

/// One drift finding of a run, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRow {
    pub seq: i64,
    pub drift: Drift,
    /// `reported` or `remediated`.
    pub action: String,
}

impl WriteTx {
    /// Records a run and its first findings. The run is not complete (never
    /// the latest) until [`WriteTx::complete_sync_run`].
    pub async fn insert_sync_run(
        &mut self,
        run: &SyncRun,
        drift: &[DriftRow],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO directory_syncs (id, started_at, finished_at, actor, dry_run, account_count, group_count, summary, \
             complete) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
        )
        .bind(&run.id)
        .bind(micros(run.started_at))
        .bind(micros(run.finished_at))
        .bind(&run.actor)
        .bind(i64::from(run.dry_run))
        .bind(run.accounts)
        .bind(run.groups)
        .bind(run.summary.to_string())
        .execute(&mut *self.tx)
        .await?;
        self.insert_sync_drift(&run.id, drift).await
    }

    /// Marks run `run_id` complete: all its drift is recorded.
    pub async fn complete_sync_run(
        &mut self,
        run_id: &str,
        finished_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE directory_syncs SET complete = 1, finished_at = $2 WHERE id = $1")
            .bind(run_id)
            .bind(micros(finished_at))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// More drift rows of the run `run_id` (recorded in steps).
    pub async fn insert_sync_drift(
        &mut self,
        run_id: &str,
        drift: &[DriftRow],
    ) -> Result<(), StoreError> {
        crate::directory_stage::insert_rows(
            self,
            "directory_drift (sync_id, seq, kind, employee_id, account_dn, group_dn, entitlement_id, action)",
            8,
            drift,
            |q, _, d| {
                q.bind(run_id.to_string())
                    .bind(d.seq)
                    .bind(d.drift.kind.as_str())
                    .bind(d.drift.employee_id.clone())
                    .bind(d.drift.account_dn.clone())
                    .bind(d.drift.group_dn.clone())
                    .bind(d.drift.entitlement_id.clone())
                    .bind(d.action.clone())
            },
        )
        .await
    }
}

/// The finding of a drift row (recorded or staged: the same columns).
pub(crate) fn drift_from_row(r: &impl ReadRow) -> Result<Drift, StoreError> {
    Ok(Drift {
        kind: parsed(r, "kind")?,
        employee_id: r.col("employee_id")?,
        account_dn: r.col("account_dn")?,
        group_dn: r.col("group_dn")?,
        entitlement_id: r.col("entitlement_id")?,
    })
}

fn run_from_row(r: &sqlx::any::AnyRow) -> Result<SyncRun, StoreError> {
    let summary: String = get(r, "summary")?;
    Ok(SyncRun {
        id: get(r, "id")?,
        started_at: time(get(r, "started_at")?)?,
        finished_at: time(get(r, "finished_at")?)?,
        actor: get(r, "actor")?,
        dry_run: get::<i64>(r, "dry_run")? != 0,
        accounts: get(r, "account_count")?,
        groups: get(r, "group_count")?,
        summary: serde_json::from_str(&summary).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        complete: get::<i64>(r, "complete")? != 0,
    })
}

impl Store {
    pub async fn get_sync_run(&self, id: &str) -> Result<Option<SyncRun>, StoreError> {
        let row = sqlx::query(
            "SELECT id, started_at, finished_at, actor, dry_run, account_count, group_count, summary, complete FROM directory_syncs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The newest complete run that was not a dry run.
    pub async fn latest_sync_run(&self) -> Result<Option<SyncRun>, StoreError> {
        let row = sqlx::query(
            "SELECT id, started_at, finished_at, actor, dry_run, account_count, group_count, summary, complete FROM directory_syncs \
             WHERE dry_run = 0 AND complete = 1 ORDER BY started_at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// Drift of run `sync_id`, in order, optionally one kind only.
    pub async fn list_drift(
        &self,
        sync_id: &str,
        kind: Option<DriftKind>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DriftRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, employee_id, account_dn, group_dn, entitlement_id, action FROM directory_drift \
             WHERE sync_id = $1 AND ($2 = '' OR kind = $2) AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(sync_id)
        .bind(kind.map(|k| k.as_str()).unwrap_or(""))
        .bind(after)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DriftRow {
                    seq: get(r, "seq")?,
                    drift: drift_from_row(r)?,
                    action: get(r, "action")?,
                })
            })
            .collect()
    }
}
