//! A private PostgreSQL cluster for tests and benchmarks, started from the
//! installed PostgreSQL binaries on a random loopback port.
//!
//! A watchdog shell owns the server: when the test process exits, however it
//! exits, the watchdog stops PostgreSQL and removes its data directory. As
//! root (CI), the cluster runs as the `postgres` user, since PostgreSQL
//! refuses to run as root.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running cluster.
#[derive(Debug)]
pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
}

static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(1);

const WATCHDOG: &str = r#"
"$BIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 || exit 1
"$BIN/postgres" -D "$DIR/data" -h 127.0.0.1 -p "$PORT" -k "$DIR" $PGOPTS >"$DIR/postgres.log" 2>&1 &
PG=$!
while [ -d "/proc/$OWNER" ] && kill -0 "$PG" 2>/dev/null; do sleep 0.3; done
kill -INT "$PG" 2>/dev/null
wait "$PG"
rm -rf "$DIR"
"#;

/// Finds the PostgreSQL server binaries: `IDGOV_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("IDGOV_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl PgServer {
    /// Starts a cluster. `durable: false` turns fsync off (tests);
    /// `durable: true` keeps PostgreSQL's defaults (benchmarks).
    pub fn start(durable: bool) -> Result<PgServer, String> {
        let bin = find_bin()
            .ok_or("no PostgreSQL server binaries (install postgresql, or set IDGOV_PG_BIN)")?;
        let dir = tempfile::Builder::new()
            .prefix("idgov-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let port = crate::free_port()?;
        let opts = if durable {
            "-c max_connections=200 -c shared_buffers=256MB".to_string()
        } else {
            "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                .to_string()
        };
        // More server settings for a look inside (e.g. `-c
        // log_min_duration_statement=20`); the log is `postgres.log` in the
        // server's directory.
        let opts = match std::env::var("IDGOV_TEST_PGOPTS") {
            Ok(more) if !more.trim().is_empty() => format!("{opts} {more}"),
            _ => opts,
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .env("BIN", &bin)
            .env("DIR", &dir)
            .env("PORT", port.to_string())
            .env("OWNER", std::process::id().to_string())
            .env("PGOPTS", opts)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if running_as_root() {
            let (uid, gid) =
                postgres_user().ok_or("running as root and there is no postgres user")?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            cmd.uid(uid).gid(gid);
        }
        // Detached: the watchdog outlives this handle and ends with the process.
        cmd.spawn()
            .map_err(|e| format!("cannot start the PostgreSQL watchdog: {e}"))?;
        let server = PgServer { port, dir, bin };
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-q",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("postgres.log"))
            .or_else(|_| std::fs::read_to_string(self.dir.join("initdb.log")))
            .unwrap_or_default();
        Err(format!(
            "PostgreSQL did not become ready in {timeout:?}: {log}"
        ))
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub async fn fresh_database(&self) -> Result<String, String> {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let name = format!(
            "idgov_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::AnyConnection::connect(&self.url("postgres"))
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.url(&name))
    }

    /// The server's log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The cluster shared by all tests of this process, started on first use.
/// `None` (after [`crate::skip_or_fail`]) when PostgreSQL is unavailable.
pub fn shared() -> Option<&'static PgServer> {
    match SHARED.get_or_init(|| PgServer::start(false)) {
        Ok(s) => Some(s),
        Err(e) => {
            crate::skip_or_fail("PostgreSQL", e);
            None
        }
    }
}
