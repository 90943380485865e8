//! `webhooks`: from an event's commit to the subscriber's 2xx. HR events
//! are accepted one at a time (the acknowledgement is the commit); a local
//! receiver notes when each arrives. Beside it: a plain POST of a like body
//! to the same receiver (the HTTP floor), in the same run.

use crate::machine;
use crate::scale::pct;
use idgov_server::SystemClock;
use idgov_server::serve::{ServeConfig, start};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A receiver answering 200 to everything; reports each body's arrival.
async fn receiver() -> anyhow::Result<(u16, mpsc::UnboundedReceiver<(String, Instant)>)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string();
                        let _ = tx.send((body, Instant::now()));
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    Ok((port, rx))
}

pub async fn webhooks(events: usize) -> anyhow::Result<()> {
    let (port, mut rx) = receiver().await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("bench.secret"),
        "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )?;
    let file = dir.path().join("webhooks.toml");
    std::fs::write(
        &file,
        format!(
            "[[subscriptions]]\nid = \"bench\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             events = [\"hr.event.applied\"]\nsecret_file = \"bench.secret\"\nallow_private = true\n"
        ),
    )?;
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("data"),
        webhooks_file: Some(file),
        scheduler_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let running = start(cfg, Arc::new(SystemClock)).await?;
    let app = running.app.clone();
    let mut lat = Vec::with_capacity(events);
    for i in 0..events {
        let ev = idgov_domain::hr::HrEvent::parse(
            idgov_domain::hr::HrEventInput {
                source: "bench".into(),
                event_id: format!("hire-{i}"),
                kind: Some(idgov_domain::hr::EventKind::Hire),
                employee_id: format!("B{i:06}"),
                attrs: idgov_domain::identity::AttributesPatch {
                    display_name: Some(format!("Person {i}")),
                    ..Default::default()
                },
                ..Default::default()
            },
            app.policy().policy.hr_time_zone,
            app.now(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        app.submit_event(ev, "service:bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let committed = Instant::now();
        let (_, arrived) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the receiver stopped"))?;
        lat.push(arrived.saturating_duration_since(committed));
    }
    // The HTTP floor: the same receiver, a plain POST of a like body.
    let http = reqwest::Client::new();
    let body = "x".repeat(600);
    let mut floor = Vec::with_capacity(events);
    for _ in 0..events {
        let t = Instant::now();
        http.post(format!("http://127.0.0.1:{port}/raw"))
            .body(body.clone())
            .send()
            .await?;
        floor.push(t.elapsed());
        let _ = rx.recv().await;
    }
    println!("\nmachine: {}", machine());
    println!("command: cargo run --release -p idgov-bench -- webhooks --events {events}\n");
    println!(
        "| webhook delivery, {events} events one at a time (SQLite) | p50 | p99 | raw limit, same run |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| an event's commit → the receiver has the signed CloudEvent | {:.1} ms | {:.1} ms | a plain POST to the same receiver: p50 {:.2} / p99 {:.2} ms |",
        pct(lat.clone(), 0.5),
        pct(lat, 0.99),
        pct(floor.clone(), 0.5),
        pct(floor, 0.99)
    );
    running.stop().await?;
    Ok(())
}
