//! idgov benchmarks. Each figure is printed beside the raw limit of the same
//! component measured in the same run, with the machine and the command.
//!
//! `cargo run --release -p idgov-bench -- ingest` measures HR events durably
//! accepted per second through the gRPC API, on SQLite and on PostgreSQL
//! (a private cluster with fsync on), beside:
//! - plain durable single-row inserts into the same database (one commit each),
//! - bare gRPC round trips (health checks) to the same server.

/// The service's allocator (as the `idgov` binary), so the service
/// measured here allocates as in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
mod campaign;
mod directory;
mod roster;
mod scale;
mod web;
mod webhooks;

use clap::{Parser, Subcommand};
use idgov_authz::Role;
use idgov_domain::roster::RosterEntry;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_server::app::roster::SyncRequest;
use idgov_server::auth::dev::DevAuth;
use idgov_server::serve::{ServeConfig, start};
use idgov_server::{App, SystemClock};
use sqlx::ConnectOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "idgov benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HR events durably accepted per second, SQLite and PostgreSQL.
    Ingest {
        /// Events per phase (hires, then changes of those people).
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// Concurrent client requests in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
        /// Only this backend: sqlite or postgres.
        #[arg(long)]
        backend: Option<String>,
    },
    /// Time from start to the first SERVING gRPC health answer, on SQLite:
    /// a fresh data directory, and one holding the example organisation.
    Startup {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Leaver latency: terminate acknowledged → the directory confirms the
    /// account locked and in no group; beside the same modifies issued directly.
    Leaver {
        #[arg(long, default_value_t = 10_000)]
        people: usize,
        /// Groups in all (each person is in groups / 10 of them).
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 200)]
        leavers: usize,
        /// Send this many terminations at once instead (0: one at a time).
        #[arg(long, default_value_t = 0)]
        burst: usize,
    },
    /// A generated organisation through the life of a service: roster
    /// import, policy apply (time, memory, a leaver during it), a
    /// 1%-changed roster, audit verify, read RPCs at 64 clients, start-up.
    Scale {
        #[arg(long, default_value_t = 100_000)]
        people: usize,
        /// sqlite or postgres.
        #[arg(long, default_value = "sqlite")]
        backend: String,
        /// Requests of each read run at 64 clients (longer runs leave time
        /// to profile them).
        #[arg(long, default_value_t = 40_000)]
        reads: u64,
    },
    /// Backlog drain after a directory outage, beside raw modify throughput.
    Drain {
        #[arg(long, default_value_t = 20_000)]
        people: usize,
        #[arg(long, default_value_t = 8)]
        workers: usize,
    },
    /// Access requests: final approval → LDAP membership (SQLite), the
    /// expiry sweep beside a raw UPDATE, "waiting for me" beside the raw
    /// SELECT.
    Access {
        #[arg(long, default_value_t = 10_000)]
        people: usize,
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Grants due at the same minute.
        #[arg(long, default_value_t = 100_000)]
        expiring: usize,
        /// Open steps waiting on one approver.
        #[arg(long, default_value_t = 10_000)]
        waiting: usize,
        /// sqlite or postgres.
        #[arg(long, default_value = "sqlite")]
        backend: String,
    },
    /// An access review of a generated organisation: generation, a
    /// reviewer's first page, the close with 30% unanswered.
    Campaign {
        #[arg(long, default_value_t = 100_000)]
        people: usize,
        /// sqlite or postgres.
        #[arg(long, default_value = "sqlite")]
        backend: String,
    },
    /// The web app: a reviewer's page of 500 open items and a page of the
    /// audit log over the organisation's ~1M events, rendered server-side.
    Web {
        #[arg(long, default_value_t = 100_000)]
        people: usize,
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// A whole roster of joiners streamed through SyncRoster (1,000,000 by
    /// default), on SQLite or PostgreSQL.
    Roster {
        #[arg(long, default_value_t = 1_000_000)]
        people: usize,
        /// sqlite or postgres.
        #[arg(long, default_value = "sqlite")]
        backend: String,
    },
    /// Webhook delivery: an event's commit to the subscriber's 2xx.
    Webhooks {
        #[arg(long, default_value_t = 500)]
        events: usize,
    },
    /// Directory sync of unchanged accounts, beside a raw paged search.
    Dirsync {
        #[arg(long, default_value_t = 100_000)]
        people: usize,
        #[arg(long, default_value_t = 100)]
        groups: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The service's own logs, when asked for (IDGOV_LOG=warn, …).
    if let Ok(filter) = std::env::var("IDGOV_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Cmd::Ingest {
                events,
                concurrency,
                backend,
            } => ingest(events, concurrency, backend).await,
            Cmd::Startup { runs } => startup(runs).await,
            Cmd::Leaver {
                people,
                groups,
                leavers: _,
                burst,
            } if burst > 0 => directory::leaver_burst(people, groups, burst).await,
            Cmd::Leaver {
                people,
                groups,
                leavers,
                burst: _,
            } => directory::leaver(people, groups, leavers).await,
            Cmd::Dirsync { people, groups } => directory::dirsync(people, groups).await,
            Cmd::Scale {
                people,
                backend,
                reads,
            } => scale::scale(people, &backend, reads).await,
            Cmd::Drain { people, workers } => directory::drain(people, workers).await,
            Cmd::Campaign { people, backend } => campaign::campaign(people, &backend).await,
            Cmd::Web { people, requests } => web::web(people, requests).await,
            Cmd::Roster { people, backend } => roster::roster(people, &backend).await,
            Cmd::Webhooks { events } => webhooks::webhooks(events).await,
            Cmd::Access {
                people,
                groups,
                requests,
                expiring,
                waiting,
                backend,
            } => access::access_bench(people, groups, requests, expiring, waiting, &backend).await,
        }
    })
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM")
}

struct Row {
    backend: &'static str,
    what: String,
    count: u64,
    secs: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.count as f64 / self.secs
    }
}

async fn ingest(events: u64, concurrency: u64, only: Option<String>) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let backends: Vec<&'static str> = match only.as_deref() {
        None => vec!["sqlite", "postgres"],
        Some("sqlite") => vec!["sqlite"],
        Some("postgres") => vec!["postgres"],
        Some(o) => anyhow::bail!("unknown backend {o}"),
    };
    let mut _pg = None;
    for backend in backends {
        let dir = tempfile::tempdir()?;
        let database_url = match backend {
            "postgres" => {
                let server = idgov_tests::pg::PgServer::start(true).map_err(anyhow::Error::msg)?;
                let url = server.fresh_database().await.map_err(anyhow::Error::msg)?;
                _pg = Some(server);
                Some(url)
            }
            _ => None,
        };
        eprintln!("[{backend}] raw durable inserts…");
        rows.push(
            raw_inserts(
                backend,
                dir.path(),
                database_url.as_deref(),
                events,
                concurrency,
            )
            .await?,
        );

        let cfg = ServeConfig {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().join("idgov"),
            database_url: database_url.clone(),
            scheduler_interval: Duration::from_secs(3600),
            ..ServeConfig::default()
        };
        let running = start(cfg, Arc::new(SystemClock)).await?;
        let app = running.app.clone();
        // The example organisation and its policy, so hires get birthright.
        let (entries, policy) = example_org()?;
        seed(&app, entries, &policy).await?;

        let dev = DevAuth::load_or_create(&dir.path().join("idgov")).map_err(anyhow::Error::msg)?;
        let token = dev
            .mint("bench", None, &[Role::HrFeed], chrono::Duration::hours(2))
            .map_err(anyhow::Error::msg)?;
        let url = format!("http://{}", running.addr);
        let channels = connect(&url, 4).await?;

        eprintln!("[{backend}] raw gRPC round trips…");
        rows.push(grpc_round_trips(backend, &channels, events, concurrency).await?);
        eprintln!("[{backend}] idgov hires…");
        rows.push(submit(backend, &channels, &token, "hire", events, concurrency).await?);
        eprintln!("[{backend}] idgov changes…");
        rows.push(submit(backend, &channels, &token, "change", events, concurrency).await?);
        let report = app.store.verify_audit_chain().await?;
        anyhow::ensure!(report.broken.is_none(), "audit chain broken after the run");
        eprintln!(
            "[{backend}] audit chain verified: {} events",
            report.checked
        );
        running.stop().await?;
    }
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- ingest --events {events} --concurrency {concurrency}\n"
    );
    println!("| backend | what | count | seconds | per second |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} |",
            r.backend,
            r.what,
            r.count,
            r.secs,
            r.rate()
        );
    }
    Ok(())
}

/// The example organisation: its roster, read as `idgov hr import` reads
/// it, and its policy.
fn example_org() -> anyhow::Result<(Vec<RosterEntry>, String)> {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let csv = std::fs::read(examples.join("northwind-roster.csv"))?;
    let entries = idgov::roster_csv::parse(&csv)
        .map_err(|errors| anyhow::anyhow!("example roster: {}", errors.join("; ")))?
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            idgov_server::grpc::convert::roster_entry(e, i)
                .map_err(|v| anyhow::anyhow!("example roster: {v:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let policy = std::fs::read_to_string(examples.join("northwind-policy.toml"))?;
    Ok((entries, policy))
}

/// Syncs `entries` as a roster, then applies `policy`, as the service
/// `bench`. Returns how long each took.
pub(crate) async fn seed(
    app: &App,
    entries: Vec<RosterEntry>,
    policy: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let t = Instant::now();
    app.sync_roster(
        SyncRequest {
            source: "bench".into(),
            sync_id: "seed".into(),
            dry_run: false,
            as_of: String::new(),
            time_zone: String::new(),
            entries: entries.into(),
        },
        "service:bench",
    )
    .await
    .map_err(|e| anyhow::anyhow!("seeding the roster: {e}"))?;
    let synced = t.elapsed();
    let t = Instant::now();
    app.apply_policy(policy, false, "bench", "service:bench")
        .await
        .map_err(|e| anyhow::anyhow!("seeding the policy: {e}"))?;
    Ok((synced, t.elapsed()))
}

async fn connect(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Channel::from_shared(url.to_string())?.connect().await?);
    }
    Ok(v)
}

/// Runs `count` operations with `concurrency` in flight; returns seconds.
pub(crate) async fn drive<F, Fut>(count: u64, concurrency: u64, op: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                op(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn raw_inserts(
    backend: &'static str,
    dir: &std::path::Path,
    pg_url: Option<&str>,
    count: u64,
    concurrency: u64,
) -> anyhow::Result<Row> {
    let secs = match pg_url {
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(concurrency.min(64) as u32)
                .connect(url)
                .await?;
            sqlx::query("CREATE TABLE raw_bench (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)")
                .execute(&pool)
                .await?;
            drive(count, concurrency, move |i| {
                let pool = pool.clone();
                async move {
                    sqlx::query("INSERT INTO raw_bench (id, payload) VALUES ($1, $2)")
                        .bind(i as i64)
                        .bind("an hr event payload of about this size, durable on commit")
                        .execute(&pool)
                        .await?;
                    Ok(())
                }
            })
            .await?
        }
        None => {
            // The same settings as idgov's store: WAL, synchronous=FULL, one writer.
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.join("raw.db"))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .disable_statement_logging();
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await?;
            sqlx::query("CREATE TABLE raw_bench (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
                .execute(&pool)
                .await?;
            drive(count, concurrency, move |i| {
                let pool = pool.clone();
                async move {
                    sqlx::query("INSERT INTO raw_bench (id, payload) VALUES ($1, $2)")
                        .bind(i as i64)
                        .bind("an hr event payload of about this size, durable on commit")
                        .execute(&pool)
                        .await?;
                    Ok(())
                }
            })
            .await?
        }
    };
    Ok(Row {
        backend,
        what: "raw: durable single-row INSERT, one commit each".into(),
        count,
        secs,
    })
}

async fn grpc_round_trips(
    backend: &'static str,
    channels: &[Channel],
    count: u64,
    concurrency: u64,
) -> anyhow::Result<Row> {
    let channels = channels.to_vec();
    let secs = drive(count, concurrency, move |i| {
        let mut c = tonic_health::pb::health_client::HealthClient::new(
            channels[i as usize % channels.len()].clone(),
        );
        async move {
            c.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    Ok(Row {
        backend,
        what: "raw: gRPC round trip (health check)".into(),
        count,
        secs,
    })
}

const DEPARTMENTS: [&str; 4] = ["Finance", "Engineering", "Sales", "Customer Support"];

async fn submit(
    backend: &'static str,
    channels: &[Channel],
    token: &str,
    phase: &'static str,
    count: u64,
    concurrency: u64,
) -> anyhow::Result<Row> {
    let header: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let channels = channels.to_vec();
    let secs = drive(count, concurrency, move |i| {
        let ch = channels[i as usize % channels.len()].clone();
        let header = header.clone();
        async move {
            let mut hr = HrServiceClient::new(ch);
            let employee_id = format!("B{i:07}");
            let (kind, attrs) = match (phase, i % 10) {
                ("hire", _) => (
                    pb::HrEventType::Hire,
                    pb::PersonAttributes {
                        display_name: Some(format!("Bench Person {i}")),
                        department: Some(DEPARTMENTS[(i % 4) as usize].into()),
                        title: Some("Analyst".into()),
                        manager_employee_id: Some("E1000".into()),
                        background_check: pb::BackgroundCheck::Cleared as i32,
                        clearance: pb::Classification::Confidential as i32,
                        ..Default::default()
                    },
                ),
                (_, 0) => (pb::HrEventType::Terminate, pb::PersonAttributes::default()),
                (_, 1 | 2) => (
                    pb::HrEventType::Move,
                    pb::PersonAttributes {
                        department: Some(DEPARTMENTS[((i + 1) % 4) as usize].into()),
                        ..Default::default()
                    },
                ),
                _ => (
                    pb::HrEventType::Update,
                    pb::PersonAttributes {
                        title: Some(format!("Analyst {}", i % 3)),
                        ..Default::default()
                    },
                ),
            };
            let mut req = tonic::Request::new(pb::SubmitHrEventRequest {
                event: Some(pb::HrEvent {
                    source: "bench".into(),
                    event_id: format!("{phase}-{i}"),
                    r#type: kind as i32,
                    employee_id,
                    attributes: Some(attrs),
                    ..Default::default()
                }),
            });
            req.metadata_mut().insert("authorization", header);
            let r = hr.submit_hr_event(req).await?.into_inner();
            anyhow::ensure!(
                r.state == pb::HrEventState::Applied as i32,
                "event {i} not applied: {r:?}"
            );
            Ok(())
        }
    })
    .await?;
    let what = match phase {
        "hire" => {
            "idgov: hire events (identity + ~7 birthright grants + audit), acknowledged durable"
        }
        _ => "idgov: update/move/terminate mix (70/20/10), acknowledged durable",
    };
    Ok(Row {
        backend,
        what: what.into(),
        count,
        secs,
    })
}

/// Starts the service in `dir` and waits for SERVING; returns the time taken.
async fn start_and_check(
    dir: &std::path::Path,
) -> anyhow::Result<(Duration, idgov_server::Running)> {
    let t = Instant::now();
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.to_path_buf(),
        ..ServeConfig::default()
    };
    let running = start(cfg, Arc::new(SystemClock)).await?;
    let ch = Channel::from_shared(format!("http://{}", running.addr))?
        .connect()
        .await?;
    let r = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    Ok((t.elapsed(), running))
}

async fn startup(runs: usize) -> anyhow::Result<()> {
    let mut fresh = Vec::new();
    let mut loaded = Vec::new();
    let seeded = tempfile::tempdir()?;
    let (people, grants): (usize, usize);
    {
        let (_, running) = start_and_check(seeded.path()).await?;
        let (entries, policy) = example_org()?;
        seed(&running.app, entries, &policy).await?;
        let store = &running.app.store;
        people = store.all_identities().await?.len();
        grants = store
            .all_active_grants()
            .await?
            .values()
            .map(Vec::len)
            .sum();
        running.stop().await?;
    }
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let (d, running) = start_and_check(dir.path()).await?;
        fresh.push(d);
        running.stop().await?;
        let (d, running) = start_and_check(seeded.path()).await?;
        loaded.push(d);
        running.stop().await?;
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (f50, fmax) = stats(&mut fresh);
    let (l50, lmax) = stats(&mut loaded);
    println!("\nmachine: {}", machine());
    println!("command: cargo run --release -p idgov-bench -- startup --runs {runs}\n");
    println!("| SQLite data directory | median | max |");
    println!("|---|---:|---:|");
    println!(
        "| new (create, migrate, listen) | {:.1} ms | {:.1} ms |",
        f50.as_secs_f64() * 1e3,
        fmax.as_secs_f64() * 1e3
    );
    println!(
        "| example organisation ({people} people, {grants} grants) | {:.1} ms | {:.1} ms |",
        l50.as_secs_f64() * 1e3,
        lmax.as_secs_f64() * 1e3
    );
    Ok(())
}
