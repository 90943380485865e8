//! `access`: access requests under load, each beside the raw limit of the
//! same component measured in the same run.
//!
//! 1. Final approval → member of the LDAP group (10k-person directory,
//!    SQLite), beside the raw LDAP modify.
//! 2. The expiry sweep of N grants due at the same minute (time, peak RSS),
//!    beside a raw `UPDATE` of as many rows.
//! 3. "Waiting for me" for an approver with many open steps in a store of
//!    ~1M grants, beside the raw indexed `SELECT`.

use crate::directory::{
    DEPARTMENTS, connection, emp, matching_directory, percentiles, policy, uid,
};
use crate::machine;
use crate::scale::rss;
use idgov_authz::{Access, Caller, Role, Rpc, check_rpc};
use idgov_directory::{Directory, DirectoryConfig, Preset};
use idgov_domain::access::{RequestState, TargetKind};
use idgov_domain::identity::{AttributesPatch, BackgroundCheck};
use idgov_domain::roster::RosterEntry;
use idgov_server::app::access::{CreateRequest, RequestView};
use idgov_server::app::roster::SyncRequest;
use idgov_server::{App, ManualClock, SystemClock};
use idgov_tests::slapd::{GROUPS, PEOPLE};
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn access(id: &str, roles: &[Role], rpc: Rpc) -> anyhow::Result<Access> {
    let caller = Caller {
        subject: id.to_lowercase(),
        employee_id: Some(id.to_string()),
        roles: roles.iter().copied().collect(),
        method: "bench".into(),
    };
    check_rpc(&caller, rpc).map_err(|d| anyhow::anyhow!("{}", d.reason))
}

fn e(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

pub async fn access_bench(
    people: usize,
    groups: usize,
    requests: usize,
    expiring: usize,
    waiting: usize,
    backend: &str,
) -> anyhow::Result<()> {
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- access --people {people} --groups {groups} \
         --requests {requests} --expiring {expiring} --waiting {waiting} --backend {backend}\n"
    );
    println!("| access requests ({backend}) | idgov | raw limit, same run |");
    println!("|---|---:|---:|");
    if backend == "sqlite" {
        approval_to_directory(people, groups, requests).await?;
    }
    sweep_and_queue(expiring, waiting, backend).await
}

/// Request → final approval → member of the group, one at a time.
async fn approval_to_directory(
    people: usize,
    groups: usize,
    requests: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        requests * 2 < people,
        "need at least twice as many people as requests"
    );
    let dir = tempfile::tempdir()?;
    let (slapd, data) = matching_directory(dir.path(), people, groups).await?;
    let store = idgov_store::Store::open_data_dir(&data).await?;
    let cfg = DirectoryConfig {
        connection: connection(&slapd),
        accounts_base: PEOPLE.into(),
        groups_base: GROUPS.into(),
        preset: Preset::Openldap,
        schema: Preset::Openldap.schema(),
        page_size: 500,
        workers: 8,
        drift: Default::default(),
        accounts: Default::default(),
    };
    let app = App::start(store, Arc::new(SystemClock), Some(cfg))
        .await
        .map_err(e)?;
    // Every group may be requested; P000000 is the fallback approver (the
    // bench's people have no managers).
    let doc = format!(
        "{}\n[requests]\nfallback_approver = \"{}\"\n",
        policy(groups).replace(
            "kind = \"ldap_group\"",
            "kind = \"ldap_group\"\nrequestable = true"
        ),
        emp(0)
    );
    app.apply_policy(&doc, false, "bench: requestable groups", "user:bench")
        .await
        .map_err(e)?;
    let approver = access(&emp(0), &[], Rpc::ApproveAccessRequest)?;
    let mut watcher = Directory::connect(&connection(&slapd), Preset::Openldap.schema()).await?;
    let per_dept = groups / DEPARTMENTS;
    let mut idgov = Vec::with_capacity(requests);
    let mut created = Vec::with_capacity(requests);
    let mut raw = Vec::with_capacity(requests);
    let mut direct = Directory::connect(&connection(&slapd), Preset::Openldap.schema()).await?;
    let stride = people / (2 * requests + 2);
    for k in 0..requests {
        let i = 1 + 2 * k * stride.max(1);
        let other = (i % DEPARTMENTS + 1) % DEPARTMENTS;
        let g = other * per_dept;
        let group = format!("cn=g{g:04},{GROUPS}");
        let t = Instant::now();
        let r = app
            .create_request(
                &access(&emp(i), &[], Rpc::CreateAccessRequest)?,
                CreateRequest {
                    beneficiary: String::new(),
                    target_kind: Some(TargetKind::Entitlement),
                    target_id: format!("g{g:04}"),
                    justification: "bench".into(),
                    duration_days: Some(30),
                    extends_grant_id: None,
                },
            )
            .await
            .map_err(e)?;
        created.push(t.elapsed());
        let t = Instant::now();
        let done = app
            .decide_request(&approver, &r.id, true, "ok")
            .await
            .map_err(e)?;
        anyhow::ensure!(
            done.state == RequestState::Approved,
            "request {} is {}",
            r.id,
            done.state
        );
        let dn = format!("uid={},{PEOPLE}", uid(i));
        loop {
            if watcher.groups_of(GROUPS, &dn).await?.contains(&group) {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "{dn} not in {group} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        idgov.push(t.elapsed());
        // Raw: the same modify for the next person, issued directly.
        let raw_dn = format!("uid={},{PEOPLE}", uid(i + 1));
        let t = Instant::now();
        direct.add_member(&group, &raw_dn).await?;
        raw.push(t.elapsed());
    }
    let (c50, _, c99, _) = percentiles(created);
    let (a50, _, a99, amax) = percentiles(idgov);
    let (r50, _, r99, _) = percentiles(raw);
    println!(
        "| create a request ({people} identities, {} grants, {requests} requests one at a time) | p50 {c50:.1} ms, p99 {c99:.1} ms | — |",
        people * per_dept
    );
    println!(
        "| final approval → member of the LDAP group (slapd confirms) | p50 {a50:.1} ms, p99 {a99:.1} ms, max {amax:.1} ms | one LDAP add-member modify: p50 {r50:.1} ms, p99 {r99:.1} ms |"
    );
    drop(app);
    Ok(())
}

/// What a raw client runs against the store's database.
enum Raw {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Raw {
    async fn open(data: &std::path::Path, pg: Option<&str>) -> anyhow::Result<Raw> {
        Ok(match pg {
            Some(url) => Raw::Pg(sqlx::PgConnection::connect(url).await?),
            None => {
                let url = format!("sqlite:{}", data.join("idgov.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await?;
                sqlx::query("PRAGMA busy_timeout = 30000")
                    .execute(&mut c)
                    .await?;
                Raw::Sqlite(c)
            }
        })
    }

    async fn exec(&mut self, sql: &str) -> anyhow::Result<u64> {
        Ok(match self {
            Raw::Sqlite(c) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut *c)
                .await?
                .rows_affected(),
            Raw::Pg(c) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut *c)
                .await?
                .rows_affected(),
        })
    }

    async fn fetch_count(&mut self, sql: &str, arg: &str) -> anyhow::Result<usize> {
        Ok(match self {
            Raw::Sqlite(c) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .bind(arg)
                .fetch_all(&mut *c)
                .await?
                .len(),
            Raw::Pg(c) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .bind(arg)
                .fetch_all(&mut *c)
                .await?
                .len(),
        })
    }
}

async fn sweep_and_queue(expiring: usize, waiting: usize, backend: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut _pg = None;
    let pg_url = match backend {
        "postgres" => {
            let server = idgov_tests::pg::PgServer::start(true).map_err(anyhow::Error::msg)?;
            let url = server.fresh_database().await.map_err(anyhow::Error::msg)?;
            _pg = Some(server);
            Some(url)
        }
        _ => None,
    };
    let data = dir.path().join("idgov");
    std::fs::create_dir_all(&data)?;
    let store = match &pg_url {
        Some(url) => idgov_store::Store::open(url).await?,
        None => idgov_store::Store::open_data_dir(&data).await?,
    };
    let start = chrono::Utc::now();
    let clock = Arc::new(ManualClock::new(start));
    let app = App::start(store, clock.clone(), None).await.map_err(e)?;
    // People: W0 approves; X… hold the grants and ask for access.
    let holders = (expiring / 10).max(waiting).max(1);
    let mut entries: Vec<RosterEntry> = (0..holders)
        .map(|i| RosterEntry {
            employee_id: format!("X{i:07}"),
            attrs: AttributesPatch {
                display_name: Some(format!("Holder {i}")),
                department: Some(format!("D{}", i % 10)),
                manager_id: Some(Some("W0".into())),
                background_check: Some(BackgroundCheck::Cleared),
                ..Default::default()
            },
        })
        .collect();
    entries.push(RosterEntry {
        employee_id: "W0".into(),
        attrs: AttributesPatch {
            display_name: Some("Approver".into()),
            department: Some("Management".into()),
            background_check: Some(BackgroundCheck::Cleared),
            ..Default::default()
        },
    });
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
    .map_err(e)?;
    eprintln!(
        "roster of {} people in {:.1} s",
        holders + 1,
        t.elapsed().as_secs_f64()
    );
    let mut doc = String::from(
        "[guard]\nmax_leavers_percent = 100\nmax_leavers = 10000000\n\n\
         [[systems]]\nid = \"apps\"\nkind = \"application\"\nowner = \"W0\"\n\n",
    );
    let ents: Vec<String> = (0..10)
        .flat_map(|k| [format!("t{k}"), format!("u{k}")])
        .chain((0..80).map(|k| format!("f{k}")))
        .chain(["asked".to_string()])
        .collect();
    for id in &ents {
        doc.push_str(&format!(
            "[[entitlements]]\nid = \"{id}\"\nsystem = \"apps\"\nclassification = \"internal\"\nkind = \"app_role\"\nrequestable = true\n\n"
        ));
    }
    app.apply_policy(&doc, false, "bench", "user:bench")
        .await
        .map_err(e)?;

    // Grants straight into the table: t* expire at `due`, u* far later
    // (the raw UPDATE's rows), f* never (filler: ~1M grants in all).
    let mut raw = Raw::open(&data, pg_url.as_deref()).await?;
    let us = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    let due = start + chrono::Duration::days(1);
    let far = start + chrono::Duration::days(300);
    raw.exec("CREATE TABLE bench_ents (e TEXT NOT NULL, expires BIGINT)")
        .await?;
    let per_holder = expiring.div_ceil(holders).min(10);
    for k in 0..per_holder {
        raw.exec(&format!(
            "INSERT INTO bench_ents VALUES ('t{k}', {})",
            us(due)
        ))
        .await?;
        raw.exec(&format!(
            "INSERT INTO bench_ents VALUES ('u{k}', {})",
            us(far)
        ))
        .await?;
    }
    let filler = (1_000_000usize.saturating_sub(2 * expiring)) / holders;
    for k in 0..filler.min(80) {
        raw.exec(&format!("INSERT INTO bench_ents VALUES ('f{k}', NULL)"))
            .await?;
    }
    let t = Instant::now();
    let inserted = raw
        .exec(&format!(
            "INSERT INTO grants (id, employee_id, entitlement_id, classification, source, source_ref, granted_at, \
             expires_at, approvers, justification, revoked_at, revoke_reason, review_pending, cause) \
             SELECT i.employee_id || '-' || b.e, i.employee_id, b.e, 'internal', 'request', 'bench', {}, b.expires, \
             '[]', 'bench', NULL, NULL, 0, 'bench' FROM identities i CROSS JOIN bench_ents b WHERE i.employee_id LIKE 'X%'",
            us(start)
        ))
        .await?;
    eprintln!(
        "{inserted} grants inserted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if pg_url.is_some() {
        raw.exec("ANALYZE").await?;
    }

    // Raw: revoke the u* rows with one UPDATE.
    let t = Instant::now();
    let n_raw = raw
        .exec(&format!(
            "UPDATE grants SET revoked_at = {}, revoke_reason = 'expired' WHERE expires_at = {} AND revoked_at IS NULL",
            us(due),
            us(far)
        ))
        .await?;
    let raw_secs = t.elapsed().as_secs_f64();

    // idgov: the sweep after the moment has passed.
    clock.set(due + chrono::Duration::minutes(1));
    let before = rss().0;
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let sweep = app.run_access_expiry().await.map_err(e)?;
    let secs = t.elapsed().as_secs_f64();
    let (after, peak) = rss();
    anyhow::ensure!(
        sweep.grants_expired as usize == holders * per_holder,
        "swept {} of {}",
        sweep.grants_expired,
        holders * per_holder
    );
    println!(
        "| expiry sweep: {} grants due at the same minute, revoked `expired` with an audit event each | {secs:.1} s; RSS {before:.0} → peak {peak:.0} → {after:.0} MiB | one `UPDATE` of {n_raw} rows (no audit): {raw_secs:.1} s |",
        sweep.grants_expired
    );

    // "Waiting for me": `waiting` people ask W0 for access.
    let t = Instant::now();
    for i in 0..waiting {
        let id = format!("X{i:07}");
        app.create_request(
            &access(&id, &[], Rpc::CreateAccessRequest)?,
            CreateRequest {
                beneficiary: String::new(),
                target_kind: Some(TargetKind::Entitlement),
                target_id: "asked".into(),
                justification: String::new(),
                duration_days: None,
                extends_grant_id: None,
            },
        )
        .await
        .map_err(e)?;
    }
    let made = t.elapsed().as_secs_f64();
    // Steady state: the sweep left 200,000 dead row versions and the
    // requests are new; PostgreSQL's autovacuum would otherwise run during
    // the measurement (it did: p99 18.7 ms beside a raw p99 of 4.2 ms).
    if matches!(raw, Raw::Pg(_)) {
        raw.exec("VACUUM ANALYZE").await?;
    }
    let w0 = access("W0", &[], Rpc::ListAccessRequests)?;
    let total: i64 = match &mut raw {
        Raw::Sqlite(c) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM grants")
                .fetch_one(&mut *c)
                .await?
        }
        Raw::Pg(c) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM grants")
                .fetch_one(&mut *c)
                .await?
        }
    };
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let page = app
            .requests(&w0, RequestView::WaitingForMe, None, None, "", 50)
            .await
            .map_err(e)?;
        lat.push(t.elapsed());
        anyhow::ensure!(page.len() == 50.min(waiting), "a page of {}", page.len());
    }
    let mut raw_lat = Vec::new();
    let sql = "SELECT id, body FROM access_requests WHERE waiting_on = $1 ORDER BY id LIMIT 50";
    for _ in 0..2000 {
        let t = Instant::now();
        raw.fetch_count(sql, "W0").await?;
        raw_lat.push(t.elapsed());
    }
    let (p50, _, p99, _) = percentiles(lat);
    let (r50, _, r99, _) = percentiles(raw_lat);
    println!(
        "| \"waiting for me\": first page of 50 for an approver with {waiting} open steps, {total} grants in the store | p50 {p50:.2} ms, p99 {p99:.2} ms | the indexed SELECT alone: p50 {r50:.2} ms, p99 {r99:.2} ms |"
    );
    println!(
        "| creating those {waiting} requests one after another | {:.0}/s | — |",
        waiting as f64 / made
    );
    Ok(())
}
