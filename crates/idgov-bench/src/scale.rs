//! `scale`: a generated organisation of `--people` (default 100,000) with a
//! realistic manager chain, 300 departments and a policy giving ~10 grants
//! per person, through the whole life of a service: roster import, policy
//! apply (time, peak RSS, RSS after, and a terminate's latency during it),
//! a 1%-changed roster, audit verify, read RPC throughput and latency at 64
//! clients, start-up. Each beside the raw limit of the same component
//! measured in the same run.

use crate::{connect, drive, machine, start_and_check};
use idgov_authz::Role;
use idgov_domain::Classification;
use idgov_domain::identity::{AttributesPatch, BackgroundCheck, EmploymentType};
use idgov_domain::roster::RosterEntry;
use idgov_proto::v1 as pb;
use idgov_server::SystemClock;
use idgov_server::app::roster::SyncRequest;
use idgov_server::auth::dev::DevAuth;
use idgov_server::serve::{ServeConfig, start};
use sqlx::{Connection, Row};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;

const DEPARTMENTS: usize = 300;
const PER_DEPARTMENT: usize = 9;

pub(crate) fn emp(i: usize) -> String {
    format!("S{i:07}")
}

/// People: P0 is the chief; the first 300 after head the departments; the
/// rest report to someone earlier in their department (chains ~5 deep).
pub(crate) fn roster(people: usize, variant: usize) -> Vec<RosterEntry> {
    (0..people)
        .map(|i| {
            let dept = if i == 0 { 0 } else { (i - 1) % DEPARTMENTS };
            let manager = match i {
                0 => None,
                1..=DEPARTMENTS => Some(emp(0)),
                _ => {
                    let peers = (i - 1) / DEPARTMENTS; // how many came before in this dept
                    let boss_rank = peers / 8; // eight reports each
                    Some(emp(1 + dept + boss_rank * DEPARTMENTS))
                }
            };
            // A 1% change: a new title for every 100th person.
            let title = if variant > 0 && i % 100 == 7 {
                format!("T{}b", i % 10)
            } else {
                format!("T{}", i % 10)
            };
            RosterEntry {
                employee_id: emp(i),
                attrs: AttributesPatch {
                    display_name: Some(format!("Person {i}")),
                    email: Some(format!("p{i}@example.com")),
                    department: Some(format!("D{dept:03}")),
                    title: Some(title),
                    location: Some(format!("L{}", i % 20)),
                    manager_id: Some(manager),
                    employment_type: Some(EmploymentType::Employee),
                    background_check: Some(BackgroundCheck::Cleared),
                    clearance: Some(Classification::Confidential),
                    ..Default::default()
                },
            }
        })
        .collect()
}

/// A catalog of 2,701 entitlements: each department's 9, and one for all.
pub(crate) fn policy() -> String {
    let mut s = String::from(
        "[guard]\nmax_leavers_percent = 100\nmax_leavers = 1000000\n\n\
         [[systems]]\nid = \"apps\"\nkind = \"application\"\nowner = \"S0000000\"\n\n\
         [[entitlements]]\nid = \"all.wiki\"\nsystem = \"apps\"\nclassification = \"public\"\nkind = \"app_role\"\n\n\
         [[roles]]\nid = \"everyone\"\nentitlements = [\"all.wiki\"]\n\n[[birthright]]\nrole = \"everyone\"\n\n",
    );
    for d in 0..DEPARTMENTS {
        let ents: Vec<String> = (0..PER_DEPARTMENT)
            .map(|k| format!("d{d:03}.e{k}"))
            .collect();
        for e in &ents {
            s.push_str(&format!(
                "[[entitlements]]\nid = \"{e}\"\nsystem = \"apps\"\nclassification = \"internal\"\nkind = \"app_role\"\n\n"
            ));
        }
        s.push_str(&format!(
            "[[roles]]\nid = \"dept-{d:03}\"\nentitlements = [{}]\n\n[[birthright]]\nrole = \"dept-{d:03}\"\nwhen = {{ department = \"D{d:03}\" }}\n\n",
            ents.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    s
}

/// Resident memory of this process now and at its peak, in MiB (Linux).
pub(crate) fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Resets the peak resident memory the kernel reports (VmHWM).
pub(crate) fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Requests of a read run that open streams and warm the caches; their
/// latencies are reported apart from the steady ones.
const WARM_UP: u64 = 2_000;

pub(crate) fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64() * 1e3
}

struct Report(Vec<(String, String, String)>);

impl Report {
    fn row(&mut self, what: &str, idgov: String, raw: String) {
        println!("| {what} | {idgov} | {raw} |");
        self.0.push((what.into(), idgov, raw));
    }
}

/// A service on a fresh store of `backend` (sqlite, or postgres on a
/// private durable cluster), the scheduler idle; keep the whole value alive
/// while it runs.
pub(crate) struct Service {
    pub running: idgov_server::serve::Running,
    /// The data directory (SQLite store, keys).
    pub data: std::path::PathBuf,
    pub database_url: Option<String>,
    _dir: tempfile::TempDir,
    _pg: Option<idgov_tests::pg::PgServer>,
}

pub(crate) async fn serve_on(backend: &str) -> anyhow::Result<Service> {
    let dir = tempfile::tempdir()?;
    let mut pg = None;
    let database_url = match backend {
        "postgres" => {
            let server = idgov_tests::pg::PgServer::start(true).map_err(anyhow::Error::msg)?;
            let url = server.fresh_database().await.map_err(anyhow::Error::msg)?;
            pg = Some(server);
            Some(url)
        }
        _ => None,
    };
    let data = dir.path().join("idgov");
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.clone(),
        database_url: database_url.clone(),
        scheduler_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let running = start(cfg, Arc::new(SystemClock)).await?;
    Ok(Service {
        running,
        data,
        database_url,
        _dir: dir,
        _pg: pg,
    })
}

pub async fn scale(people: usize, backend: &str, reads: u64) -> anyhow::Result<()> {
    let service = serve_on(backend).await?;
    let (running, data, database_url) = (&service.running, &service.data, &service.database_url);
    let app = running.app.clone();
    let url = format!("http://{}", running.addr);
    let dev = DevAuth::load_or_create(data).map_err(anyhow::Error::msg)?;
    let token = |roles: &[Role]| -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
        Ok(format!(
            "Bearer {}",
            dev.mint("bench", None, roles, chrono::Duration::hours(4))
                .map_err(anyhow::Error::msg)?
        )
        .parse()?)
    };
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- scale --people {people} --backend {backend}\n"
    );
    println!(
        "| {people} people, {DEPARTMENTS} departments, ~10 grants each ({backend}) | idgov | raw limit, same run |"
    );
    println!("|---|---:|---:|");
    let mut r = Report(vec![]);

    // Roster import.
    let t = Instant::now();
    let out = app
        .sync_roster(
            SyncRequest {
                source: "bench".into(),
                sync_id: "r0".into(),
                dry_run: false,
                as_of: String::new(),
                time_zone: String::new(),
                entries: roster(people, 0).into(),
            },
            "service:bench",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(out.counts.joiners as usize == people, "{:?}", out.counts);
    r.row(
        "roster import (all joiners)",
        format!("{:.1} s", t.elapsed().as_secs_f64()),
        "—".into(),
    );

    // Policy apply, with a terminate sent while it runs.
    let before = rss().0;
    reset_peak();
    let apply = {
        let app = app.clone();
        let doc = policy();
        tokio::spawn(async move {
            let t = Instant::now();
            let res = app.apply_policy(&doc, false, "bench", "user:bench").await;
            (t.elapsed(), res)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hr_token = token(&[Role::HrFeed])?;
    let channel = connect(&url, 1).await?.remove(0);
    let mut req = tonic::Request::new(pb::SubmitHrEventRequest {
        event: Some(pb::HrEvent {
            source: "bench".into(),
            event_id: "scale-leaver".into(),
            r#type: pb::HrEventType::Terminate as i32,
            employee_id: emp(people - 1),
            ..Default::default()
        }),
    });
    req.metadata_mut().insert("authorization", hr_token.clone());
    let sent = Instant::now();
    pb::hr_service_client::HrServiceClient::new(channel.clone())
        .submit_hr_event(req)
        .await?;
    let leaver = sent.elapsed();
    let running_still = !apply.is_finished();
    let (apply_time, res) = apply.await?;
    let res = res.map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, peak) = rss();
    let grants = res.impact.grants_added;
    // Raw: the same rows copied with one INSERT … SELECT on the same database.
    let raw_copy = raw_copy(data, database_url.as_deref()).await?;
    // And the floor of this change: its grants and its audit events (with
    // everyone's before it), into tables with the same keys and indexes.
    let floor =
        raw_copy_indexed(data, database_url.as_deref(), &["grants", "audit_events"]).await?;
    r.row(
        &format!("policy apply: {grants} grants added"),
        format!("{:.1} s", apply_time.as_secs_f64()),
        format!(
            "{raw_copy:.1} s (the same rows by INSERT … SELECT); {floor:.1} s (every grant and audit row, \
             into tables with the same indexes, by INSERT … SELECT)"
        ),
    );
    r.row(
        "policy apply: peak RSS / RSS after (whole process: client and server)",
        format!("{peak:.0} MiB / {after:.0} MiB"),
        format!("{before:.0} MiB before"),
    );
    r.row(
        "terminate sent 3 s into the policy apply: acknowledged after",
        format!(
            "{:.0} ms{}",
            leaver.as_secs_f64() * 1e3,
            if running_still {
                " (apply still running)"
            } else {
                " (apply had finished)"
            }
        ),
        "—".into(),
    );

    // A 1%-changed roster.
    let roster_before = rss().0;
    reset_peak();
    let t = Instant::now();
    let out = app
        .sync_roster(
            SyncRequest {
                source: "bench".into(),
                sync_id: "r1".into(),
                dry_run: false,
                as_of: String::new(),
                time_zone: String::new(),
                entries: roster(people, 1).into(),
            },
            "service:bench",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    r.row(
        &format!(
            "1%-changed roster ({} updates, {} unchanged)",
            out.counts.updates + out.counts.movers,
            out.counts.unchanged
        ),
        format!("{:.1} s", t.elapsed().as_secs_f64()),
        "—".into(),
    );
    let (roster_after, roster_peak) = rss();
    r.row(
        "1%-changed roster: RSS before → peak → after (whole process)",
        format!("{roster_before:.0} → {roster_peak:.0} → {roster_after:.0} MiB"),
        "—".into(),
    );

    // Audit verify, beside a plain read of the same rows and hashing them.
    let t = Instant::now();
    let report = app.store.verify_audit_chain().await?;
    anyhow::ensure!(report.broken.is_none());
    let verify = t.elapsed();
    let (raw_read, sha_only) = raw_audit(data, database_url.as_deref()).await?;
    r.row(
        &format!("audit verify ({} events)", report.checked),
        format!("{:.1} s", verify.as_secs_f64()),
        format!("{raw_read:.1} s (read + SHA-256); SHA-256 alone {sha_only:.1} s"),
    );

    // Reads at 64 clients.
    let admin = token(&[Role::ItAdmin])?;
    let channels = connect(&url, 8).await?;
    for (name, rpc) in [
        ("GetIdentity", 0u8),
        ("ListGrants", 1u8),
        ("raw: gRPC health", 2u8),
    ] {
        let lat = Arc::new(Mutex::new(Vec::new()));
        let (chs, tok, l, n) = (channels.clone(), admin.clone(), lat.clone(), people);
        // The first requests of each run open streams and bring pages of a
        // store just written into the caches: reported apart, so the
        // steady figure is not a warm-up's.
        let count = reads;
        let secs = drive(count, 64, move |i| {
            let ch = chs[i as usize % chs.len()].clone();
            let tok = tok.clone();
            let l = l.clone();
            async move {
                let id = emp((i as usize * 7919) % n);
                let t = Instant::now();
                match rpc {
                    0 => {
                        let mut q = tonic::Request::new(pb::GetIdentityRequest { employee_id: id });
                        q.metadata_mut().insert("authorization", tok);
                        pb::identity_service_client::IdentityServiceClient::new(ch)
                            .get_identity(q)
                            .await?;
                    }
                    1 => {
                        let mut q = tonic::Request::new(pb::ListGrantsRequest {
                            employee_id: id,
                            ..Default::default()
                        });
                        q.metadata_mut().insert("authorization", tok);
                        pb::identity_service_client::IdentityServiceClient::new(ch)
                            .list_grants(q)
                            .await?;
                    }
                    _ => {
                        tonic_health::pb::health_client::HealthClient::new(ch)
                            .check(tonic_health::pb::HealthCheckRequest {
                                service: String::new(),
                            })
                            .await?;
                    }
                }
                if let Ok(mut v) = l.lock() {
                    v.push((i, t.elapsed()));
                }
                Ok(())
            }
        })
        .await?;
        let v = lat.lock().map(|v| v.clone()).unwrap_or_default();
        let all: Vec<Duration> = v.iter().map(|(_, d)| *d).collect();
        let steady: Vec<Duration> = v
            .iter()
            .filter(|(i, _)| *i >= WARM_UP)
            .map(|(_, d)| *d)
            .collect();
        let (p50, p99) = (pct(all.clone(), 0.5), pct(all, 0.99));
        let (s50, s99) = (pct(steady.clone(), 0.5), pct(steady, 0.99));
        r.row(
            &format!("{name} at 64 clients"),
            format!(
                "{:.0}/s; all {count}: p50 {p50:.1} ms, p99 {p99:.1} ms; \
                 after the first {WARM_UP}: p50 {s50:.1} ms, p99 {s99:.1} ms",
                count as f64 / secs
            ),
            String::new(),
        );
    }
    service.running.stop().await?;

    // Start-up on the 100k store (SQLite: the data directory).
    if database_url.is_none() {
        let (took, running) = start_and_check(data).await?;
        r.row(
            "start-up to first SERVING health answer",
            format!("{:.0} ms", took.as_secs_f64() * 1e3),
            "—".into(),
        );
        running.stop().await?;
    }
    Ok(())
}

pub(crate) async fn raw_copy(data: &std::path::Path, pg: Option<&str>) -> anyhow::Result<f64> {
    raw_copy_table(data, pg, "grants").await
}

/// Copies `table`'s rows with one durable INSERT … SELECT: the database's
/// own speed for rows of that shape.
pub(crate) async fn raw_copy_table(
    data: &std::path::Path,
    pg: Option<&str>,
    table: &str,
) -> anyhow::Result<f64> {
    let t;
    let create = format!("CREATE TABLE raw_{table} AS SELECT * FROM {table} WHERE 1 = 0");
    let copy = format!("INSERT INTO raw_{table} SELECT * FROM {table}");
    match pg {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut c)
                .await?;
            t = Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(copy))
                .execute(&mut c)
                .await?;
        }
        None => {
            let mut c = durable_sqlite(data).await?;
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut c)
                .await?;
            t = Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(copy))
                .execute(&mut c)
                .await?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// A plain connection to the data directory's SQLite database, its commits
/// as durable as idgov's (`synchronous = FULL`).
async fn durable_sqlite(data: &std::path::Path) -> anyhow::Result<sqlx::SqliteConnection> {
    let url = format!("sqlite:{}", data.join("idgov.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await?;
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&mut c)
        .await?;
    Ok(c)
}

/// Copies the rows of `tables` into copies of them that keep their keys
/// and indexes, with one INSERT … SELECT each in one durable transaction:
/// what writing those rows costs the database itself, index upkeep
/// included (the floor of a change that must write them all).
pub(crate) async fn raw_copy_indexed(
    data: &std::path::Path,
    pg: Option<&str>,
    tables: &[&str],
) -> anyhow::Result<f64> {
    // The copies in one durable transaction, timed.
    macro_rules! timed_copy {
        ($c:expr) => {{
            let t = Instant::now();
            let mut tx = $c.begin().await?;
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO raw_ix_{table} SELECT * FROM {table}"
                )))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            t.elapsed().as_secs_f64()
        }};
    }
    Ok(match pg {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE TABLE raw_ix_{table} (LIKE {table} INCLUDING ALL)"
                )))
                .execute(&mut c)
                .await?;
            }
            timed_copy!(c)
        }
        None => {
            let mut c = durable_sqlite(data).await?;
            for table in tables {
                // The table's and its indexes' own DDL, renamed.
                let ddl: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = $1 \
                     AND type IN ('table', 'index') AND sql IS NOT NULL ORDER BY type DESC",
                )
                .bind(table)
                .fetch_all(&mut c)
                .await?;
                for (kind, name, sql) in ddl {
                    let renamed = if kind == "table" {
                        sql.replacen(
                            &format!("CREATE TABLE {table}"),
                            &format!("CREATE TABLE raw_ix_{table}"),
                            1,
                        )
                    } else {
                        sql.replacen(&name, &format!("raw_ix_{name}"), 1).replacen(
                            &format!(" ON {table} "),
                            &format!(" ON raw_ix_{table} "),
                            1,
                        )
                    };
                    anyhow::ensure!(renamed.contains("raw_ix_"), "cannot rename {sql}");
                    sqlx::query(sqlx::AssertSqlSafe(renamed))
                        .execute(&mut c)
                        .await?;
                }
            }
            timed_copy!(c)
        }
    })
}

/// Reads every audit row with a plain client (the SQLite library itself;
/// sqlx's native PostgreSQL driver) on one thread and hashes its fields;
/// and the hashing alone.
async fn raw_audit(data: &std::path::Path, pg: Option<&str>) -> anyhow::Result<(f64, f64)> {
    use futures::TryStreamExt;
    use sha2_free::hash_all;
    let sql = "SELECT seq, occurred_at, actor, action, target, detail, prev_hash FROM audit_events ORDER BY seq";
    let mut rows: Vec<Vec<u8>> = Vec::new();
    let t = Instant::now();
    match pg {
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            let mut s = sqlx::query(sql).fetch(&mut c);
            while let Some(r) = s.try_next().await? {
                rows.push(row_bytes(
                    &r.try_get::<String, _>("detail")?,
                    &r.try_get::<String, _>("prev_hash")?,
                    &r.try_get::<String, _>("actor")?,
                ));
            }
        }
        None => {
            // The SQLite library itself, on this thread: no driver between.
            let c = rusqlite::Connection::open_with_flags(
                data.join("idgov.db"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            let mut st = c.prepare(sql)?;
            let mut q = st.query([])?;
            while let Some(r) = q.next()? {
                rows.push(row_bytes(
                    &r.get::<_, String>("detail")?,
                    &r.get::<_, String>("prev_hash")?,
                    &r.get::<_, String>("actor")?,
                ));
            }
        }
    }
    let h = Instant::now();
    hash_all(&rows);
    let hashing = h.elapsed().as_secs_f64();
    Ok((t.elapsed().as_secs_f64(), hashing))
}

fn row_bytes(detail: &str, prev: &str, actor: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(detail.len() + prev.len() + actor.len());
    v.extend_from_slice(prev.as_bytes());
    v.extend_from_slice(actor.as_bytes());
    v.extend_from_slice(detail.as_bytes());
    v
}

mod sha2_free {
    /// SHA-256 of each row, as the verifier computes one per event.
    pub fn hash_all(rows: &[Vec<u8>]) {
        let mut acc = 0u8;
        for r in rows {
            let d = idgov_domain::audit::event_hash(
                "",
                0,
                0,
                "",
                "",
                "",
                std::str::from_utf8(r).unwrap_or(""),
                false,
            );
            acc ^= d.as_bytes()[0];
        }
        std::hint::black_box(acc);
    }
}
