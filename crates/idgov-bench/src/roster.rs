//! `roster`: a whole roster of `--people` (default 1,000,000) joiners
//! streamed through the real API (`HrService.SyncRoster`, one entry per
//! message, as `idgov hr import` sends it), on SQLite or PostgreSQL: time
//! and the whole process's peak memory (client and server), beside a raw
//! multi-row INSERT of as many identity rows into the same database.

use crate::machine;
use crate::scale::{emp, raw_copy_table, reset_peak, rss};
use idgov_authz::Role;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_server::auth::dev::DevAuth;
use std::time::Instant;
use tonic::metadata::MetadataValue;

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
    let token: MetadataValue<tonic::metadata::Ascii> = format!(
        "Bearer {}",
        dev.mint("bench", None, &[Role::HrFeed], chrono::Duration::hours(4))
            .map_err(anyhow::Error::msg)?
    )
    .parse()?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.addr))?
        .connect()
        .await?;
    let mut hr = HrServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", token.clone());
        Ok(r)
    });
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
    service.running.stop().await?;
    Ok(())
}
