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

/// Reads a text column holding an enum's string form.
pub fn parsed<T: FromStr<Err = String>>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let s: String = get(row, col)?;
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

/// Reads a nullable text column holding an enum's string form.
pub fn opt_parsed<T: FromStr<Err = String>>(
    row: &AnyRow,
    col: &str,
) -> Result<Option<T>, StoreError> {
    let s: Option<String> = get(row, col)?;
    s.map(|s| {
        s.parse()
            .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    })
    .transpose()
}

pub fn opt_date(row: &AnyRow, col: &str) -> Result<Option<NaiveDate>, StoreError> {
    let s: Option<String> = get(row, col)?;
    s.filter(|s| !s.is_empty())
        .map(|s| {
            NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
        })
        .transpose()
}

pub fn json<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let s: String = get(row, col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
