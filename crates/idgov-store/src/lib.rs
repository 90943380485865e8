//! idgov's durable store: one interface over two backends, SQLite (the
//! zero-configuration default) and PostgreSQL, through sqlx's `Any` driver.
//! Both run the same SQL; the few dialect differences live in [`Backend`].
//!
//! Reads go through [`Store`]; every change goes through a [`WriteTx`], which
//! appends the audit events of the change to the hash chain in the same
//! transaction: if the audit write fails, the change fails.
//!
//! Times are stored as microseconds since the Unix epoch (UTC).

/// The columns of an identities row, as `identities::identity_from_row` reads them.
macro_rules! identity_columns {
    () => {
        "employee_id, display_name, email, department, title, job_code, location, cost_center, \
         manager_id, employment_type, background_check, clearance, start_date, end_date, status, \
         attrs_effective_at, status_effective_at, created_at, updated_at, background_check_date, history"
    };
}

/// The columns of a grants row, as `grants::grant_from_row` reads them.
macro_rules! grant_columns {
    () => {
        "id, employee_id, entitlement_id, classification, source, source_ref, granted_at, expires_at, \
         approvers, justification, revoked_at, revoke_reason, review_pending, exception_id"
    };
}

/// Runs `$body` with `$pool` bound to the pool for a hot read on sqlx:
/// PostgreSQL's native pool when there is one, else the `Any` reader. The
/// body is compiled for each (its rows are `PgRow` or `AnyRow`, both
/// `convert::ReadRow`).
macro_rules! read_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.fast() {
            $crate::Fast::Pg($pool) => $body,
            _ => {
                let $pool = $store.reader();
                $body
            }
        }
    };
}

mod access;
mod audit;
pub mod backup;
mod bulk;
mod bulk_jobs;
mod coalesce;
pub use coalesce::BatchStats;
mod convert;
mod directory_ops;
mod directory_stage;
mod directory_sync;
pub mod error;
pub mod grants;
mod held;
mod hr_events;
mod identities;
mod lite;
mod policies;
mod review;
mod roster_stage;
mod tx;
pub mod web;
pub mod webhooks;

pub use access::RequestFilter;
pub use audit::{AuditFilter, Checkpoint, VerifyReport};
pub use bulk::{EventRow, GrantRow};
pub use bulk_jobs::BulkJob;
pub use directory_ops::{DirOp, DirOpKind, DirOpState, Lane, NewDirOp};
pub use directory_stage::StagedDrift;
pub use directory_sync::{DriftRow, SyncRun};
pub use error::StoreError;
pub use held::{HeldChange, HeldKind, HeldState};
pub use hr_events::{EventFilter, EventsAfter, RecordedEvent, StoredSync};
pub use identities::IdentityFilter;
pub use policies::StoredPolicy;
pub use review::{ItemFilter, ReviewerCounts, ScopedGrant};
pub use roster_stage::StagedEntry;
pub use tx::WriteTx;
pub use web::{WebLogin, WebSession};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, SqlSafeStr};
use std::path::Path;
use std::time::Duration;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The suffix of a SELECT that locks the rows it reads until commit:
    /// PostgreSQL needs it; SQLite's single writer holds everything already.
    /// Rows claimed by one worker at a time: others skip them (PostgreSQL).
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Whether the statements of [`bulk::stable_chunks`] are kept prepared:
    /// on PostgreSQL, where parsing and planning a statement is a server
    /// round of work each time; SQLite (in-process) parses cheaply, and
    /// keeps its plain chunks.
    pub(crate) fn prepares(self) -> bool {
        self == Backend::Postgres
    }
}

/// Prepared statements kept per PostgreSQL connection: the chunk sizes of
/// [`bulk::stable_chunks`] times the statements that use them, with room.
const PG_STATEMENT_CACHE: usize = 400;

/// The store. Cheap to clone; clones share the connection pools.
#[derive(Clone, Debug)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    fast: Fast,
    /// Told when a commit of this process appended audit events: the
    /// webhook deliverer waits on it instead of polling.
    appended: std::sync::Arc<tokio::sync::Notify>,
    /// Concurrent hot reads gathered into one query (PostgreSQL).
    batches: std::sync::Arc<Batches>,
}

/// How many batches of one kind run at once. Two, measured on 2 cores with
/// 64 clients (BENCHMARKS.md, 2026-12-01): against four, GetIdentity went
/// from 11.3–13.2k/s (p99 11.7–12.4 ms) to 13.4–15.1k/s (p99 8.9–10.6 ms)
/// and ListGrants from 9.3–11.3k/s to 10.8–13.0k/s; one leader was no
/// better than two, and two keep a slow batch from stopping every reader.
const BATCH_LEADERS: usize = 2;

/// The hot reads PostgreSQL answers in batches (see `coalesce`).
#[derive(Debug)]
pub(crate) struct Batches {
    /// Their own connections (PostgreSQL only).
    pub(crate) pool: Option<sqlx::PgPool>,
    pub(crate) identities:
        coalesce::Coalescer<String, Option<(idgov_domain::identity::Identity, i64)>>,
    #[allow(clippy::type_complexity)]
    pub(crate) grant_pages: coalesce::Coalescer<grants::PageRequest, Option<grants::Page>>,
}

impl Batches {
    /// At most [`BATCH_LEADERS`] batches of a kind at once, of at most 64
    /// requests each.
    fn new(pool: Option<sqlx::PgPool>) -> Self {
        Batches {
            pool,
            identities: coalesce::Coalescer::new(BATCH_LEADERS, 64),
            grant_pages: coalesce::Coalescer::new(BATCH_LEADERS, 64),
        }
    }
}

/// The native read path of the hot reads (point lookups by the thousand,
/// the audit verification), beside the `Any` pools that keep one SQL text
/// for both backends: the same SQL and row mappings, without `Any`'s copy
/// of every value (and on SQLite without sqlx's thread hop per row).
#[derive(Clone, Debug)]
pub(crate) enum Fast {
    Lite(std::sync::Arc<lite::LiteReader>),
    Pg(sqlx::PgPool),
    /// An in-memory SQLite database: only the `Any` pools see it.
    None,
}

const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA busy_timeout = 10000;";

/// The writer's: the same, with a 64 MiB page cache, and checkpointing
/// left to the background checkpointer (`lite::start_checkpointer`) until
/// the log passes 64 MiB (16,384 pages): only if that falls behind does the
/// writer checkpoint by itself.
const SQLITE_WRITER_PRAGMAS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA busy_timeout = 10000; \
     PRAGMA cache_size = -65536; \
     PRAGMA wal_autocheckpoint = 16384;";

/// The migration files of the folder `migrations/$dir`, in order. Both
/// folders hold the same file names (a test checks); a new migration is one
/// more line here.
macro_rules! migrations {
    ($dir:literal) => {
        [
            (
                "initial",
                include_str!(concat!("../../../migrations/", $dir, "/0001_initial.sql")),
            ),
            (
                "directory_ops",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0002_directory_ops.sql"
                )),
            ),
            (
                "directory_sync",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0003_directory_sync.sql"
                )),
            ),
            (
                "history",
                include_str!(concat!("../../../migrations/", $dir, "/0004_history.sql")),
            ),
            (
                "bulk_jobs",
                include_str!(concat!("../../../migrations/", $dir, "/0005_bulk_jobs.sql")),
            ),
            (
                "access_requests",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0006_access_requests.sql"
                )),
            ),
            (
                "campaigns",
                include_str!(concat!("../../../migrations/", $dir, "/0007_campaigns.sql")),
            ),
            (
                "web_sessions",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0008_web_sessions.sql"
                )),
            ),
            (
                "review_shown",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0009_review_shown.sql"
                )),
            ),
            (
                "audit_checkpoints",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0010_audit_checkpoints.sql"
                )),
            ),
            (
                "webhooks",
                include_str!(concat!("../../../migrations/", $dir, "/0011_webhooks.sql")),
            ),
            (
                "webhook_api",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0012_webhook_api.sql"
                )),
            ),
            (
                "request_reminders",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0013_request_reminders.sql"
                )),
            ),
            (
                "review_items_lean",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0014_review_items_lean.sql"
                )),
            ),
            (
                "bulk_job_items",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0015_bulk_job_items.sql"
                )),
            ),
            (
                "roster_sync_events",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0016_roster_sync_events.sql"
                )),
            ),
            (
                "directory_stage",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0017_directory_stage.sql"
                )),
            ),
            (
                "roster_stage",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0018_roster_stage.sql"
                )),
            ),
            (
                "bulk_job_holder",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0019_bulk_job_holder.sql"
                )),
            ),
            (
                "sync_claim",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0020_sync_claim.sql"
                )),
            ),
            (
                "audit_subject",
                include_str!(concat!(
                    "../../../migrations/",
                    $dir,
                    "/0021_audit_subject.sql"
                )),
            ),
        ]
    };
}

fn migrator(backend: Backend) -> Migrator {
    let files = match backend {
        Backend::Sqlite => migrations!("sqlite"),
        Backend::Postgres => migrations!("postgres"),
    };
    Migrator::with_migrations(
        files
            .into_iter()
            .zip(1..)
            .map(|((name, sql), version)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// `url` with room for [`PG_STATEMENT_CACHE`] prepared statements, unless
/// it says how many itself.
fn with_statement_cache(url: &str) -> String {
    if url.contains("statement-cache-capacity=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}statement-cache-capacity={PG_STATEMENT_CACHE}")
}

impl Store {
    /// Opens the store at `url` (`sqlite:PATH` or `postgres://…`) and runs
    /// pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL {:?}; use postgres://… or sqlite:PATH",
                redact_url(url)
            )));
        };
        let mut batch_pool = None;
        let (read, write, fast) = match backend {
            Backend::Sqlite => {
                let opts = |pragmas: &'static str| {
                    AnyPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(30))
                        .after_connect(move |conn, _| {
                            Box::pin(async move {
                                conn.execute(pragmas).await?;
                                Ok(())
                            })
                        })
                };
                // One writer connection: SQLite serializes writers anyway, and
                // queueing in the pool beats SQLITE_BUSY. Its page cache is
                // larger than SQLite's default 2 MiB: bulk work touches the
                // indexes of tables of a million rows, and re-reading their
                // pages from the OS on every statement cost it a fifth of its
                // time in copies (profile of a 100k policy apply).
                let write = opts(SQLITE_WRITER_PRAGMAS)
                    .max_connections(1)
                    .connect(url)
                    .await?;
                let read = opts(SQLITE_PRAGMAS).max_connections(4).connect(url).await?;
                let fast = match lite::LiteReader::for_url(url) {
                    Some(l) => {
                        let l = std::sync::Arc::new(l);
                        lite::start_checkpointer(&l);
                        Fast::Lite(l)
                    }
                    None => Fast::None,
                };
                (read, write, fast)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(&with_statement_cache(url))
                    .await?;
                // Opened lazily: a connection when a hot read first needs one.
                let native = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_lazy(url)?;
                // The batched point reads: generic plans, planned once per
                // connection (a custom plan per `= ANY($1)` batch cost more
                // server CPU than the lookups themselves).
                let opts = url
                    .parse::<sqlx::postgres::PgConnectOptions>()?
                    .options([("plan_cache_mode", "force_generic_plan")]);
                batch_pool = Some(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(BATCH_LEADERS as u32)
                        .acquire_timeout(Duration::from_secs(30))
                        .connect_lazy_with(opts),
                );
                (pool.clone(), pool, Fast::Pg(native))
            }
        };
        migrator(backend)
            .run(&write)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Store {
            read,
            write,
            backend,
            fast,
            appended: std::sync::Arc::new(tokio::sync::Notify::new()),
            batches: std::sync::Arc::new(Batches::new(batch_pool)),
        })
    }

    /// Opens (creating it if needed) the SQLite store in `data_dir`.
    pub async fn open_data_dir(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Config(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join("idgov.db");
        Store::open(&format!("sqlite:{}?mode=rwc", path.display())).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        WriteTx::begin(&self.write, self.backend, self.appended.clone()).await
    }

    /// Begins a read-only transaction (a consistent view for long reads
    /// that must not hold the writer).
    pub async fn begin_read(&self) -> Result<WriteTx, StoreError> {
        WriteTx::begin_read(&self.read, self.backend).await
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
        if let Fast::Pg(p) = &self.fast {
            p.close().await;
        }
        if let Some(p) = &self.batches.pool {
            p.close().await;
        }
    }

    /// Brings the planner's statistics of the big tables up to date when
    /// they have drifted (PostgreSQL; SQLite plans without them). Bulk work
    /// calls it as it goes: while a policy apply or a roster import grows a
    /// table from nothing, autovacuum's statistics lag behind, and
    /// PostgreSQL then plans a page's lookups as scans of everything written
    /// so far (measured: work growing with the square of the organisation).
    /// A table is analysed only when a fifth of it (at least 1,000 rows)
    /// changed since its last analysis, so calling it often costs one small
    /// query. A failure is logged and changes nothing.
    pub async fn refresh_statistics(&self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let drifted = sqlx::query(
            "SELECT c.relname::text AS name FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.relid IN ('identities'::regclass, 'grants'::regclass) \
             AND s.n_mod_since_analyze > 0.2 * GREATEST(c.reltuples, 1000)",
        )
        .fetch_all(&self.write)
        .await;
        let drifted = match drifted {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the planner's statistics state");
                return;
            }
        };
        for row in drifted {
            let table = match sqlx::Row::try_get::<String, _>(&row, "name") {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the planner's statistics state");
                    continue;
                }
            };
            let sql = match table.as_str() {
                "identities" => "ANALYZE identities",
                "grants" => "ANALYZE grants",
                _ => continue,
            };
            let started = std::time::Instant::now();
            match sqlx::query(sql).execute(&self.write).await {
                Ok(_) => tracing::debug!(
                    table,
                    took_ms = started.elapsed().as_millis() as u64,
                    "planner statistics refreshed"
                ),
                Err(e) => {
                    tracing::warn!(table, error = %e, "cannot refresh the planner's statistics")
                }
            }
        }
    }

    /// What the batched hot reads did so far (PostgreSQL; all zero on
    /// SQLite, which reads on the caller's thread).
    pub fn batch_stats(&self) -> BatchStats {
        self.batches.identities.stats() + self.batches.grant_pages.stats()
    }

    /// Notified after this process commits audit events (one waiter).
    pub fn audit_appended(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.appended.clone()
    }

    pub(crate) fn fast(&self) -> &Fast {
        &self.fast
    }

    /// The rows of a hot read (one SQL text, `$N` arguments) on the native
    /// path: the SQLite library on this thread, PostgreSQL's native pool,
    /// else the `Any` reader. Every hot point read goes through here.
    pub(crate) async fn hot_rows<T: convert::FromRow>(
        &self,
        sql: &'static str,
        args: &[convert::Arg<'_>],
    ) -> Result<Vec<T>, StoreError> {
        if let Fast::Lite(l) = self.fast() {
            let args: Vec<&dyn rusqlite::ToSql> =
                args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
            return l.run(|c| lite::all(c, sql, &args, |r| T::from_row(r)));
        }
        read_pool!(self, |pool| {
            let mut q = sqlx::query(sql);
            for a in args {
                q = match *a {
                    convert::Arg::Text(s) => q.bind(s),
                    convert::Arg::Int(i) => q.bind(i),
                };
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter().map(T::from_row).collect()
        })
    }

    /// The rows of a page read (thousands of rows, committed data) on the
    /// native path: on SQLite the SQLite library on tokio's blocking pool
    /// (a page takes milliseconds, too long for an async worker), on
    /// PostgreSQL its native pool, else the `Any` reader. `sql` is a fixed
    /// text (prepared once per connection) or one made for this read
    /// (`Cow::Owned`, not kept).
    pub(crate) async fn page_rows<T: convert::FromRow + Send + 'static>(
        &self,
        sql: std::borrow::Cow<'static, str>,
        args: Vec<convert::OwnedArg>,
    ) -> Result<Vec<T>, StoreError> {
        if let Fast::Lite(l) = self.fast() {
            return l
                .run_blocking(move |c| {
                    let binds: Vec<&dyn rusqlite::ToSql> =
                        args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
                    match &sql {
                        std::borrow::Cow::Borrowed(sql) => {
                            lite::all(c, sql, &binds, |r| T::from_row(r))
                        }
                        std::borrow::Cow::Owned(sql) => {
                            lite::all_once(c, sql, &binds, |r| T::from_row(r))
                        }
                    }
                })
                .await;
        }
        let keep = matches!(sql, std::borrow::Cow::Borrowed(_));
        read_pool!(self, |pool| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.into_owned())).persistent(keep);
            for a in &args {
                q = match a {
                    convert::OwnedArg::Text(s) => q.bind(s.clone()),
                    convert::OwnedArg::Int(i) => q.bind(*i),
                };
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter().map(T::from_row).collect()
        })
    }

    pub(crate) fn reader(&self) -> &AnyPool {
        &self.read
    }

    pub(crate) fn writer(&self) -> &AnyPool {
        &self.write
    }
}

/// Hides the password of a database URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, migrator};

    fn files(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../migrations")
            .join(dir);
        let mut v: Vec<String> = std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn migrations_are_paired_and_all_embedded() {
        let sqlite = files("sqlite");
        assert_eq!(
            sqlite,
            files("postgres"),
            "the same file names in both folders"
        );
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let embedded: Vec<String> = migrator(backend)
                .iter()
                .map(|m| format!("{:04}_{}.sql", m.version, m.description))
                .collect();
            assert_eq!(
                embedded, sqlite,
                "{backend:?}: every migration file is embedded, in order"
            );
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://idgov:s3cret@db:5432/idgov"),
            "postgres://idgov:***@db:5432/idgov"
        );
        assert_eq!(super::redact_url("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
    }
}
