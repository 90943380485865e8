//! Online backup and restore of the embedded SQLite store (issue 13).
//!
//! A backup is one SQLite file: a consistent snapshot of the database taken
//! with `VACUUM INTO` while the service runs (a read transaction: writers
//! go on), plus the data directory's key files (the development signing
//! key, the audit checkpoint key) in a table of its own, so a restored
//! service verifies its old checkpoints. Restore refuses a data directory
//! that is not empty, writes the keys back (mode 0600) and the database
//! without that table. PostgreSQL is backed up with `pg_dump` (see
//! [`pg_dump_command`]).

use crate::StoreError;
use sqlx::{Connection, Row, SqliteConnection};
use std::path::Path;

/// The database file in a data directory.
pub const DB_FILE: &str = "idgov.db";

/// What a backup or a restore holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The audit chain head in the copy.
    pub audit_seq: i64,
    pub audit_hash: String,
    pub identities: i64,
    /// Key files carried along.
    pub files: Vec<String>,
    pub bytes: u64,
}

fn cfg(e: impl std::fmt::Display) -> StoreError {
    StoreError::Config(e.to_string())
}

async fn open(path: &Path, create: bool) -> Result<SqliteConnection, StoreError> {
    let mode = if create { "rwc" } else { "rw" };
    Ok(SqliteConnection::connect(&format!("sqlite:{}?mode={mode}", path.display())).await?)
}

async fn describe(c: &mut SqliteConnection, path: &Path) -> Result<BackupReport, StoreError> {
    let ok: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&mut *c)
        .await?
        .try_get(0)?;
    if ok != "ok" {
        return Err(cfg(format!(
            "{} fails SQLite's integrity check: {ok}",
            path.display()
        )));
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(&mut *c)
        .await
        .map_err(|_| {
            cfg(format!(
                "{} is not an idgov database (no audit chain)",
                path.display()
            ))
        })?
        .ok_or_else(|| cfg(format!("{} has no audit chain head", path.display())))?;
    let identities: i64 = sqlx::query("SELECT COUNT(*) FROM identities")
        .fetch_one(&mut *c)
        .await?
        .try_get(0)?;
    Ok(BackupReport {
        audit_seq: head.try_get("seq")?,
        audit_hash: head.try_get("hash")?,
        identities,
        files: Vec::new(),
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}

/// Backs up the SQLite store of `data_dir` into `out` (which must not
/// exist) while the service runs, with the key files named in `keys`
/// (those present are carried).
pub async fn backup_sqlite(
    data_dir: &Path,
    out: &Path,
    keys: &[&str],
) -> Result<BackupReport, StoreError> {
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        return Err(cfg(format!(
            "there is no idgov database in {} (no {DB_FILE}); pass --data-dir naming the server's data directory",
            data_dir.display()
        )));
    }
    if out.exists() {
        return Err(cfg(format!(
            "{} exists; idgov never overwrites a backup",
            out.display()
        )));
    }
    let out_text = out
        .to_str()
        .ok_or_else(|| cfg(format!("{} is not a UTF-8 path", out.display())))?;
    let mut c = open(&db, false).await?;
    sqlx::query("PRAGMA busy_timeout = 10000")
        .execute(&mut c)
        .await?;
    sqlx::query("VACUUM INTO $1")
        .bind(out_text)
        .execute(&mut c)
        .await?;
    c.close().await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).map_err(cfg)?;
    }
    let mut b = open(out, false).await?;
    sqlx::query("CREATE TABLE idgov_backup_files (name TEXT PRIMARY KEY, content BLOB NOT NULL)")
        .execute(&mut b)
        .await?;
    let mut files = Vec::new();
    for name in keys {
        let path = data_dir.join(name);
        match std::fs::read(&path) {
            Ok(content) => {
                sqlx::query("INSERT INTO idgov_backup_files (name, content) VALUES ($1, $2)")
                    .bind(*name)
                    .bind(content)
                    .execute(&mut b)
                    .await?;
                files.push(name.to_string());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(cfg(format!("cannot read {}: {e}", path.display()))),
        }
    }
    let mut r = describe(&mut b, out).await?;
    b.close().await?;
    r.files = files;
    r.bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(r)
}

/// Restores a backup into `data_dir`, which must be empty or absent.
pub async fn restore_sqlite(backup: &Path, data_dir: &Path) -> Result<BackupReport, StoreError> {
    if let Ok(mut entries) = std::fs::read_dir(data_dir)
        && entries.next().is_some()
    {
        return Err(cfg(format!(
            "{} is not empty; restore only into an empty (or new) data directory",
            data_dir.display()
        )));
    }
    if !backup.exists() {
        return Err(cfg(format!("there is no backup at {}", backup.display())));
    }
    std::fs::create_dir_all(data_dir).map_err(cfg)?;
    let tmp = data_dir.join(format!("{DB_FILE}.restoring"));
    std::fs::copy(backup, &tmp).map_err(cfg)?;
    let mut c = open(&tmp, false).await?;
    let mut r = describe(&mut c, &tmp).await?;
    let rows = sqlx::query("SELECT name, content FROM idgov_backup_files ORDER BY name")
        .fetch_all(&mut c)
        .await
        .map_err(|_| {
            cfg(format!(
                "{} is not an idgov backup (no key files table)",
                backup.display()
            ))
        })?;
    for row in rows {
        let name: String = row.try_get("name")?;
        let content: Vec<u8> = row.try_get("content")?;
        if name.contains('/') || name.contains("..") || name.is_empty() {
            return Err(cfg(format!(
                "the backup names a file {name:?} outside the data directory"
            )));
        }
        let path = data_dir.join(&name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        use std::io::Write;
        opts.open(&path)
            .and_then(|mut f| f.write_all(&content))
            .map_err(|e| cfg(format!("cannot write {}: {e}", path.display())))?;
        r.files.push(name);
    }
    sqlx::query("DROP TABLE idgov_backup_files")
        .execute(&mut c)
        .await?;
    c.close().await?;
    let db = data_dir.join(DB_FILE);
    std::fs::rename(&tmp, &db).map_err(cfg)?;
    r.bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    Ok(r)
}

/// The command that backs up a PostgreSQL store (idgov does not copy
/// PostgreSQL itself); the password stays in the URL the operator holds.
pub fn pg_dump_command(database_url: &str, out: &Path) -> String {
    format!(
        "pg_dump --format=custom --file '{}' '{}'",
        out.display(),
        crate::redact_url(database_url)
    )
}
