//! Bulk work in bounded steps: progress of a recompute of everyone, so that
//! it runs in short transactions, resumes after a crash, and runs once
//! across replicas (a lease).

use crate::convert::{get, micros, time};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

/// A bulk job and how far it got.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkJob {
    pub id: String,
    pub kind: String,
    /// `staging` (its items are being written), `held` (a held roster
    /// sync's release, staged and waiting for the decision), `preview` (a
    /// dry run's whole diff, kept to be read a page at a time), `running`,
    /// `done`, `superseded`, `failed`, `discarded` or `interrupted`.
    pub state: String,
    pub policy_version: i64,
    /// The last employee id done ("" before the first).
    pub cursor: String,
    pub detail: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn job_from_row(r: &AnyRow) -> Result<BulkJob, StoreError> {
    let detail: String = get(r, "detail")?;
    Ok(BulkJob {
        id: get(r, "id")?,
        kind: get(r, "kind")?,
        state: get(r, "state")?,
        policy_version: get(r, "policy_version")?,
        cursor: get(r, "cursor")?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| StoreError::Corrupt(format!("bulk job detail: {e}")))?,
        created_at: time(get(r, "created_at")?)?,
        updated_at: time(get(r, "updated_at")?)?,
    })
}

const COLUMNS: &str = "id, kind, state, policy_version, cursor, detail, created_at, updated_at";

impl Store {
    /// Running (or staging) jobs nobody holds a lease on, oldest first.
    pub async fn unclaimed_bulk_jobs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<BulkJob>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM bulk_jobs WHERE state IN ('running', 'staging') AND claimed_until <= $1 \
             ORDER BY created_at"
        )))
        .bind(micros(now))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn get_bulk_job(&self, id: &str) -> Result<Option<BulkJob>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM bulk_jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Up to `limit` jobs of `kind` in one of `states` started at or
    /// before `before`, oldest first: what a sweep of short-lived jobs (roster
    /// previews) removes.
    pub async fn bulk_jobs_started_before(
        &self,
        kind: &str,
        states: [&str; 3],
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<BulkJob>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM bulk_jobs WHERE state IN ($1, $2, $3) AND created_at <= $4 \
             AND kind = $5 ORDER BY created_at LIMIT $6"
        )))
        .bind(states[0])
        .bind(states[1])
        .bind(states[2])
        .bind(micros(before))
        .bind(kind)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The job holding `claim` (see [`WriteTx::insert_claiming_bulk_job`]):
    /// one being staged, or a roster sync being applied.
    pub async fn claim_holder(&self, claim: &str) -> Result<Option<BulkJob>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM bulk_jobs WHERE claim = $1 \
             AND (state = 'staging' OR (state = 'running' AND kind = 'roster_sync'))"
        )))
        .bind(claim)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Takes the lease on a running (or staging) job for `holder` until
    /// `until`: with `renew`, only a lease `holder` already has; without,
    /// only a lease that ran out by `now` (a job whose holder crashed or
    /// stalled), which then is `holder`'s alone. Returns false when another
    /// process holds it or it is no longer running.
    pub async fn claim_bulk_job(
        &self,
        id: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        renew: bool,
    ) -> Result<bool, StoreError> {
        let sql = if renew {
            "UPDATE bulk_jobs SET claimed_until = $1, claimed_by = $2 WHERE id = $3 \
             AND state IN ('running', 'staging') AND claimed_by = $2 AND ($4 = $4)"
        } else {
            "UPDATE bulk_jobs SET claimed_until = $1, claimed_by = $2 WHERE id = $3 \
             AND state IN ('running', 'staging') AND claimed_until <= $4"
        };
        let r = sqlx::query(sql)
            .bind(micros(until))
            .bind(holder)
            .bind(id)
            .bind(micros(now))
            .execute(&self.write)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives up `holder`'s lease on a running (or staging) job, so that the
    /// next start (or another replica) carries it on at once: what bulk
    /// work stopped between two steps by a shutdown leaves. A lease another
    /// process took over meanwhile stays its own.
    pub async fn release_bulk_job(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE bulk_jobs SET claimed_until = 0 WHERE id = $1 AND claimed_by = $2 \
             AND state IN ('running', 'staging')",
        )
        .bind(id)
        .bind(holder)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Who holds job `id`'s lease and until when ("" for nobody named).
    pub async fn bulk_job_lease(
        &self,
        id: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row = sqlx::query("SELECT claimed_by, claimed_until FROM bulk_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.map(|r| Ok((get(&r, "claimed_by")?, time(get(&r, "claimed_until")?)?)))
            .transpose()
    }
}

impl Store {
    /// Job `id`'s staged items numbered from `from` on, at most `limit`, in
    /// order, as (number, body).
    pub async fn bulk_job_items(
        &self,
        id: &str,
        from: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT n, body FROM bulk_job_items WHERE job_id = $1 AND n >= $2 ORDER BY n LIMIT $3",
        )
        .bind(id)
        .bind(from)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "n")?, get(r, "body")?)))
            .collect()
    }
}

impl WriteTx {
    /// Stages `bodies` as items of job `id`, numbered from `first` on.
    pub async fn insert_bulk_job_items(
        &mut self,
        id: &str,
        first: i64,
        bodies: &[String],
    ) -> Result<(), StoreError> {
        let mut n = first;
        for chunk in crate::bulk::stable_chunks(self.backend, bodies, 500) {
            let cols = crate::bulk::values(self.backend, chunk.len(), 3);
            let sql = format!("INSERT INTO bulk_job_items (job_id, n, body) VALUES {cols}");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(self.backend.prepares());
            for body in chunk {
                q = q.bind(id).bind(n).bind(body.as_str());
                n += 1;
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Removes job `id`'s staged items numbered below `below` (all of them
    /// with `i64::MAX`); returns how many there were.
    pub async fn delete_bulk_job_items(&mut self, id: &str, below: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM bulk_job_items WHERE job_id = $1 AND n < $2")
            .bind(id)
            .bind(below)
            .execute(&mut *self.tx)
            .await?;
        Ok(r.rows_affected())
    }

    /// Removes the staged items of jobs that no longer run or wait (left
    /// by a crash between a job's end and the removal of its items);
    /// returns how many there were.
    pub async fn delete_ended_bulk_job_items(&mut self) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM bulk_job_items WHERE job_id IN \
             (SELECT id FROM bulk_jobs WHERE state NOT IN ('running', 'staging', 'held', 'preview'))",
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected())
    }

    /// Removes up to `limit` jobs that ended (done, superseded, failed,
    /// discarded or interrupted) and started before `before`, with any
    /// staged items a crash left them; returns how many jobs went. What
    /// they did stays in the audit log.
    pub async fn delete_ended_bulk_jobs(
        &mut self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError> {
        const ENDED: &str = "SELECT id FROM bulk_jobs WHERE state IN \
             ('done', 'superseded', 'failed', 'discarded', 'interrupted') AND created_at <= $1 \
             ORDER BY created_at, id LIMIT $2";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM bulk_job_items WHERE job_id IN ({ENDED})"
        )))
        .bind(micros(before))
        .bind(limit)
        .execute(&mut *self.tx)
        .await?;
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM bulk_jobs WHERE id IN ({ENDED})"
        )))
        .bind(micros(before))
        .bind(limit)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected())
    }

    /// Removes job `id` (its staged items first, if any are left).
    pub async fn delete_bulk_job(&mut self, id: &str) -> Result<(), StoreError> {
        self.delete_bulk_job_items(id, i64::MAX).await?;
        sqlx::query("DELETE FROM bulk_jobs WHERE id = $1")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Starts a job, leased to `holder` until `until`.
    pub async fn insert_bulk_job(
        &mut self,
        job: &BulkJob,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self
            .insert_claiming_bulk_job(job, holder, until, None)
            .await?
        {
            return Ok(());
        }
        Err(StoreError::Conflict(format!(
            "bulk job {} exists already",
            job.id
        )))
    }

    /// Starts a job, leased to `holder` until `until`, holding `claim`
    /// while it is staged (or, a roster sync, applied): false, and nothing
    /// written, when another job holds it (see [`Store::claim_holder`]).
    /// Of two transactions that insert one claim at once, the second waits
    /// for the first to commit and is then told it is taken.
    pub async fn insert_claiming_bulk_job(
        &mut self,
        job: &BulkJob,
        holder: &str,
        until: DateTime<Utc>,
        claim: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO bulk_jobs (id, kind, state, policy_version, cursor, detail, claimed_until, created_at, \
             updated_at, claimed_by, claim) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.kind)
        .bind(&job.state)
        .bind(job.policy_version)
        .bind(&job.cursor)
        .bind(job.detail.to_string())
        .bind(micros(until))
        .bind(micros(job.created_at))
        .bind(micros(job.updated_at))
        .bind(holder)
        .bind(claim)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Renews `holder`'s lease on running (or staging) job `id` until
    /// `until`, in the transaction of the step about to run: the step and
    /// its lease commit together, one commit a step instead of two.
    /// Returns false when the job is no longer running or another process
    /// took it over (its lease ran out while this one stalled).
    pub async fn renew_bulk_job(
        &mut self,
        id: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE bulk_jobs SET claimed_until = $1 WHERE id = $2 AND claimed_by = $3 \
             AND state IN ('running', 'staging')",
        )
        .bind(micros(until))
        .bind(id)
        .bind(holder)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Leases job `id` to `holder` until `until`, whatever its lease was
    /// (a held job that its release starts).
    pub async fn lease_bulk_job(
        &mut self,
        id: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE bulk_jobs SET claimed_until = $1, claimed_by = $2 WHERE id = $3")
            .bind(micros(until))
            .bind(holder)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records progress (or the end) of a job, in the transaction of the
    /// step it records.
    pub async fn update_bulk_job(
        &mut self,
        id: &str,
        state: &str,
        cursor: &str,
        detail: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE bulk_jobs SET state = $1, cursor = $2, detail = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(state)
        .bind(cursor)
        .bind(detail.to_string())
        .bind(micros(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The next `limit` employee ids after `after`, in order.
    pub async fn identity_ids_after(
        &mut self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT employee_id FROM identities WHERE employee_id > $1 ORDER BY employee_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(|r| get(r, "employee_id")).collect()
    }
}

impl Store {
    /// A page of identities after `after`, in employee-id order, with their
    /// active grants (for measuring a change without loading everyone).
    pub async fn identities_with_grants_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<
        Vec<(
            idgov_domain::identity::Identity,
            Vec<idgov_domain::grant::Grant>,
        )>,
        StoreError,
    > {
        const GRANTS: &str = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE revoked_at IS NULL AND employee_id >= $1 AND employee_id <= $2"
        );
        let people = self.identities_page(after, limit).await?;
        let (Some(first), Some(last)) = (people.first(), people.last()) else {
            return Ok(vec![]);
        };
        let grant_rows: Vec<(idgov_domain::grant::Grant, idgov_domain::Classification)> = self
            .page_rows(
                GRANTS.into(),
                vec![
                    first.employee_id.as_str().into(),
                    last.employee_id.as_str().into(),
                ],
            )
            .await?;
        let mut grants: std::collections::HashMap<String, Vec<idgov_domain::grant::Grant>> =
            Default::default();
        for (g, _) in grant_rows {
            grants.entry(g.employee_id.clone()).or_default().push(g);
        }
        Ok(people
            .into_iter()
            .map(|p| {
                let g = grants.remove(&p.employee_id).unwrap_or_default();
                (p, g)
            })
            .collect())
    }
}
