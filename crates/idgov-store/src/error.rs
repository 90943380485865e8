//! Store errors, and the one mapping from sqlx driver errors to them.

use thiserror::Error;

/// An error of the store, with a stable code (see [`StoreError::code`]).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached or timed out.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or state conflict; the caller may re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The policy in force changed while a change was decided under the old
    /// one: reload it and decide again.
    #[error("the policy changed to version {0} during this change")]
    PolicyChanged(i64),
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored row could not be read back; the database was altered.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// The stable code, e.g. `IDGOV_STORE_UNAVAILABLE`.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "IDGOV_STORE_UNAVAILABLE",
            StoreError::Conflict(_) | StoreError::PolicyChanged(_) => "IDGOV_STORE_CONFLICT",
            StoreError::NotFound(_) => "IDGOV_NOT_FOUND",
            StoreError::Corrupt(_) => "IDGOV_STORE_CORRUPT",
            StoreError::Config(_) => "IDGOV_STORE_CONFIG",
            StoreError::Migration(_) => "IDGOV_STORE_MIGRATION",
            StoreError::Database(_) => "IDGOV_STORE_ERROR",
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match &e {
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_string()),
                _ => {
                    // PostgreSQL serialization failure / deadlock, SQLite busy.
                    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                    if matches!(code.as_str(), "40001" | "40P01" | "5" | "6") {
                        StoreError::Conflict(db.message().to_string())
                    } else {
                        StoreError::Database(db.message().to_string())
                    }
                }
            },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}
