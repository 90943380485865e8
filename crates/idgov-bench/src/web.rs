//! `web`: the web app's heaviest pages, rendered server-side and fetched
//! over loopback HTTP by one client, beside the application call alone and
//! the HTTP floor (a static file) in the same run.
//!
//! The organisation is the `scale` one (`--people`, default 100,000; ~1.1M
//! audit events once its policy is applied). A campaign over 56
//! departments gives the chief 504 open items (the heads' department
//! access); *My reviews* shows 500 of them per page.

use crate::machine;
use crate::scale::{emp, pct, policy, roster};
use idgov_authz::{Caller, Role, Rpc, check_rpc};
use idgov_server::SystemClock;
use idgov_server::app::roster::SyncRequest;
use idgov_server::app::web_sessions::SessionLimits;
use idgov_server::serve::{ServeConfig, start};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn e(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

pub async fn web(people: usize, requests: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        scheduler_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let running = start(cfg, Arc::new(SystemClock)).await?;
    let app = running.app.clone();
    let base = format!("http://{}", running.addr);
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
    let depts: Vec<String> = (0..56).map(|d| format!("\"D{d:03}\"")).collect();
    let doc = format!(
        "{}\n[[campaigns]]\nid = \"heads\"\nname = \"Department access\"\nscheduled = false\nlevels = [\"internal\"]\ndepartments = [{}]\n",
        policy(),
        depts.join(", ")
    );
    app.apply_policy(&doc, false, "bench", "user:bench")
        .await
        .map_err(e)?;
    app.start_campaign("heads", "user:bench").await.map_err(e)?;
    let (events, _) = app.store.audit_head().await?;
    eprintln!(
        "seeded {people} people, {events} audit events and the campaign in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // The chief, signed in as a security officer (reads the audit log too).
    let chief = Caller {
        subject: emp(0),
        employee_id: Some(emp(0)),
        roles: [Role::SecurityOfficer].into_iter().collect(),
        method: "bench".into(),
    };
    let (session, _) = app
        .sign_in(&chief, "dev", "", SessionLimits::default())
        .await
        .map_err(e)?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = format!("idgov-session={session}");
    let get = |path: String| {
        let http = http.clone();
        let cookie = cookie.clone();
        let url = format!("{base}{path}");
        async move {
            let t = Instant::now();
            let r = http.get(&url).header("cookie", cookie).send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            anyhow::ensure!(status.is_success(), "{url}: {status}");
            Ok::<_, anyhow::Error>((t.elapsed(), body.len()))
        }
    };
    let measure = |path: &'static str| {
        let get = &get;
        async move {
            // Warm up, then measure one request at a time.
            let (_, bytes) = get(path.to_string()).await?;
            let mut v = Vec::with_capacity(requests);
            for _ in 0..requests {
                v.push(get(path.to_string()).await?.0);
            }
            Ok::<_, anyhow::Error>((pct(v.clone(), 0.5), pct(v, 0.99), bytes))
        }
    };
    let list = check_rpc(&chief, Rpc::ListReviewItems).map_err(|d| e(d.reason))?;
    let open = app
        .review_items(
            &list,
            true,
            None,
            Some(idgov_domain::review::ItemState::Open),
            None,
            "",
            501,
        )
        .await
        .map_err(e)?
        .len();
    let mut raw_items = Vec::new();
    let mut raw_audit = Vec::new();
    for _ in 0..requests {
        let t = Instant::now();
        app.review_items(
            &list,
            true,
            None,
            Some(idgov_domain::review::ItemState::Open),
            None,
            "",
            501,
        )
        .await
        .map_err(e)?;
        raw_items.push(t.elapsed());
        let t = Instant::now();
        app.audit_events(&idgov_store::AuditFilter::default(), 0, 100)
            .await
            .map_err(e)?;
        raw_audit.push(t.elapsed());
    }
    let floor = measure("/static/idgov.css").await?;
    let reviews = measure("/reviews").await?;
    let audit = measure("/audit").await?;
    let audit_late = {
        let after = (events - 200).max(0);
        let path: &'static str = Box::leak(format!("/audit?after={after}").into_boxed_str());
        measure(path).await?
    };
    let by_actor = {
        let path: &'static str =
            Box::leak(format!("/audit?actor=user:{}", emp(0)).into_boxed_str());
        measure(path).await?
    };
    let by_target = {
        let path: &'static str =
            Box::leak(format!("/audit?target=identity:{}", emp(people / 2)).into_boxed_str());
        measure(path).await?
    };

    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- web --people {people} --requests {requests}\n"
    );
    println!(
        "| web page, {people} people, {events} audit events (SQLite; one client, {requests} requests) | p50 | p99 | raw limit, same run |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| *My reviews*: {open} open items, the first 500 grouped by person ({} KiB) | {:.1} ms | {:.1} ms | the service call alone: p50 {:.1} / p99 {:.1} ms; a static file over HTTP: p50 {:.2} / p99 {:.2} ms |",
        reviews.2 / 1024,
        reviews.0,
        reviews.1,
        pct(raw_items.clone(), 0.5),
        pct(raw_items, 0.99),
        floor.0,
        floor.1
    );
    println!(
        "| *Audit*: the first page of 100 events | {:.1} ms | {:.1} ms | the service call alone: p50 {:.2} / p99 {:.2} ms |",
        audit.0,
        audit.1,
        pct(raw_audit.clone(), 0.5),
        pct(raw_audit, 0.99)
    );
    println!(
        "| *Audit*: a page at the end of the log | {:.1} ms | {:.1} ms | — |",
        audit_late.0, audit_late.1
    );
    println!(
        "| *Audit*: filtered by actor (the chief's own events) | {:.1} ms | {:.1} ms | — |",
        by_actor.0, by_actor.1
    );
    println!(
        "| *Audit*: filtered by target (one person's events) | {:.1} ms | {:.1} ms | — |",
        by_target.0, by_target.1
    );
    running.stop().await?;
    Ok(())
}
