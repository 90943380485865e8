//! The provisioning outbox.

use crate::bulk::values;
use crate::convert::{get, micros, opt_time, parsed, time};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

idgov_domain::string_enum!(
    /// What an outbox operation does in the directory.
    DirOpKind {
        CreateAccount => "create_account",
        AddMember => "add_member",
        RemoveMember => "remove_member",
        Disable => "disable",
        Enable => "enable",
        StripGroups => "strip_groups",
    }
);

idgov_domain::string_enum!(
    /// Where an outbox operation stands: `pending` (to apply, retried with
    /// backoff), `done`, `failed` (the directory refused it for good; an
    /// admin retries it after a fix), or `superseded` (a leaver's disable
    /// made it moot).
    DirOpState { Pending => "pending", Done => "done", Failed => "failed", Superseded => "superseded" }
);

/// Which operations a provisioning worker claims. A leaver's lock has a
/// lane of its own, so it never waits behind anything; stripping leavers'
/// groups has another, so it never waits behind joiners' and movers' group
/// changes (and they never wait behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Disables,
    Strips,
    Others,
}

/// An operation to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDirOp {
    pub employee_id: String,
    pub kind: DirOpKind,
    pub group_dn: Option<String>,
    pub entitlement_id: Option<String>,
    pub cause: String,
}

/// A queued or applied operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirOp {
    pub id: i64,
    pub employee_id: String,
    pub kind: DirOpKind,
    pub group_dn: Option<String>,
    pub entitlement_id: Option<String>,
    pub cause: String,
    pub state: DirOpState,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// What applying it found: `applied`, `already`, `no_account`.
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
}

macro_rules! op_columns {
    () => {
        "id, employee_id, kind, group_dn, entitlement_id, cause, state, attempts, last_error, outcome, \
         created_at, next_attempt_at, done_at"
    };
}

fn op_from_row(r: &AnyRow) -> Result<DirOp, StoreError> {
    Ok(DirOp {
        id: get(r, "id")?,
        employee_id: get(r, "employee_id")?,
        kind: parsed(r, "kind")?,
        group_dn: get(r, "group_dn")?,
        entitlement_id: get(r, "entitlement_id")?,
        cause: get(r, "cause")?,
        state: parsed(r, "state")?,
        attempts: get(r, "attempts")?,
        last_error: get(r, "last_error")?,
        outcome: get(r, "outcome")?,
        created_at: time(get(r, "created_at")?)?,
        next_attempt_at: time(get(r, "next_attempt_at")?)?,
        done_at: opt_time(get(r, "done_at")?)?,
    })
}

impl WriteTx {
    /// Queues directory operations, in order, with the change that needs them.
    /// A person's `disable` supersedes their operations still pending (the
    /// disable strips every managed group anyway), so a leaver never waits
    /// behind their own earlier operations.
    pub async fn enqueue_directory_ops(
        &mut self,
        ops: &[NewDirOp],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut leavers: Vec<&str> = ops
            .iter()
            .filter(|o| o.kind == DirOpKind::Disable)
            .map(|o| o.employee_id.as_str())
            .collect();
        leavers.sort();
        leavers.dedup();
        for chunk in leavers.chunks(500) {
            let sql = format!(
                "UPDATE directory_ops SET state = 'superseded', outcome = 'superseded by a disable', \
                 done_at = {}, claimed_until = 0 WHERE state = 'pending' AND employee_id IN ({})",
                crate::bulk::ph(self.backend, 1),
                crate::bulk::list(self.backend, chunk.len(), 2)
            );
            let q = crate::bulk::bind_each(
                sqlx::query(AssertSqlSafe(sql))
                    .persistent(false)
                    .bind(micros(now)),
                chunk.iter().map(|id| id.to_string()),
            );
            q.execute(&mut *self.tx).await?;
        }
        // In this very batch too: what comes before a person's disable is moot.
        let mut last_disable: std::collections::HashMap<&str, usize> = Default::default();
        for (i, o) in ops.iter().enumerate() {
            if o.kind == DirOpKind::Disable {
                last_disable.insert(o.employee_id.as_str(), i);
            }
        }
        let ops: Vec<&NewDirOp> = ops
            .iter()
            .enumerate()
            .filter(|(i, o)| {
                last_disable
                    .get(o.employee_id.as_str())
                    .is_none_or(|d| i >= d)
            })
            .map(|(_, o)| o)
            .collect();
        for chunk in crate::bulk::stable_chunks(self.backend, &ops, 300) {
            let sql = format!(
                "INSERT INTO directory_ops (employee_id, kind, group_dn, entitlement_id, cause, state, \
                 created_at, next_attempt_at) VALUES {}",
                values(self.backend, chunk.len(), 8)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(self.backend.prepares());
            for o in chunk {
                q = q
                    .bind(o.employee_id.clone())
                    .bind(o.kind.as_str())
                    .bind(o.group_dn.clone())
                    .bind(o.entitlement_id.clone())
                    .bind(o.cause.clone())
                    .bind(DirOpState::Pending.as_str())
                    .bind(micros(now))
                    .bind(micros(now));
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

impl Store {
    /// The oldest pending operation of each person whose turn has come (due,
    /// not leased), claimed for `lease`. Later operations of the same person
    /// wait: operations apply in order per person.
    pub async fn claim_directory_ops(
        &self,
        lane: Lane,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<DirOp>, StoreError> {
        let ops = self.due_directory_ops(lane, now, limit).await?;
        if ops.is_empty() || self.backend == crate::Backend::Sqlite {
            // SQLite serves one process: its worker keeps claims in memory
            // (no write, no wait behind intake for the only writer).
            return Ok(ops);
        }
        self.lease_directory_ops(ops, now, lease).await
    }

    /// The oldest pending operation of each person in `lane` whose turn has
    /// come (due, not leased), without claiming them.
    pub async fn due_directory_ops(
        &self,
        lane: Lane,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DirOp>, StoreError> {
        macro_rules! claim {
            ($kind:literal) => {
                concat!(
                    "SELECT ",
                    op_columns!(),
                    " FROM directory_ops d WHERE state = 'pending' AND next_attempt_at <= $1 AND claimed_until <= $1 \
                     AND kind ",
                    $kind,
                    " AND id = (SELECT MIN(id) FROM directory_ops e WHERE e.employee_id = d.employee_id AND e.state = 'pending') \
                     ORDER BY id LIMIT $2"
                )
            };
        }
        let sql = match lane {
            Lane::Disables => claim!("= 'disable'"),
            Lane::Strips => claim!("= 'strip_groups'"),
            Lane::Others => claim!("NOT IN ('disable', 'strip_groups')"),
        };
        let candidates = sqlx::query(sql)
            .bind(micros(now))
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        candidates.iter().map(op_from_row).collect()
    }

    /// Leases `ops` to this process (one conditional update; one commit);
    /// returns those it won.
    async fn lease_directory_ops(
        &self,
        ops: Vec<DirOp>,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<DirOp>, StoreError> {
        // One conditional update claims them all (one commit, not one per
        // operation); it returns the ids this process won.
        let sql = format!(
            "UPDATE directory_ops SET claimed_until = {} WHERE state = 'pending' AND claimed_until <= {} \
             AND id IN ({}) RETURNING id",
            crate::bulk::ph(self.backend, 1),
            crate::bulk::ph(self.backend, 2),
            crate::bulk::list(self.backend, ops.len(), 3)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(micros(now + lease))
            .bind(micros(now));
        for o in &ops {
            q = q.bind(o.id);
        }
        let won: std::collections::HashSet<i64> = q
            .fetch_all(&self.write)
            .await?
            .iter()
            .map(|r| get::<i64>(r, "id"))
            .collect::<Result<_, _>>()?;
        Ok(ops.into_iter().filter(|o| won.contains(&o.id)).collect())
    }

    /// Records that an operation is done.
    pub async fn finish_directory_op(
        &self,
        id: i64,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE directory_ops SET state = 'done', outcome = $1, done_at = $2, attempts = attempts + 1, \
             claimed_until = 0 WHERE id = $3 AND state = 'pending'",
        )
        .bind(outcome)
        .bind(micros(now))
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub async fn retry_directory_op(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE directory_ops SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
             claimed_until = 0 WHERE id = $3 AND state = 'pending'",
        )
        .bind(error)
        .bind(micros(next_attempt_at))
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Operations in id order after `after`, optionally only in `state` or
    /// about one person.
    pub async fn list_directory_ops(
        &self,
        state: Option<DirOpState>,
        employee_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DirOp>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            op_columns!(),
            " FROM directory_ops WHERE id > $1 AND ($2 = '' OR state = $2) AND ($3 = '' OR employee_id = $3) \
             ORDER BY id LIMIT $4"
        ))
        .bind(after)
        .bind(state.map(|s| s.as_str()).unwrap_or(""))
        .bind(employee_id)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(op_from_row).collect()
    }

    /// The earliest time a pending operation of `lane` becomes due.
    pub async fn next_directory_op_due(
        &self,
        lane: Lane,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = match lane {
            Lane::Disables => {
                "SELECT MIN(next_attempt_at) AS t FROM directory_ops WHERE state = 'pending' AND kind = 'disable'"
            }
            Lane::Strips => {
                "SELECT MIN(next_attempt_at) AS t FROM directory_ops WHERE state = 'pending' AND kind = 'strip_groups'"
            }
            Lane::Others => {
                "SELECT MIN(next_attempt_at) AS t FROM directory_ops WHERE state = 'pending' \
                 AND kind NOT IN ('disable', 'strip_groups')"
            }
        };
        let row = sqlx::query(sql).fetch_one(self.reader()).await?;
        opt_time(get(&row, "t")?)
    }

    /// One operation by id.
    pub async fn get_directory_op(&self, id: i64) -> Result<Option<DirOp>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            op_columns!(),
            " FROM directory_ops WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(op_from_row).transpose()
    }
}

impl WriteTx {
    /// Records that an operation is done (in a transaction with others).
    pub async fn finish_directory_op(
        &mut self,
        id: i64,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE directory_ops SET state = 'done', outcome = $1, done_at = $2, attempts = attempts + 1, \
             claimed_until = 0 WHERE id = $3 AND state = 'pending'",
        )
        .bind(outcome)
        .bind(micros(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again (in a transaction).
    pub async fn retry_directory_op(
        &mut self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE directory_ops SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
             claimed_until = 0 WHERE id = $3 AND state = 'pending'",
        )
        .bind(error)
        .bind(micros(next_attempt_at))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records that the directory refused an operation for good: it leaves
    /// the queue (the person's later operations go on) until an admin
    /// retries it. Returns false when it was no longer pending.
    pub async fn fail_directory_op(
        &mut self,
        id: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE directory_ops SET state = 'failed', outcome = 'failed', last_error = $1, done_at = $2, \
             attempts = attempts + 1, claimed_until = 0 WHERE id = $3 AND state = 'pending'",
        )
        .bind(error)
        .bind(micros(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Puts a failed operation back in the queue, due now (an admin fixed
    /// the cause). Returns false when it was not failed.
    pub async fn retry_failed_directory_op(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE directory_ops SET state = 'pending', outcome = NULL, done_at = NULL, next_attempt_at = $1, \
             claimed_until = 0 WHERE id = $2 AND state = 'failed'",
        )
        .bind(micros(now))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Pending operations created before `cutoff` that were not yet alerted
    /// on; marks them alerted (the caller audits them in this transaction).
    pub async fn take_stuck_directory_ops(
        &mut self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<DirOp>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            op_columns!(),
            " FROM directory_ops WHERE state = 'pending' AND alerted = 0 AND created_at < $1 ORDER BY id LIMIT 1000"
        ))
        .bind(micros(cutoff))
        .fetch_all(&mut *self.tx)
        .await?;
        let ops: Vec<DirOp> = rows.iter().map(op_from_row).collect::<Result<_, _>>()?;
        for op in &ops {
            sqlx::query("UPDATE directory_ops SET alerted = 1 WHERE id = $1")
                .bind(op.id)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(ops)
    }
}

/// How much the service owes the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirOpStats {
    pub pending: i64,
    pub failed: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
}

impl Store {
    /// Pending and failed operations, and when the oldest pending one was
    /// queued (index-backed: pending rows are a partial index).
    pub async fn directory_op_stats(&self) -> Result<DirOpStats, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM directory_ops WHERE state = 'pending') AS pending, \
             (SELECT COUNT(*) FROM directory_ops WHERE state = 'failed') AS failed, \
             (SELECT MIN(created_at) FROM directory_ops WHERE state = 'pending') AS oldest",
        )
        .fetch_one(self.reader())
        .await?;
        Ok(DirOpStats {
            pending: crate::convert::get(&row, "pending")?,
            failed: crate::convert::get(&row, "failed")?,
            oldest_pending: crate::convert::opt_time(crate::convert::get(&row, "oldest")?)?,
        })
    }
}
