//! `campaign`: an access review of a generated organisation of `--people`
//! (default 100,000; ~10 grants each): generation with the peer signal
//! (time, peak RSS) beside a raw INSERT … SELECT of as many rows, a
//! reviewer's first page, and the close with 30% unanswered.

use crate::machine;
use crate::scale::{emp, pct, policy, raw_copy, reset_peak, roster, rss};
use idgov_authz::{Caller, Rpc, check_rpc};
use idgov_server::app::roster::SyncRequest;
use idgov_server::{App, SystemClock};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Instant;

fn e(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

pub async fn campaign(people: usize, backend: &str) -> anyhow::Result<()> {
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
    let app = App::start(store, Arc::new(SystemClock), None)
        .await
        .map_err(e)?;
    let t = Instant::now();
    app.sync_roster(
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
    .map_err(e)?;
    let doc = format!(
        "{}\n[[campaigns]]\nid = \"all\"\nname = \"Everything\"\nscheduled = false\n",
        policy()
    );
    app.apply_policy(&doc, false, "bench", "user:bench")
        .await
        .map_err(e)?;
    eprintln!(
        "seeded {people} people and their grants in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- campaign --people {people} --backend {backend}\n"
    );
    println!("| access review of {people} people ({backend}) | idgov | raw limit, same run |");
    println!("|---|---:|---:|");

    let raw = raw_copy(&data, pg_url.as_deref()).await?;
    let before = rss().0;
    reset_peak();
    let t = Instant::now();
    let start = {
        let app = app.clone();
        tokio::spawn(async move { app.start_campaign("all", "user:bench").await })
    };
    // A leaver 3 s into the generation: applied at once, not after it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let leaver_ms = terminate_ms(&app, "leave-during-generation", &emp(people - 1)).await?;
    let still = !start.is_finished();
    let c = start.await?.map_err(e)?;
    let gen_secs = t.elapsed().as_secs_f64();
    let (after, peak) = rss();
    println!(
        "| generation: {} items with context and peer signal | {gen_secs:.1} s; RSS {before:.0} → peak {peak:.0} → {after:.0} MiB (whole process) | INSERT … SELECT of the grants: {raw:.1} s |",
        c.items
    );

    println!(
        "| terminate sent 3 s into the generation: applied after | {leaver_ms:.0} ms{} | — |",
        if still {
            " (generation still running)"
        } else {
            ""
        }
    );

    // The reviewer with the most items: the chief (the department heads'
    // manager).
    let chief = Caller {
        subject: "chief".into(),
        employee_id: Some(emp(0)),
        roles: Default::default(),
        method: "bench".into(),
    };
    let access =
        check_rpc(&chief, Rpc::ListReviewItems).map_err(|d| anyhow::anyhow!("{}", d.reason))?;
    let mut lat = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let page = app
            .review_items(&access, true, Some(c.id.clone()), None, None, "", 50)
            .await
            .map_err(e)?;
        lat.push(t.elapsed());
        anyhow::ensure!(page.len() == 50, "a page of {}", page.len());
    }
    println!(
        "| a reviewer's first page of 50 (the reviewer with the most items) | p50 {:.2} ms, p99 {:.2} ms | — |",
        pct(lat.clone(), 0.5),
        pct(lat, 0.99)
    );

    // 70% decided (set directly), 30% left to the default at the close.
    let decided = match &pg_url {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query(
                "UPDATE review_items SET state = 'certified', decided_at = 1, version = version + 1 \
                 WHERE campaign_id = $1 AND mod(abs(hashtext(id)), 10) < 7",
            )
            .bind(&c.id)
            .execute(&mut conn)
            .await?
            .rows_affected()
        }
        None => {
            let url = format!("sqlite:{}", data.join("idgov.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await?;
            sqlx::query(
                "UPDATE review_items SET state = 'certified', decided_at = 1, version = version + 1 \
                 WHERE campaign_id = $1 AND (rowid % 10) < 7",
            )
            .bind(&c.id)
            .execute(&mut conn)
            .await?
            .rows_affected()
        }
    };
    let t = Instant::now();
    let close = {
        let app = app.clone();
        let id = c.id.clone();
        tokio::spawn(async move { app.close_campaign(&id, "user:bench").await })
    };
    // A leaver 3 s into the close: applied at once, not after it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let leaver_ms = terminate_ms(&app, "leave-during-close", &emp(people - 2)).await?;
    let still = !close.is_finished();
    let out = close.await?.map_err(e)?;
    println!(
        "| close with {} of {} items unanswered (each defaulted with its audit event) | {:.1} s | — |",
        out.defaulted,
        c.items,
        t.elapsed().as_secs_f64()
    );
    println!(
        "| terminate sent 3 s into the close: applied after | {leaver_ms:.0} ms{} | — |",
        if still { " (close still running)" } else { "" }
    );
    anyhow::ensure!(
        decided > 0 && out.held_change_id.is_none(),
        "the close was held"
    );
    Ok(())
}

/// Sends a termination of `employee` now; milliseconds until acknowledged.
async fn terminate_ms(app: &App, event_id: &str, employee: &str) -> anyhow::Result<f64> {
    let e = |e: idgov_server::AppError| anyhow::anyhow!("{e}");
    let leaver = idgov_domain::hr::HrEvent::parse(
        idgov_domain::hr::HrEventInput {
            source: "bench".into(),
            event_id: event_id.into(),
            kind: Some(idgov_domain::hr::EventKind::Terminate),
            employee_id: employee.into(),
            ..Default::default()
        },
        app.policy().policy.hr_time_zone,
        app.now(),
    )
    .map_err(|d| anyhow::anyhow!("{d}"))?;
    let l = Instant::now();
    app.submit_event(leaver, "service:bench").await.map_err(e)?;
    Ok(l.elapsed().as_secs_f64() * 1e3)
}
