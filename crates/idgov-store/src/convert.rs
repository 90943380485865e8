//! Conversions between rows and domain values.

use crate::StoreError;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::str::FromStr;

pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn time(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::<Utc>::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} is out of range")))
}

pub fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    us.map(time).transpose()
}

pub fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(StoreError::from)
}

/// A row of any of the store's three ways of reading: sqlx's `Any` driver,
/// native PostgreSQL, and the direct SQLite reader of the hot reads
/// ([`crate::lite`]). The row mappings that those paths share
/// (`identity_from_row`, `grant_from_row`, `record_from_row`) are written
/// once against it.
pub trait ReadRow {
    fn col<T: Col>(&self, col: &str) -> Result<T, StoreError>;
}

/// A column type every read path decodes the same way.
pub trait Col: Sized {
    fn from_any(row: &AnyRow, col: &str) -> Result<Self, StoreError>;
    fn from_pg(row: &sqlx::postgres::PgRow, col: &str) -> Result<Self, StoreError>;
    /// Column `i` (named `col`, for the error) of a row of the SQLite reader
    /// (found by name in `lite::LiteRow`).
    fn from_lite(row: &rusqlite::Row<'_>, i: usize, col: &str) -> Result<Self, StoreError>;
}

macro_rules! col_type {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn from_any(row: &AnyRow, col: &str) -> Result<Self, StoreError> {
                row.try_get(col).map_err(StoreError::from)
            }
            fn from_pg(row: &sqlx::postgres::PgRow, col: &str) -> Result<Self, StoreError> {
                row.try_get(col).map_err(StoreError::from)
            }
            fn from_lite(row: &rusqlite::Row<'_>, i: usize, col: &str) -> Result<Self, StoreError> {
                row.get(i).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
            }
        }
    )*};
}
col_type!(String, i64, Option<String>, Option<i64>);

/// What a row of a hot read becomes ([`crate::Store::hot_rows`]).
pub trait FromRow: Sized {
    fn from_row(row: &impl ReadRow) -> Result<Self, StoreError>;
}

/// An argument of a hot read.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => s.to_sql(),
            Arg::Int(i) => i.to_sql(),
        }
    }
}

/// An argument of a page read ([`crate::Store::page_rows`]), owned: the
/// read may run on another thread.
#[derive(Debug, Clone)]
pub enum OwnedArg {
    Text(String),
    Int(i64),
}

impl From<&str> for OwnedArg {
    fn from(s: &str) -> Self {
        OwnedArg::Text(s.to_string())
    }
}

impl From<i64> for OwnedArg {
    fn from(i: i64) -> Self {
        OwnedArg::Int(i)
    }
}

impl rusqlite::ToSql for OwnedArg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            OwnedArg::Text(s) => s.to_sql(),
            OwnedArg::Int(i) => i.to_sql(),
        }
    }
}

impl ReadRow for AnyRow {
    fn col<T: Col>(&self, col: &str) -> Result<T, StoreError> {
        T::from_any(self, col)
    }
}

impl ReadRow for sqlx::postgres::PgRow {
    fn col<T: Col>(&self, col: &str) -> Result<T, StoreError> {
        T::from_pg(self, col)
    }
}

/// Reads a text column holding an enum's string form.
pub fn parsed<T: FromStr<Err = String>>(row: &impl ReadRow, col: &str) -> Result<T, StoreError> {
    let s: String = row.col(col)?;
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

/// Reads a nullable text column holding an enum's string form.
pub fn opt_parsed<T: FromStr<Err = String>>(
    row: &impl ReadRow,
    col: &str,
) -> Result<Option<T>, StoreError> {
    let s: Option<String> = row.col(col)?;
    s.map(|s| {
        s.parse()
            .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    })
    .transpose()
}

pub fn opt_date(row: &impl ReadRow, col: &str) -> Result<Option<NaiveDate>, StoreError> {
    let s: Option<String> = row.col(col)?;
    s.filter(|s| !s.is_empty())
        .map(|s| {
            NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
        })
        .transpose()
}

pub fn json<T: serde::de::DeserializeOwned>(
    row: &impl ReadRow,
    col: &str,
) -> Result<T, StoreError> {
    let s: String = row.col(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
