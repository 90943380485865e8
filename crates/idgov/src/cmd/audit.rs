//! `idgov audit`: list, verify (online, or offline from an export) and export.

use crate::ClientOpts;
use crate::client::{Client, explain, more_follow_on_stderr, up_to};
use crate::output::{Format, json, table, time};
use anyhow::Context;
use clap::Subcommand;
use idgov_domain::audit::{AuditRecord, ChainBreak, Verifier};
use idgov_proto::v1 as pb;
use idgov_proto::v1::audit_service_client::AuditServiceClient;
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and report the first altered or missing event.
    Verify {
        /// Verify an export (JSON lines) offline instead of asking the server.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: the service's public key (`idgov audit public-key`),
        /// to check the signed checkpoints the export carries.
        #[arg(long, requires = "file")]
        public_key: Option<String>,
    },
    /// Export the audit log as JSON lines (filtered: for reading; verify a
    /// whole export).
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the events caused by this actor (see `list --actor`).
        #[arg(long, default_value = "")]
        actor: String,
        /// Only the events about this object (see `list --target`).
        #[arg(long, default_value = "")]
        target: String,
        /// Only the events about this person (see `list --employee`).
        #[arg(long, default_value = "")]
        employee: String,
    },
    /// List audit events, oldest first.
    List {
        /// Only the events caused by this actor: user:E1001,
        /// service:hr-feed, system:scheduler.
        #[arg(long, default_value = "")]
        actor: String,
        /// Only the events about this object: identity:E1001, grant:ID,
        /// request:ID, policy.
        #[arg(long, default_value = "")]
        target: String,
        /// Only this action: hr.event.applied, grant.revoked, …
        #[arg(long, default_value = "")]
        action: String,
        /// Only the events about this person: their HR events and identity,
        /// and their grants', requests', review items' and SoD events.
        #[arg(long, default_value = "")]
        employee: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i32,
        /// Continue where a previous page stopped (it prints the token).
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Print the public key that verifies the audit checkpoints (read on
    /// the server's host, from its data directory). Keep a copy off the box.
    PublicKey {
        /// The server's data directory.
        #[arg(long, env = "IDGOV_DATA_DIR", default_value = "idgov-data")]
        data_dir: PathBuf,
    },
}

/// The keys of an exported event. Every one is covered by verification:
/// `occurred_at` must be the rendering of the hashed `occurred_at_us`, and
/// `detail` the parse of the hashed `detail_json`.
const EXPORT_KEYS: [&str; 11] = [
    "seq",
    "occurred_at",
    "occurred_at_us",
    "actor",
    "action",
    "target",
    "detail",
    "detail_json",
    "security_event",
    "prev_hash",
    "hash",
];

/// An instant in microseconds as exported: RFC 3339 with microseconds, UTC.
fn micros_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn event_line(e: &pb::AuditEvent) -> serde_json::Value {
    let us = e
        .occurred_at
        .as_ref()
        .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
        .unwrap_or_default();
    json!({
        "seq": e.seq,
        "occurred_at": micros_text(us),
        "occurred_at_us": us,
        "actor": e.actor, "action": e.action, "target": e.target,
        "detail": serde_json::from_str::<serde_json::Value>(&e.detail_json).unwrap_or(serde_json::Value::Null),
        "detail_json": e.detail_json,
        "security_event": e.security_event, "prev_hash": e.prev_hash, "hash": e.hash,
    })
}

/// Reads one exported event strictly: every key present with its type,
/// nothing else, and the shown fields consistent with the hashed ones.
fn exported_record(j: &serde_json::Value) -> Result<AuditRecord, String> {
    let o = j.as_object().ok_or("is not a JSON object")?;
    if let Some(extra) = o.keys().find(|k| !EXPORT_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "has a field {extra:?} that is not part of an audit event"
        ));
    }
    let text = |k: &str| {
        o.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("field {k} is missing or not text"))
    };
    let int = |k: &str| {
        o.get(k)
            .and_then(|x| x.as_i64())
            .ok_or_else(|| format!("field {k} is missing or not an integer"))
    };
    let us = int("occurred_at_us")?;
    if text("occurred_at")? != micros_text(us) {
        return Err("field occurred_at does not match the hashed occurred_at_us".into());
    }
    let detail_json = text("detail_json")?;
    let parsed =
        serde_json::from_str::<serde_json::Value>(&detail_json).unwrap_or(serde_json::Value::Null);
    if o.get("detail") != Some(&parsed) {
        return Err("field detail does not match the hashed detail_json".into());
    }
    Ok(AuditRecord {
        seq: int("seq")?,
        occurred_at: chrono::DateTime::from_timestamp_micros(us)
            .ok_or("field occurred_at_us is out of range")?,
        actor: text("actor")?,
        action: text("action")?,
        target: text("target")?,
        detail: detail_json,
        security: o
            .get("security_event")
            .and_then(|x| x.as_bool())
            .ok_or("field security_event is missing or not a boolean")?,
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}

pub async fn run(opts: &ClientOpts, c: AuditCommand) -> anyhow::Result<ExitCode> {
    if let AuditCommand::Verify {
        file: Some(f),
        public_key,
    } = &c
    {
        return verify_file(f, opts.output, public_key.as_deref());
    }
    if let AuditCommand::PublicKey { data_dir } = &c {
        let s = idgov_server::app::audit_checkpoints::AuditSigner::load(data_dir)
            .map_err(anyhow::Error::msg)?;
        match opts.output {
            Format::Json => json(
                &json!({"algorithm": "ed25519", "public_key": s.public_key(), "key_id": s.key_id}),
            ),
            Format::Table => {
                crate::outln!("ed25519 {}", s.public_key());
                crate::outln!("key id {}", s.key_id);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::connect(opts).await?;
    let mut audit = crate::client::limited!(AuditServiceClient::new(client.channel));
    match c {
        // Answered above, without the server.
        AuditCommand::PublicKey { .. } => Ok(ExitCode::SUCCESS),
        AuditCommand::Verify { .. } => {
            let r = audit
                .verify_audit_chain(pb::VerifyAuditChainRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&json!({
                    "ok": r.ok, "events_checked": r.events_checked, "first_bad_seq": r.first_bad_seq,
                    "problem": r.problem, "head_hash": r.head_hash,
                    "checkpoints_checked": r.checkpoints_checked, "last_checkpoint_seq": r.last_checkpoint_seq,
                    "last_checkpoint_at": time(&r.last_checkpoint_at),
                })),
                Format::Table => {
                    if r.ok {
                        crate::outln!(
                            "audit chain OK: {} events verified, head {}",
                            r.events_checked,
                            r.head_hash
                        );
                        if r.checkpoints_checked > 0 {
                            crate::outln!(
                                "{} signed checkpoint(s) match, the newest at event {} ({})",
                                r.checkpoints_checked,
                                r.last_checkpoint_seq,
                                time(&r.last_checkpoint_at)
                            );
                        } else {
                            crate::outln!(
                                "no signed checkpoint yet (the service signs the head every 10 minutes)"
                            );
                        }
                    } else {
                        crate::outln!(
                            "AUDIT CHAIN BROKEN at event {}: {} ({} events verified before it)",
                            r.first_bad_seq,
                            r.problem,
                            r.events_checked
                        );
                    }
                }
            }
            Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Export {
            out,
            actor,
            target,
            employee,
        } => {
            let mut w: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut token = String::new();
            let mut n = 0u64;
            loop {
                let r = audit
                    .list_audit_events(pb::ListAuditEventsRequest {
                        page_size: 1000,
                        page_token: token,
                        actor: actor.clone(),
                        target: target.clone(),
                        employee_id: employee.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                for e in &r.events {
                    writeln!(w, "{}", event_line(e))?;
                    n += 1;
                }
                token = r.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            w.flush()?;
            if let Some(p) = out {
                eprintln!("exported {n} audit events to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::List {
            actor,
            target,
            action,
            employee,
            limit,
            page_token,
        } => {
            let (events, next) = up_to(limit, page_token, |page_size, page_token| {
                let mut audit = audit.clone();
                let req = pb::ListAuditEventsRequest {
                    page_size,
                    page_token,
                    actor: actor.clone(),
                    target: target.clone(),
                    action: action.clone(),
                    employee_id: employee.clone(),
                    ..Default::default()
                };
                async move {
                    let r = audit
                        .list_audit_events(req)
                        .await
                        .map_err(explain)?
                        .into_inner();
                    Ok((r.events, r.next_page_token))
                }
            })
            .await?;
            match opts.output {
                Format::Json => {
                    json(&serde_json::Value::Array(
                        events.iter().map(event_line).collect(),
                    ));
                    more_follow_on_stderr(
                        &next,
                        &format!("add --page-token {next} for the next ones, or raise --limit"),
                    );
                }
                Format::Table => {
                    let mut t = table(&["seq", "time", "actor", "action", "target", "detail"]);
                    for e in &events {
                        let mut detail = e.detail_json.clone();
                        if detail.len() > 120 {
                            detail.truncate(
                                detail
                                    .char_indices()
                                    .nth(117)
                                    .map(|(i, _)| i)
                                    .unwrap_or(117),
                            );
                            detail.push('…');
                        }
                        t.add_row(vec![
                            format!("{}{}", e.seq, if e.security_event { " !" } else { "" }),
                            time(&e.occurred_at),
                            e.actor.clone(),
                            e.action.clone(),
                            e.target.clone(),
                            detail,
                        ]);
                    }
                    crate::outln!("{t}");
                    crate::outln!("(! marks security events)");
                    if !next.is_empty() {
                        crate::outln!(
                            "(more follow: add --page-token {next} for the next ones, or raise --limit, or filter with --actor / --target / --action / --employee; `idgov audit export` writes them all)"
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Verifies an export offline: the same chain rules, no server needed.
/// A signed checkpoint found in an export (an `audit.checkpoint` event).
struct ExportedCheckpoint {
    hash: String,
    signed_at_us: i64,
    signature: String,
    /// The event that recorded it.
    at: i64,
}

/// The checkpoints an export carries, by the event they sign.
fn exported_checkpoints(
    path: &PathBuf,
) -> anyhow::Result<std::collections::BTreeMap<i64, ExportedCheckpoint>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = std::collections::BTreeMap::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if !line.contains("audit.checkpoint") {
            continue;
        }
        let Ok(j) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if j["action"] != "audit.checkpoint" {
            continue;
        }
        let d = &j["detail"];
        if let (Some(seq), Some(hash), Some(at_us), Some(sig), Some(at)) = (
            d["seq"].as_i64(),
            d["hash"].as_str(),
            d["signed_at_us"].as_i64(),
            d["signature"].as_str(),
            j["seq"].as_i64(),
        ) {
            out.insert(
                seq,
                ExportedCheckpoint {
                    hash: hash.to_string(),
                    signed_at_us: at_us,
                    signature: sig.to_string(),
                    at,
                },
            );
        }
    }
    Ok(out)
}

fn verify_file(path: &PathBuf, out: Format, public_key: Option<&str>) -> anyhow::Result<ExitCode> {
    let checkpoints = exported_checkpoints(path)?;
    let mut broken = None;
    if let Some(key) = public_key {
        for (seq, c) in &checkpoints {
            if let Err(e) = idgov_server::app::audit_checkpoints::verify_with_public_key(
                key,
                *seq,
                &c.hash,
                c.signed_at_us,
                &c.signature,
            ) {
                broken = Some(ChainBreak {
                    seq: c.at,
                    problem: format!("{e} (forged or from another service)"),
                });
                break;
            }
        }
    }
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut v = Verifier::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        if broken.is_some() {
            break;
        }
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = match serde_json::from_str::<serde_json::Value>(&line)
            .map_err(|e| format!("is not JSON ({e})"))
            .and_then(|j| exported_record(&j))
        {
            Ok(r) => r,
            Err(problem) => {
                broken = Some(ChainBreak {
                    seq: v.checked() as i64 + 1,
                    problem: format!("line {}: {problem}", i + 1),
                });
                break;
            }
        };
        if let Err(b) = v.check(&rec) {
            broken = Some(b);
            break;
        }
        if let Some(c) = checkpoints.get(&rec.seq)
            && c.hash != rec.hash
        {
            broken = Some(ChainBreak {
                seq: rec.seq,
                problem: format!(
                    "event {} does not have the hash signed at the checkpoint recorded by event {}: the chain was rewritten",
                    rec.seq, c.at
                ),
            });
        }
    }
    if broken.is_none()
        && let Some((seq, c)) = checkpoints.range(v.checked() as i64 + 1..).next()
    {
        broken = Some(ChainBreak {
            seq: *seq,
            problem: format!(
                "the checkpoint recorded by event {} names event {seq}, which the export does not hold",
                c.at
            ),
        });
    }
    match (out, &broken) {
        (Format::Json, _) => json(&json!({
            "ok": broken.is_none(), "events_checked": v.checked(),
            "first_bad_seq": broken.as_ref().map(|b| b.seq), "problem": broken.as_ref().map(|b| b.problem.clone()),
            "head_hash": v.head_hash(), "checkpoints": checkpoints.len(),
            "checkpoint_signatures_checked": public_key.is_some(),
        })),
        (Format::Table, None) => {
            crate::outln!(
                "export OK: {} events chain from genesis to {} (compare this head with `idgov audit verify`)",
                v.checked(),
                v.head_hash()
            );
            crate::outln!(
                "{} signed checkpoint(s) match the chain{}",
                checkpoints.len(),
                if public_key.is_some() {
                    ", their signatures checked with the key given"
                } else {
                    "; pass --public-key to check their signatures"
                }
            );
        }
        (Format::Table, Some(b)) => {
            crate::outln!("EXPORT BROKEN at event {}: {}", b.seq, b.problem)
        }
    }
    Ok(if broken.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
