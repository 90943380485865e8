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
use rusqlite::{Connection, OpenFlags, Params, Row};
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

/// The first row of `sql`, mapped.
pub(crate) fn optional<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    map: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(params)?;
    match rows.next()? {
        Some(r) => map(r).map(Some),
        None => Ok(None),
    }
}

/// Every row of `sql`, mapped (callers bound it with `LIMIT`).
pub(crate) fn all<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    mut map: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(map(r)?);
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
