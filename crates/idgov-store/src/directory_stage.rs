//! What a directory sync reads from the directory, staged in the store
//! while it runs (migration `0017_directory_stage`), so that the sync pages
//! through the directory beside idgov's own people instead of holding
//! either whole. Scratch rows under the sync's run id: nothing here is
//! audited or kept once the sync ends.

use crate::bulk::values;
use crate::convert::{FromRow, OwnedArg, ReadRow, get, micros};
use crate::{Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use idgov_domain::drift::{AccountView, Drift, Membership, normalize_dn};
use sqlx::AssertSqlSafe;

/// Rows per INSERT statement.
const INSERT_ROWS: usize = 500;

/// Places (`seq`) per DELETE when a stage is dropped, each its own short
/// statement: at most this many rows.
const DELETE_ROWS: i64 = 5000;

/// A drift finding staged before it is recorded: its place in the order
/// the sync records drift (kind first, then as found) and what the sync
/// decided to do about it when it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedDrift {
    /// The kind's place in the recording order.
    pub kind_rank: i64,
    /// The order it was found in, unique within the run.
    pub seq: i64,
    pub drift: Drift,
    /// `reported`, `remediated` or `imported`.
    pub action: String,
}

/// A statement being bound.
type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// Inserts `rows` into `into` (a table and its `cols` columns),
/// [`INSERT_ROWS`] to a statement; `bind` binds the values of the row at an
/// index of `rows`.
pub(crate) async fn insert_rows<T>(
    tx: &mut WriteTx,
    into: &str,
    cols: usize,
    rows: &[T],
    bind: impl Fn(Query, usize, &T) -> Query,
) -> Result<(), StoreError> {
    for (n, chunk) in rows.chunks(INSERT_ROWS).enumerate() {
        let sql = format!(
            "INSERT INTO {into} VALUES {}",
            values(tx.backend, chunk.len(), cols)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for (i, row) in chunk.iter().enumerate() {
            q = bind(q, n * INSERT_ROWS + i, row);
        }
        q.execute(&mut *tx.tx).await?;
    }
    Ok(())
}

impl WriteTx {
    /// Opens the stage of run `run_id`.
    pub async fn open_directory_stage(
        &mut self,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        open_stage(self, "directory_stage_runs", run_id, now).await
    }

    /// Stages accounts as the directory listed them, numbered from
    /// `first_seq`.
    pub async fn stage_directory_accounts(
        &mut self,
        run_id: &str,
        first_seq: i64,
        accounts: &[AccountView],
    ) -> Result<(), StoreError> {
        insert_rows(
            self,
            "directory_stage_accounts (run_id, seq, dn, dn_norm, employee_id, disabled)",
            6,
            accounts,
            |q, i, a| {
                q.bind(run_id.to_string())
                    .bind(first_seq + i as i64)
                    .bind(a.dn.clone())
                    .bind(normalize_dn(&a.dn))
                    .bind(a.employee_id.clone())
                    .bind(i64::from(a.disabled))
            },
        )
        .await
    }

    /// Stages memberships of managed groups as the groups listed them,
    /// numbered from `first_seq`.
    pub async fn stage_directory_members(
        &mut self,
        run_id: &str,
        first_seq: i64,
        members: &[Membership],
    ) -> Result<(), StoreError> {
        insert_rows(
            self,
            "directory_stage_members (run_id, seq, group_dn, member, member_norm)",
            5,
            members,
            |q, i, m| {
                q.bind(run_id.to_string())
                    .bind(first_seq + i as i64)
                    .bind(m.group_dn.clone())
                    .bind(m.member.clone())
                    .bind(normalize_dn(&m.member))
            },
        )
        .await
    }

    /// Stages drift found, with what is to be done about it.
    pub async fn stage_drift(
        &mut self,
        run_id: &str,
        drift: &[StagedDrift],
    ) -> Result<(), StoreError> {
        insert_rows(
            self,
            "directory_stage_drift (run_id, kind_rank, seq, kind, employee_id, account_dn, group_dn, \
             entitlement_id, action)",
            9,
            drift,
            |q, _, d| {
                q.bind(run_id.to_string())
                    .bind(d.kind_rank)
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

impl FromRow for AccountView {
    fn from_row(r: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(AccountView {
            dn: r.col("dn")?,
            employee_id: r.col("employee_id")?,
            disabled: r.col::<i64>("disabled")? != 0,
        })
    }
}

impl FromRow for Membership {
    fn from_row(r: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(Membership {
            group_dn: r.col("group_dn")?,
            member: r.col("member")?,
        })
    }
}

/// A row with its place in the directory's order (`seq`).
struct Placed<T>(i64, T);

impl<T: FromRow> FromRow for Placed<T> {
    fn from_row(r: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(Placed(r.col("seq")?, T::from_row(r)?))
    }
}

impl FromRow for StagedDrift {
    fn from_row(r: &impl ReadRow) -> Result<Self, StoreError> {
        Ok(StagedDrift {
            kind_rank: r.col("kind_rank")?,
            seq: r.col("seq")?,
            drift: crate::directory_sync::drift_from_row(r)?,
            action: r.col("action")?,
        })
    }
}

impl Store {
    /// Staged accounts naming an employee id after `after` up to `last`
    /// (the bounds of a page of identities, compared as identities are
    /// ordered), by employee id and then in the directory's order.
    pub async fn staged_accounts_between(
        &self,
        run_id: &str,
        after: &str,
        last: &str,
    ) -> Result<Vec<AccountView>, StoreError> {
        const SQL: &str = "SELECT dn, employee_id, disabled FROM directory_stage_accounts \
             WHERE run_id = $1 AND employee_id > $2 AND employee_id <= $3 ORDER BY employee_id, seq";
        self.page_rows(SQL.into(), vec![run_id.into(), after.into(), last.into()])
            .await
    }

    /// The staged memberships of the accounts [`Store::staged_accounts_between`]
    /// gives, each once, by employee id and then in the directory's order.
    /// (Read from the accounts' side, so a page reads only its own
    /// memberships.)
    pub async fn staged_memberships_between(
        &self,
        run_id: &str,
        after: &str,
        last: &str,
    ) -> Result<Vec<Membership>, StoreError> {
        const SQL: &str = "SELECT m.seq AS seq, m.group_dn AS group_dn, m.member AS member \
             FROM directory_stage_accounts a \
             JOIN directory_stage_members m ON m.run_id = a.run_id AND m.member_norm = a.dn_norm \
             WHERE a.run_id = $1 AND a.employee_id > $2 AND a.employee_id <= $3 ORDER BY a.employee_id, m.seq";
        let rows: Vec<Placed<Membership>> = self
            .page_rows(SQL.into(), vec![run_id.into(), after.into(), last.into()])
            .await?;
        // Two accounts whose DNs differ only in spelling list a member once.
        let mut seen = std::collections::HashSet::new();
        Ok(rows
            .into_iter()
            .filter(|Placed(seq, _)| seen.insert(*seq))
            .map(|Placed(_, m)| m)
            .collect())
    }

    /// Staged accounts no identity owns (no employee id, or one no identity
    /// has), after `after_seq` in the directory's order, with their seq.
    pub async fn staged_orphan_accounts(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, AccountView)>, StoreError> {
        const SQL: &str = "SELECT seq, dn, employee_id, disabled FROM directory_stage_accounts a \
             WHERE run_id = $1 AND seq > $2 AND (employee_id IS NULL OR NOT EXISTS \
             (SELECT 1 FROM identities i WHERE i.employee_id = a.employee_id)) ORDER BY seq LIMIT $3";
        let args = vec![
            run_id.into(),
            OwnedArg::from(after_seq),
            OwnedArg::from(limit),
        ];
        let rows: Vec<Placed<AccountView>> = self.page_rows(SQL.into(), args).await?;
        Ok(rows.into_iter().map(|Placed(s, a)| (s, a)).collect())
    }

    /// Staged memberships whose member is no account an identity owns,
    /// after `after_seq` in the directory's order, with their seq.
    pub async fn staged_unowned_memberships(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Membership)>, StoreError> {
        const SQL: &str = "SELECT seq, group_dn, member FROM directory_stage_members m \
             WHERE run_id = $1 AND seq > $2 AND NOT EXISTS (SELECT 1 FROM directory_stage_accounts a \
             JOIN identities i ON i.employee_id = a.employee_id \
             WHERE a.run_id = $1 AND a.dn_norm = m.member_norm) ORDER BY seq LIMIT $3";
        let args = vec![
            run_id.into(),
            OwnedArg::from(after_seq),
            OwnedArg::from(limit),
        ];
        let rows: Vec<Placed<Membership>> = self.page_rows(SQL.into(), args).await?;
        Ok(rows.into_iter().map(|Placed(s, m)| (s, m)).collect())
    }

    /// Staged drift after `(kind_rank, seq)`, in recording order.
    pub async fn staged_drift(
        &self,
        run_id: &str,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<StagedDrift>, StoreError> {
        const SQL: &str = "SELECT kind_rank, seq, kind, employee_id, account_dn, group_dn, entitlement_id, action \
             FROM directory_stage_drift WHERE run_id = $1 AND (kind_rank > $2 OR (kind_rank = $2 AND seq > $3)) \
             ORDER BY kind_rank, seq LIMIT $4";
        let args = vec![
            run_id.into(),
            OwnedArg::from(after.0),
            OwnedArg::from(after.1),
            OwnedArg::from(limit),
        ];
        self.page_rows(SQL.into(), args).await
    }

    /// Runs whose stage was opened before `before` (left by a crash).
    pub async fn stale_directory_stages(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        stale_stages(self, "directory_stage_runs", before).await
    }

    /// Brings the planner's statistics of the staged accounts and
    /// memberships up to date, once they are staged (see [`analyze`]).
    pub async fn analyze_directory_stage(&self) -> Result<(), StoreError> {
        analyze(
            self,
            &["directory_stage_accounts", "directory_stage_members"],
        )
        .await
    }

    /// Drops the stage of `run_id`, a few thousand rows per statement so
    /// that no statement holds the writer for long.
    pub async fn drop_directory_stage(&self, run_id: &str) -> Result<(), StoreError> {
        drop_stage(
            self,
            "directory_stage_runs",
            &[
                "directory_stage_accounts",
                "directory_stage_members",
                "directory_stage_drift",
            ],
            run_id,
        )
        .await
    }
}

/// Refreshes PostgreSQL's statistics of stage `tables` (ANALYZE, which
/// samples a few thousand rows). A stage goes from empty to a million rows
/// within minutes, faster than autovacuum notices: planned with the
/// statistics of an empty table, a page's lookups (e.g. the roster's
/// management-line join) ran as scans of the whole stage, over a minute
/// per page instead of 50 ms. SQLite plans by its indexes without
/// statistics: nothing to do there.
pub(crate) async fn analyze(store: &Store, tables: &[&str]) -> Result<(), StoreError> {
    if store.backend != crate::Backend::Postgres {
        return Ok(());
    }
    for table in tables {
        sqlx::query(AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(store.writer())
            .await?;
    }
    Ok(())
}

/// Opens run `run_id` of a stage (its row in the stage's `runs` table,
/// which [`stale_stages`] reads).
pub(crate) async fn open_stage(
    tx: &mut WriteTx,
    runs: &str,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO {runs} (run_id, started_at) VALUES ($1, $2)");
    sqlx::query(AssertSqlSafe(sql))
        .bind(run_id)
        .bind(micros(now))
        .execute(&mut *tx.tx)
        .await?;
    Ok(())
}

/// Up to 100 runs of a stage (`runs`: its table of runs) opened before
/// `before`.
pub(crate) async fn stale_stages(
    store: &Store,
    runs: &str,
    before: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let sql = format!("SELECT run_id FROM {runs} WHERE started_at < $1 ORDER BY run_id LIMIT 100");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(micros(before))
        .fetch_all(store.reader())
        .await?;
    rows.iter().map(|r| get(r, "run_id")).collect()
}

/// Deletes run `run_id` of a stage: the rows of each of `tables` (each
/// row's `seq` unique in its run), a range of [`DELETE_ROWS`] places per
/// statement, then the run itself.
pub(crate) async fn drop_stage(
    store: &Store,
    runs: &str,
    tables: &[&str],
    run_id: &str,
) -> Result<(), StoreError> {
    for table in tables {
        // By ranges of places, a range of the (run_id, seq) key of the
        // large stages: a DELETE … IN (SELECT … LIMIT) cost PostgreSQL
        // 1.5 s per 200,000 staged roster entries.
        let bounds = sqlx::query(AssertSqlSafe(format!(
            "SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM {table} WHERE run_id = $1"
        )))
        .bind(run_id)
        .fetch_one(store.writer())
        .await?;
        let (Some(lo), Some(hi)) = (
            get::<Option<i64>>(&bounds, "lo")?,
            get::<Option<i64>>(&bounds, "hi")?,
        ) else {
            continue;
        };
        let sql = format!("DELETE FROM {table} WHERE run_id = $1 AND seq >= $2 AND seq <= $3");
        let mut from = lo;
        loop {
            let to = from.saturating_add(DELETE_ROWS - 1).min(hi);
            sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(run_id)
                .bind(from)
                .bind(to)
                .execute(store.writer())
                .await?;
            if to >= hi {
                break;
            }
            from = to + 1;
            tokio::task::yield_now().await;
        }
    }
    let sql = format!("DELETE FROM {runs} WHERE run_id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(run_id)
        .execute(store.writer())
        .await?;
    Ok(())
}
