//! The hot reads on SQLite, straight through the SQLite library.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and
//! hands every row across threads, and its `Any` driver then copies every
//! value once more: a point lookup costs two context switches and a few
//! allocations per column. The reads that callers make by the thousand
//! (an identity, its grant count, a page of its grants) and the audit
//! verification, which reads every event, go through here instead: the
//! same SQL text (SQLite reads `$1` as the first parameter), the same row
//! mappings (`convert::ReadRow`), run on the calling thread.
//!
//! Point reads run inline on the async worker: they take microseconds and
//! read pages that are almost always cached, less than a mutex wait. Long
//! reads (the audit verification) go to `spawn_blocking`.
//!
//! Connections are read-only, so nothing here can change the database; a
//! small idle list is kept, a connection is opened when it is empty.

use crate::StoreError;
use crate::convert::{Col, ReadRow};
use rusqlite::{Connection, OpenFlags, Row, Rows, Statement, ToSql};
use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle connections kept for reuse; more may be open at peaks.
const IDLE: usize = 8;

#[derive(Debug)]
pub(crate) struct LiteReader {
    path: String,
    idle: Mutex<Vec<Connection>>,
}

impl LiteReader {
    /// The reader of a `sqlite:` URL naming a file; `None` for an in-memory
    /// database (whose contents other connections cannot see).
    pub(crate) fn for_url(url: &str) -> Option<LiteReader> {
        let rest = url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or("");
        if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
            return None;
        }
        Some(LiteReader {
            path: path.to_string(),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", self.path)))?;
        c.busy_timeout(Duration::from_secs(10))?;
        // The same plan whatever the arguments: else SQLite re-prepares a
        // statement whenever a `LIMIT $n` or an argument a partial index
        // depends on is bound again (measured: a parse per ListGrants).
        c.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        c.set_prepared_statement_cache_capacity(32);
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < IDLE
        {
            v.push(c);
        }
    }

    /// Runs `f` with a connection, on this thread.
    pub(crate) fn run<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let c = self.take()?;
        let out = f(&c);
        self.give_back(c);
        out
    }

    /// Runs `f` with a connection on tokio's blocking pool: for reads long
    /// enough to matter to the other requests of this worker.
    pub(crate) async fn run_blocking<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.run(f))
            .await
            .map_err(|e| StoreError::Database(format!("a read task failed: {e}")))?
    }
}

/// How often the checkpointer looks at the write-ahead log while it
/// grows, and while nothing is written.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
const CHECKPOINT_IDLE: Duration = Duration::from_millis(500);

/// Copies the write-ahead log into the database file beside the writer.
///
/// SQLite checkpoints on the connection that commits, once the log holds
/// 1,000 pages: in bulk work that was the single writer's time (a sixth
/// of it in a profile of the 100k policy apply: reading the log back,
/// writing the database file, syncing it), while the machine's other core
/// waited. Here a connection of its own does it, as a passive checkpoint
/// that never waits on the writer or the readers; the writer's own
/// checkpoint then finds the work done (or, busy here, leaves it). It
/// runs while the store is open, and stops once every handle on it is
/// dropped.
pub(crate) fn start_checkpointer(reader: &Arc<LiteReader>) {
    let alive = Arc::downgrade(reader);
    let path = reader.path.clone();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut conn: Option<Connection> = None;
        // Frames in the log at the last look: unchanged means idle.
        let mut last_frames = -1i64;
        let mut wait = CHECKPOINT_EVERY;
        loop {
            tokio::time::sleep(wait).await;
            if alive.strong_count() == 0 {
                return;
            }
            let path = path.clone();
            let taken = conn.take();
            let done = tokio::task::spawn_blocking(move || {
                let c = match taken {
                    Some(c) => c,
                    None => match open_checkpointer(&path) {
                        Ok(c) => c,
                        Err(e) => return (None, Err(e)),
                    },
                };
                let r = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    row.get::<_, i64>(1)
                });
                (Some(c), r)
            })
            .await;
            match done {
                Ok((c, r)) => {
                    conn = c;
                    match r {
                        Ok(frames) => {
                            wait = if frames == last_frames {
                                CHECKPOINT_IDLE
                            } else {
                                CHECKPOINT_EVERY
                            };
                            last_frames = frames;
                        }
                        // Busy (another checkpoint runs) or the file is
                        // gone: tried again at the next tick; the writer
                        // checkpoints by itself if the log grows past its
                        // limit meanwhile.
                        Err(e) => tracing::debug!(error = %e, "background checkpoint"),
                    }
                }
                Err(_) => return,
            }
        }
    });
}

fn open_checkpointer(path: &str) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_millis(0))?;
    c.execute_batch("PRAGMA synchronous = FULL;")?;
    Ok(c)
}

/// Binds `args` the way sqlx binds them on SQLite, so that one SQL text
/// means the same on every path: `$N` is argument N wherever it stands
/// (SQLite itself numbers `$`-names by first appearance), `?` the next one.
pub(crate) fn query<'s>(
    st: &'s mut Statement<'_>,
    args: &[&dyn ToSql],
) -> Result<Rows<'s>, StoreError> {
    for i in 1..=st.parameter_count() {
        let n = match st.parameter_name(i) {
            Some(name) => name
                .strip_prefix('$')
                .or_else(|| name.strip_prefix('?'))
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or_else(|| StoreError::Database(format!("parameter {name} is not $N")))?,
            None => i,
        };
        let arg = args.get(n.wrapping_sub(1)).ok_or_else(|| {
            StoreError::Database(format!("parameter {n} of {} is not given", args.len()))
        })?;
        st.raw_bind_parameter(i, arg)?;
    }
    Ok(st.raw_query())
}

/// The column names of a statement, for [`LiteRow`].
pub(crate) fn names(st: &Statement<'_>) -> Vec<String> {
    st.column_names().into_iter().map(String::from).collect()
}

/// A row with its statement's column names. Columns are found by name
/// as on the other paths, but in Rust and trying the next column first
/// (mappings read in select order): rusqlite asks SQLite for every
/// column's name on each lookup.
pub(crate) struct LiteRow<'a, 'r> {
    row: &'a Row<'r>,
    names: &'a [String],
    next: Cell<usize>,
}

impl<'a, 'r> LiteRow<'a, 'r> {
    pub(crate) fn new(row: &'a Row<'r>, names: &'a [String]) -> Self {
        LiteRow {
            row,
            names,
            next: Cell::new(0),
        }
    }

    fn index(&self, col: &str) -> Result<usize, StoreError> {
        let n = self.next.get();
        let i = if self.names.get(n).is_some_and(|c| c == col) {
            n
        } else {
            self.names
                .iter()
                .position(|c| c.eq_ignore_ascii_case(col))
                .ok_or_else(|| StoreError::Corrupt(format!("no column {col} in the result")))?
        };
        self.next.set(i + 1);
        Ok(i)
    }
}

impl ReadRow for LiteRow<'_, '_> {
    fn col<T: Col>(&self, col: &str) -> Result<T, StoreError> {
        T::from_lite(self.row, self.index(col)?, col)
    }
}

/// Every row of `sql`, mapped (callers bound it with `LIMIT`).
pub(crate) fn all<T>(
    c: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
    map: impl FnMut(&LiteRow<'_, '_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    all_of(&mut st, args, map)
}

/// [`all`] of a statement made for one read (not kept in the
/// connection's cache of prepared statements).
pub(crate) fn all_once<T>(
    c: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
    map: impl FnMut(&LiteRow<'_, '_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut st = c.prepare(sql)?;
    all_of(&mut st, args, map)
}

fn all_of<T>(
    st: &mut Statement<'_>,
    args: &[&dyn ToSql],
    mut map: impl FnMut(&LiteRow<'_, '_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let names = names(st);
    let mut rows = query(st, args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(map(&LiteRow::new(r, &names))?);
    }
    Ok(out)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    StoreError::Conflict(e.to_string())
                }
                ErrorCode::CannotOpen | ErrorCode::NotADatabase | ErrorCode::SystemIoFailure => {
                    StoreError::Unavailable(e.to_string())
                }
                ErrorCode::DatabaseCorrupt => StoreError::Corrupt(e.to_string()),
                _ => StoreError::Database(e.to_string()),
            },
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnName(_)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$N` means argument N wherever it stands and however often, as sqlx
    /// binds it; SQLite alone would number `$`-names by first appearance.
    #[test]
    fn numbered_parameters_bind_as_sqlx_binds_them() -> Result<(), StoreError> {
        let c = Connection::open_in_memory()?;
        let one = |sql: &str, args: &[&dyn ToSql]| -> Result<Vec<String>, StoreError> {
            all(&c, sql, args, |r| r.col::<String>("v"))
        };
        let got = one(
            "SELECT $3 || '-' || $1 || '-' || $2 || '-' || $1 AS v",
            &[&"a", &"b", &"c"],
        )?;
        assert_eq!(got, ["c-a-b-a"]);
        assert_eq!(one("SELECT ? || ? AS v", &[&"x", &"y"])?, ["xy"]);
        assert!(one("SELECT $2 AS v", &[&"only one"]).is_err());
        Ok(())
    }

    /// Columns are found by name in any order, as on the other paths.
    #[test]
    fn columns_by_name_in_any_order() -> Result<(), StoreError> {
        let c = Connection::open_in_memory()?;
        let got = all(&c, "SELECT 1 AS a, 'x' AS b, NULL AS c", &[], |r| {
            Ok((
                r.col::<String>("b")?,
                r.col::<i64>("a")?,
                r.col::<Option<String>>("C")?,
                r.col::<i64>("a")?,
            ))
        })?;
        assert_eq!(got, [("x".to_string(), 1, None, 1)]);
        assert!(all(&c, "SELECT 1 AS a", &[], |r| r.col::<i64>("z")).is_err());
        Ok(())
    }
}
