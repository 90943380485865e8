//! `idgov backup` and `idgov restore`: the service's data in one file, taken
//! online. Run them on the server's host (they read the data directory).

use crate::output::{Format, json};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// The data directory's key files a backup carries.
const KEY_FILES: [&str; 2] = [
    idgov_server::auth::dev::KEY_FILE,
    idgov_server::app::audit_checkpoints::KEY_FILE,
];

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The backup file to write (it must not exist). It holds the keys: keep it as secret as the data directory.
    #[arg(long)]
    out: PathBuf,
    /// The server's data directory.
    #[arg(long, env = "IDGOV_DATA_DIR", default_value = "idgov-data")]
    data_dir: PathBuf,
    /// A PostgreSQL store is backed up with pg_dump: the command is printed.
    #[arg(long, env = "IDGOV_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (from `idgov backup`).
    file: PathBuf,
    /// The data directory to restore into; it must be empty or absent.
    #[arg(long, env = "IDGOV_DATA_DIR", default_value = "idgov-data")]
    data_dir: PathBuf,
}

fn report(r: &idgov_store::backup::BackupReport, what: &str, path: &std::path::Path, out: Format) {
    match out {
        Format::Json => json(&json!({
            "path": path.display().to_string(), "audit_seq": r.audit_seq, "audit_head": r.audit_hash,
            "identities": r.identities, "files": r.files, "bytes": r.bytes,
        })),
        Format::Table => {
            crate::outln!(
                "{what} {}: {} identities, audit chain up to event {} (head {}), {} KiB; key files: {}",
                path.display(),
                r.identities,
                r.audit_seq,
                r.audit_hash,
                r.bytes / 1024,
                if r.files.is_empty() {
                    "none".to_string()
                } else {
                    r.files.join(", ")
                }
            );
        }
    }
}

pub async fn backup(a: BackupArgs, out: Format) -> anyhow::Result<ExitCode> {
    if let Some(url) = a.database_url.filter(|u| !u.is_empty()) {
        anyhow::bail!(
            "this service stores its data in PostgreSQL, which idgov does not copy itself. Back it up with:\n  {}\n\
             and keep a copy of the key files in {} ({}). Restore with pg_restore --dbname URL FILE into an empty database.",
            idgov_store::backup::pg_dump_command(&url, &a.out),
            a.data_dir.display(),
            KEY_FILES.join(", ")
        );
    }
    let r = idgov_store::backup::backup_sqlite(&a.data_dir, &a.out, &KEY_FILES)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    report(&r, "backed up to", &a.out, out);
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(a: RestoreArgs, out: Format) -> anyhow::Result<ExitCode> {
    let r = idgov_store::backup::restore_sqlite(&a.file, &a.data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    report(&r, "restored into", &a.data_dir, out);
    if out == Format::Table {
        crate::outln!(
            "start the service on it (idgov serve --data-dir {}) and check the chain with `idgov audit verify`",
            a.data_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
