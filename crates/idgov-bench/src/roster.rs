//! `roster`: a whole roster of `--people` (default 1,000,000) joiners
//! streamed through the real API (`HrService.SyncRoster`, one entry per
//! message, as `idgov hr import` sends it), on SQLite or PostgreSQL: time
//! and the whole process's peak memory (client and server), beside a raw
//! multi-row INSERT of as many identity rows into the same database.
//! Then a second snapshot that leaves out every tenth person and retitles
//! another tenth: held by the guard, its changes read back page by page
//! (ListHeldRosterChanges) and released, each timed with its memory.

use crate::machine;
use crate::scale::{emp, raw_copy_table, reset_peak, rss};
use idgov_authz::Role;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_server::auth::dev::DevAuth;
use std::time::Instant;
use tonic::metadata::MetadataValue;

type Interceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Hr = HrServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Interceptor>,
>;

/// The second snapshot's entry `i`: every tenth person left out (a leaver),
/// another tenth retitled (an update), the rest as before.
fn second(i: usize) -> Option<pb::SyncRosterRequest> {
    let mut e = entry(i);
    match i % 10 {
        9 => return None,
        0 => {
            if let Some(pb::sync_roster_request::Item::Entry(x)) = &mut e.item
                && let Some(a) = &mut x.attributes
            {
                a.title = Some(format!("Retitled {i}"));
            }
        }
        _ => {}
    }
    Some(e)
}

fn entry(i: usize) -> pb::SyncRosterRequest {
    let dept = if i == 0 { 0 } else { (i - 1) % 300 };
    let manager = match i {
        0 => None,
        1..=300 => Some(emp(0)),
        _ => Some(emp(1 + dept + ((i - 1) / 300 / 8) * 300)),
    };
    pb::SyncRosterRequest {
        item: Some(pb::sync_roster_request::Item::Entry(pb::RosterEntry {
            employee_id: emp(i),
            attributes: Some(pb::PersonAttributes {
                display_name: Some(format!("Person {i}")),
                email: Some(format!("p{i}@example.com")),
                department: Some(format!("D{dept:03}")),
                title: Some(format!("T{}", i % 10)),
                manager_employee_id: manager,
                background_check: pb::BackgroundCheck::Cleared as i32,
                clearance: pb::Classification::Confidential as i32,
                ..Default::default()
            }),
        })),
    }
}

pub async fn roster(people: usize, backend: &str) -> anyhow::Result<()> {
    let service = crate::scale::serve_on(backend).await?;
    let (running, data, database_url) = (&service.running, &service.data, &service.database_url);
    let dev = DevAuth::load_or_create(data).map_err(anyhow::Error::msg)?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.addr))?
        .connect()
        .await?;
    let client = |roles: &[Role]| -> anyhow::Result<Hr> {
        let token: MetadataValue<tonic::metadata::Ascii> = format!(
            "Bearer {}",
            dev.mint("bench", None, roles, chrono::Duration::hours(4))
                .map_err(anyhow::Error::msg)?
        )
        .parse()?;
        Ok(HrServiceClient::with_interceptor(
            channel.clone(),
            Box::new(move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", token.clone());
                Ok(r)
            }) as Interceptor,
        ))
    };
    let mut hr = client(&[Role::HrFeed])?;
    let mut sec = client(&[Role::SecurityOfficer])?;
    let header = pb::SyncRosterRequest {
        item: Some(pb::sync_roster_request::Item::Header(pb::RosterHeader {
            source: "bench".into(),
            sync_id: "full".into(),
            ..Default::default()
        })),
    };
    // Generated as sent: the client holds no roster in memory.
    let stream = tokio_stream::iter(std::iter::once(header).chain((0..people).map(entry)));
    let before = rss().0;
    reset_peak();
    let t = Instant::now();
    let out = hr.sync_roster(stream).await?.into_inner();
    let secs = t.elapsed().as_secs_f64();
    let (after, peak) = rss();
    let diff = out.diff.unwrap_or_default();
    anyhow::ensure!(
        diff.joiners as usize == people,
        "expected {people} joiners, got {}",
        diff.joiners
    );
    let raw = raw_copy_table(data, database_url.as_deref(), "identities").await?;
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- roster --people {people} --backend {backend}\n"
    );
    println!(
        "| roster of {people} joiners through SyncRoster ({backend}) | idgov | raw limit, same run |"
    );
    println!("|---|---:|---:|");
    println!(
        "| import: every person created and audited, answer with counts and a bounded diff | {secs:.1} s ({:.0} people/s); RSS {before:.0} → peak {peak:.0} → {after:.0} MiB (client and server) | {raw:.1} s to copy the identity rows with one INSERT … SELECT |",
        people as f64 / secs
    );

    // Held: a tenth left out is far past the guard.
    let header = pb::SyncRosterRequest {
        item: Some(pb::sync_roster_request::Item::Header(pb::RosterHeader {
            source: "bench".into(),
            sync_id: "second".into(),
            ..Default::default()
        })),
    };
    let stream = tokio_stream::iter(std::iter::once(header).chain((0..people).filter_map(second)));
    let before = rss().0;
    reset_peak();
    let t = Instant::now();
    let out = hr.sync_roster(stream).await?.into_inner();
    let held_secs = t.elapsed().as_secs_f64();
    let (held_after, held_peak) = rss();
    anyhow::ensure!(
        out.outcome() == pb::ChangeOutcome::Held,
        "expected the second snapshot held, got {:?}",
        out.outcome()
    );
    let total = out.diff.unwrap_or_default().total_changes as usize;
    let id = out.held_change_id;
    // Every change, a page at a time.
    reset_peak();
    let t = Instant::now();
    let (mut listed, mut pages, mut token) = (0usize, 0usize, String::new());
    loop {
        let page = sec
            .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
                id: id.clone(),
                page_size: 1000,
                page_token: token,
            })
            .await?
            .into_inner();
        listed += page.changes.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let list_secs = t.elapsed().as_secs_f64();
    let list_peak = rss().1;
    anyhow::ensure!(listed == total, "listed {listed} of {total} held changes");
    reset_peak();
    let t = Instant::now();
    sec.release_held_change(pb::ReleaseHeldChangeRequest {
        id,
        reason: "bench".into(),
    })
    .await?;
    let release_secs = t.elapsed().as_secs_f64();
    let (release_after, release_peak) = rss();
    println!(
        "| the second snapshot ({} leavers, {} retitled): held, its changes staged | {held_secs:.1} s; RSS {before:.0} → peak {held_peak:.0} → {held_after:.0} MiB | — |",
        people / 10,
        people.div_ceil(10)
    );
    println!(
        "| its {total} changes read back, {pages} pages of ≤ 1,000 | {list_secs:.1} s; peak RSS {list_peak:.0} MiB | — |"
    );
    println!(
        "| released: every change applied and audited | {release_secs:.1} s; peak RSS {release_peak:.0} → {release_after:.0} MiB | — |"
    );
    service.running.stop().await?;
    Ok(())
}
