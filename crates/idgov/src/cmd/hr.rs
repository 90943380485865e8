//! `idgov hr`: send events, import rosters, list events, handle held changes.

use crate::ClientOpts;
use crate::client::{Client, explain, more_follow_on_stderr, up_to};
use crate::output::{Format, enum_name, json, table, time};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use idgov::roster_csv;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum HrCommand {
    /// Send one HR event.
    Send(SendArgs),
    /// Import a roster CSV as a full snapshot (joiners, movers, leavers).
    Import(ImportArgs),
    /// List recorded HR events (e.g. the scheduled ones).
    Events(EventsArgs),
    /// Changes held by the mass-change guard.
    #[command(subcommand)]
    Held(HeldCommand),
    /// Show every change of a dry run (`import --dry-run`) whose answer
    /// showed only some, a page at a time, leavers first; a preview is
    /// kept for 24 hours.
    Preview {
        /// The preview id the dry run printed.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EventType {
    Hire,
    Update,
    Move,
    Terminate,
    Rehire,
    Rescind,
}

#[derive(Args)]
pub struct SendArgs {
    /// The kind of event.
    #[arg(long = "type", value_enum)]
    kind: EventType,
    #[arg(long)]
    employee_id: String,
    /// The sending system; with --event-id, the idempotency key.
    #[arg(long, default_value = "cli")]
    source: String,
    /// Unique per source (default: a new random id).
    #[arg(long)]
    event_id: Option<String>,
    /// RFC 3339 time or YYYY-MM-DD date (default: now).
    #[arg(long, default_value = "")]
    effective_at: String,
    /// IANA zone for a date-only --effective-at (default: the policy's HR zone).
    #[arg(long, default_value = "")]
    time_zone: String,
    /// For --type rescind: the event id to cancel.
    #[arg(long, default_value = "")]
    rescinds: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    department: Option<String>,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    job_code: Option<String>,
    #[arg(long)]
    location: Option<String>,
    #[arg(long)]
    cost_center: Option<String>,
    /// The manager's employee id ("" clears it).
    #[arg(long)]
    manager: Option<String>,
    /// employee, contractor or intern.
    #[arg(long)]
    employment_type: Option<String>,
    /// pending, cleared or failed.
    #[arg(long)]
    background_check: Option<String>,
    /// public, internal, confidential or restricted.
    #[arg(long)]
    clearance: Option<String>,
    #[arg(long)]
    start_date: Option<String>,
    #[arg(long)]
    end_date: Option<String>,
    /// When the background check was completed (YYYY-MM-DD); after a rehire
    /// a clearance counts only when dated on or after the new start date.
    #[arg(long)]
    background_check_date: Option<String>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The roster CSV (header: employee_id, display_name, … see README).
    file: PathBuf,
    /// The sending system.
    #[arg(long, default_value = "roster-csv")]
    source: String,
    /// Unique per snapshot (default: derived from the file's content, so
    /// importing the same file twice changes nothing the second time).
    #[arg(long)]
    sync_id: Option<String>,
    /// Only show what would change.
    #[arg(long)]
    dry_run: bool,
    /// Effective time of the snapshot, RFC 3339 (default: now).
    #[arg(long, default_value = "")]
    as_of: String,
    /// IANA zone the roster's dates are in (default: the policy's HR zone).
    #[arg(long, default_value = "")]
    time_zone: String,
}

#[derive(Args)]
pub struct EventsArgs {
    /// applied, scheduled, superseded, rescinded or rejected.
    #[arg(long)]
    state: Option<String>,
    #[arg(long, default_value = "")]
    employee_id: String,
    /// Only the events roster sync SYNC_ID made (the id `idgov hr import`
    /// printed), listed by employee id.
    #[arg(long, value_name = "SYNC_ID")]
    roster_sync: Option<String>,
    /// The source of the roster sync given with --roster-sync (default:
    /// roster-csv, as `idgov hr import` sends).
    #[arg(long, requires = "roster_sync")]
    source: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: i32,
}

#[derive(Subcommand)]
pub enum HeldCommand {
    /// List held changes.
    List {
        /// Show released and discarded ones instead: released, discarded.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show every change of a held roster sync (leavers first), a page at a
    /// time: `list` shows at most the first 1,000.
    Show { id: String },
    /// Apply a held change as staged.
    Release {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Discard a held change; nothing of it is applied.
    Discard {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(opts: &ClientOpts, c: HrCommand) -> anyhow::Result<ExitCode> {
    // A roster is read and checked before anything is sent anywhere.
    let roster = match &c {
        HrCommand::Import(a) => Some(read_roster(&a.file)?),
        _ => None,
    };
    let client = Client::connect(opts).await?;
    let mut hr = crate::client::limited!(HrServiceClient::new(client.channel));
    match c {
        HrCommand::Send(a) => send(&mut hr, opts.output, a).await,
        HrCommand::Import(a) => import(&mut hr, opts.output, a, roster.unwrap_or_default()).await,
        HrCommand::Events(a) => events(&mut hr, opts.output, a).await,
        HrCommand::Held(h) => held(&mut hr, opts.output, h).await,
        HrCommand::Preview { id } => {
            roster_changes(&mut hr, opts.output, Changes::Preview(id)).await
        }
    }
}

type Hr = HrServiceClient<crate::client::Authed>;

async fn send(hr: &mut Hr, out: Format, a: SendArgs) -> anyhow::Result<ExitCode> {
    let kind = match a.kind {
        EventType::Hire => pb::HrEventType::Hire,
        EventType::Update => pb::HrEventType::Update,
        EventType::Move => pb::HrEventType::Move,
        EventType::Terminate => pb::HrEventType::Terminate,
        EventType::Rehire => pb::HrEventType::Rehire,
        EventType::Rescind => pb::HrEventType::Rescind,
    };
    let enum_arg = |v: &Option<String>,
                    f: fn(&str) -> Result<i32, String>,
                    name: &str|
     -> anyhow::Result<i32> {
        v.as_deref()
            .map(f)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--{name}: {e}"))
            .map(|x| x.unwrap_or(0))
    };
    let attrs = pb::PersonAttributes {
        display_name: a.name,
        email: a.email,
        department: a.department,
        title: a.title,
        job_code: a.job_code,
        location: a.location,
        cost_center: a.cost_center,
        manager_employee_id: a.manager,
        employment_type: enum_arg(
            &a.employment_type,
            |s| roster_csv::employment_type(s).map(|x| x as i32),
            "employment-type",
        )?,
        background_check: enum_arg(
            &a.background_check,
            |s| roster_csv::background_check(s).map(|x| x as i32),
            "background-check",
        )?,
        clearance: enum_arg(
            &a.clearance,
            |s| roster_csv::classification(s).map(|x| x as i32),
            "clearance",
        )?,
        start_date: a.start_date,
        end_date: a.end_date,
        background_check_date: a.background_check_date,
    };
    let event_id = a
        .event_id
        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::now_v7()));
    let r = hr
        .submit_hr_event(pb::SubmitHrEventRequest {
            event: Some(pb::HrEvent {
                source: a.source,
                event_id: event_id.clone(),
                r#type: kind as i32,
                employee_id: a.employee_id.clone(),
                effective_at: a.effective_at,
                time_zone: a.time_zone,
                attributes: Some(attrs),
                rescinds_event_id: a.rescinds,
            }),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let state = enum_name(r.state().as_str_name(), "HR_EVENT_STATE_");
    match out {
        Format::Json => json(&json!({
            "event_id": event_id, "state": state, "duplicate": r.duplicate,
            "effective_at": time(&r.effective_at), "detail": r.detail,
            "grants_added": r.grants_added, "grants_revoked": r.grants_revoked,
        })),
        Format::Table => {
            crate::outln!(
                "{} {} for {}: {}{} (effective {}){}",
                if r.duplicate { "duplicate of" } else { "event" },
                event_id,
                a.employee_id,
                state,
                if r.detail.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", r.detail)
                },
                time(&r.effective_at),
                if r.grants_added + r.grants_revoked > 0 {
                    format!("; grants +{} −{}", r.grants_added, r.grants_revoked)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A parsed roster file and the digest of its bytes.
#[derive(Default)]
pub struct RosterFile {
    entries: Vec<pb::RosterEntry>,
    digest: String,
}

fn read_roster(file: &PathBuf) -> anyhow::Result<RosterFile> {
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let entries = roster_csv::parse(&data).map_err(|errs| {
        anyhow::anyhow!(
            "{} is not a valid roster:\n  - {}",
            file.display(),
            errs.join("\n  - ")
        )
    })?;
    Ok(RosterFile {
        entries,
        digest: hex::encode(Sha256::digest(&data)),
    })
}

/// The content part of a file's derived sync id: the first 24 hex digits
/// of the file's SHA-256 (`file`) when neither `--as-of` nor `--time-zone`
/// is given, else of the SHA-256 of the file's digest with both.
fn snapshot_digest(file: &str, as_of: &str, time_zone: &str) -> String {
    let full = if as_of.trim().is_empty() && time_zone.trim().is_empty() {
        file.to_string()
    } else {
        hex::encode(Sha256::digest(
            format!("{file}\0{}\0{}", as_of.trim(), time_zone.trim()).as_bytes(),
        ))
    };
    full.get(..24).unwrap_or(&full).to_string()
}

/// Streams a roster to the server under `header`, with a progress bar in
/// table output.
async fn send_roster(
    hr: &mut Hr,
    out: Format,
    header: pb::RosterHeader,
    entries: Vec<pb::RosterEntry>,
) -> anyhow::Result<pb::SyncRosterResponse> {
    let bar = Arc::new(if matches!(out, Format::Table) {
        ProgressBar::new(entries.len() as u64)
    } else {
        ProgressBar::hidden()
    });
    bar.set_style(
        ProgressStyle::with_template("{spinner} sending roster [{bar:30}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let header = pb::SyncRosterRequest {
        item: Some(pb::sync_roster_request::Item::Header(header)),
    };
    let counter = bar.clone();
    let stream = tokio_stream::iter(std::iter::once(header).chain(entries.into_iter().map(
        move |e| {
            counter.inc(1);
            pb::SyncRosterRequest {
                item: Some(pb::sync_roster_request::Item::Entry(e)),
            }
        },
    )));
    let result = hr.sync_roster(stream).await;
    bar.finish_and_clear();
    Ok(result.map_err(explain)?.into_inner())
}

async fn import(
    hr: &mut Hr,
    out: Format,
    a: ImportArgs,
    roster: RosterFile,
) -> anyhow::Result<ExitCode> {
    let source = a.source.clone();
    // By default a file's snapshot is named by its content (and the time
    // and zone it is read in, when given), so importing the same file the
    // same way twice (a retry) changes nothing the second time, and the
    // same file read in another zone is another snapshot.
    let derived = a.sync_id.is_none();
    let digest = snapshot_digest(&roster.digest, &a.as_of, &a.time_zone);
    let header = pb::RosterHeader {
        source: source.clone(),
        sync_id: a
            .sync_id
            .clone()
            .unwrap_or_else(|| format!("sha256-{digest}")),
        dry_run: a.dry_run,
        as_of: a.as_of.clone(),
        time_zone: a.time_zone.clone(),
    };
    let mut r = match send_roster(hr, out, header.clone(), roster.entries).await {
        Err(e)
            if a.sync_id.is_some()
                && crate::client::server_reason(&e) == Some("IDGOV_IDEMPOTENCY_CONFLICT") =>
        {
            return Err(e.context(
                "this --sync-id names another roster: pass a new one, or leave --sync-id out \
                 and the snapshot is named by the file's content",
            ));
        }
        r => r?,
    };
    // Unless the newer snapshot is this file's own restatement: then this
    // is a retry of it.
    let restated = r.superseded_by.starts_with(&format!("{}-", header.sync_id));
    if r.resent && derived && !r.superseded_by.is_empty() && !restated {
        // The same content as an earlier import, but HR's newer snapshot
        // came in between (A, then B, then A again): this file states its
        // content anew, so it is a new snapshot, not a retry.
        eprintln!(
            "{} was imported before as {}, and snapshot {} came since: importing it again as a new snapshot",
            a.file.display(),
            header.sync_id,
            r.superseded_by
        );
        let again = read_roster(&a.file)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
        let digest = snapshot_digest(&again.digest, &a.as_of, &a.time_zone);
        let header = pb::RosterHeader {
            sync_id: format!("sha256-{digest}-{stamp}"),
            ..header
        };
        r = send_roster(hr, out, header, again.entries).await?;
    }
    let outcome = enum_name(r.outcome().as_str_name(), "CHANGE_OUTCOME_");
    let d = r.diff.clone().unwrap_or_default();
    let g = r.guard.unwrap_or_default();
    match out {
        Format::Json => json(&json!({
            "sync_id": r.sync_id, "outcome": outcome, "entries": r.entries_received,
            "joiners": d.joiners, "movers": d.movers, "updates": d.updates, "leavers": d.leavers,
            "total_changes": d.total_changes, "changes_truncated": d.changes_truncated,
            "rehires": d.rehires, "withdrawals": d.withdrawals, "unchanged": d.unchanged,
            "resent": r.resent, "superseded_by": r.superseded_by, "content_sha256": r.content_sha256,
            "guard": {"active": g.active, "affected": g.affected, "threshold": g.threshold, "tripped": g.tripped},
            "held_change_id": r.held_change_id, "preview_id": r.preview_id,
            "changes": d.changes.iter().map(|c| json!({
                "employee_id": c.employee_id, "kind": enum_name(c.kind().as_str_name(), "ROSTER_CHANGE_KIND_"),
                "display_name": c.display_name,
                "changes": c.changes.iter().map(|f| json!({"field": f.field, "old": f.old_value, "new": f.new_value})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            if !d.changes.is_empty() && (a.dry_run || r.outcome() == pb::ChangeOutcome::Held) {
                crate::outln!("{}", diff_table(&d));
                if d.changes_truncated {
                    let all = if !r.preview_id.is_empty() {
                        format!(
                            "`idgov hr preview {}` lists them all (kept 24 hours)",
                            r.preview_id
                        )
                    } else if !r.held_change_id.is_empty() {
                        format!("`idgov hr held show {}` lists them all", r.held_change_id)
                    } else {
                        format!(
                            "its applied changes are HR events: `idgov hr events --roster-sync {} --source {}`",
                            r.sync_id, source
                        )
                    };
                    crate::outln!(
                        "(showing {} of {} changes, leavers first; {all})",
                        d.changes.len(),
                        d.total_changes
                    );
                }
            }
            // Withdrawn starts are rare: named only when there are some.
            let withdrawn = if d.withdrawals > 0 {
                format!(", {} withdrawn starts", d.withdrawals)
            } else {
                String::new()
            };
            crate::outln!(
                "roster {}: {} entries — {} joiners, {} movers, {} updates, {} leavers, {} rehires{withdrawn}, {} unchanged",
                r.sync_id,
                r.entries_received,
                d.joiners,
                d.movers,
                d.updates,
                d.leavers,
                d.rehires,
                d.unchanged
            );
            if r.resent {
                crate::outln!(
                    "already received as snapshot {} from {source}: this is its first answer; nothing was applied now",
                    r.sync_id
                );
                if !r.superseded_by.is_empty() {
                    crate::outln!(
                        "snapshot {} of {source} came since; to state this content as current again, import it with a new --sync-id",
                        r.superseded_by
                    );
                }
            }
            match r.outcome() {
                pb::ChangeOutcome::DryRun => crate::outln!("dry run: nothing was applied"),
                pb::ChangeOutcome::Held => crate::outln!(
                    "HELD: {} leavers{} exceed the guard's threshold of {} ({} active). Nothing was applied.\n\
                     Review it, then `idgov hr held release {} --reason …` or `idgov hr held discard {} --reason …`",
                    g.affected,
                    if d.withdrawals > 0 {
                        " and withdrawn starts"
                    } else {
                        ""
                    },
                    g.threshold,
                    g.active,
                    r.held_change_id,
                    r.held_change_id
                ),
                pb::ChangeOutcome::Unchanged => crate::outln!("nothing changed"),
                _ => crate::outln!("applied"),
            }
        }
    }
    Ok(if r.outcome() == pb::ChangeOutcome::Held {
        ExitCode::from(crate::output::EXIT_HELD)
    } else {
        ExitCode::SUCCESS
    })
}

fn diff_table(d: &pb::RosterDiff) -> comfy_table::Table {
    let mut t = table(&["change", "employee", "name", "what changes"]);
    for c in &d.changes {
        t.add_row(vec![
            enum_name(c.kind().as_str_name(), "ROSTER_CHANGE_KIND_"),
            c.employee_id.clone(),
            c.display_name.clone(),
            c.changes
                .iter()
                .map(|f| format!("{}: {:?} → {:?}", f.field, f.old_value, f.new_value))
                .collect::<Vec<_>>()
                .join("\n"),
        ]);
    }
    t
}

async fn events(hr: &mut Hr, out: Format, a: EventsArgs) -> anyhow::Result<ExitCode> {
    let state = match a.state.as_deref() {
        None | Some("") => pb::HrEventState::Unspecified,
        Some(s) => {
            pb::HrEventState::from_str_name(&format!("HR_EVENT_STATE_{}", s.to_ascii_uppercase()))
                .ok_or_else(|| {
                anyhow::anyhow!(
                    "--state must be applied, scheduled, superseded, rescinded or rejected"
                )
            })?
        }
    };
    let roster_source = match (&a.roster_sync, a.source) {
        (None, _) => String::new(),
        (Some(_), source) => source.unwrap_or_else(|| "roster-csv".into()),
    };
    let roster_sync_id = a.roster_sync.unwrap_or_default();
    let (events, next) = up_to(a.limit, String::new(), |page_size, page_token| {
        let mut hr = hr.clone();
        let req = pb::ListHrEventsRequest {
            page_size,
            page_token,
            state: state as i32,
            employee_id: a.employee_id.clone(),
            roster_source: roster_source.clone(),
            roster_sync_id: roster_sync_id.clone(),
        };
        async move {
            let r = hr.list_hr_events(req).await.map_err(explain)?.into_inner();
            Ok((r.events, r.next_page_token))
        }
    })
    .await?;
    let more = "raise --limit, or filter by --state / --employee-id / --roster-sync";
    match out {
        Format::Json => {
            json(&serde_json::Value::Array(
                events
                    .iter()
                .map(|e| {
                    let ev = e.event.clone().unwrap_or_default();
                    json!({
                        "source": ev.source, "event_id": ev.event_id, "employee_id": ev.employee_id,
                        "type": enum_name(ev.r#type().as_str_name(), "HR_EVENT_TYPE_"),
                        "state": enum_name(e.state().as_str_name(), "HR_EVENT_STATE_"),
                        "effective_at": time(&e.effective_at), "received_at": time(&e.received_at),
                        "applied_at": time(&e.applied_at), "detail": e.detail,
                    })
                })
                    .collect(),
            ));
            more_follow_on_stderr(&next, more);
        }
        Format::Table if events.is_empty() => crate::outln!("no HR events match"),
        Format::Table => {
            let mut t = table(&[
                "effective",
                "employee",
                "type",
                "state",
                "source / event",
                "detail",
            ]);
            for e in &events {
                let ev = e.event.clone().unwrap_or_default();
                t.add_row(vec![
                    time(&e.effective_at),
                    ev.employee_id.clone(),
                    enum_name(ev.r#type().as_str_name(), "HR_EVENT_TYPE_"),
                    enum_name(e.state().as_str_name(), "HR_EVENT_STATE_"),
                    format!("{} / {}", ev.source, ev.event_id),
                    e.detail.clone(),
                ]);
            }
            crate::outln!("{t}");
            if !next.is_empty() {
                crate::outln!("(more follow: {more})");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn held_json(h: &pb::HeldChange) -> serde_json::Value {
    let g = h.guard.unwrap_or_default();
    json!({
        "id": h.id, "kind": enum_name(h.kind().as_str_name(), "HELD_CHANGE_KIND_"),
        "state": enum_name(h.state().as_str_name(), "HELD_CHANGE_STATE_"),
        "created_at": time(&h.created_at), "created_by": h.created_by, "summary": h.summary,
        "guard": {"active": g.active, "affected": g.affected, "threshold": g.threshold},
        "decided_by": h.decided_by, "decided_at": time(&h.decided_at), "decision_reason": h.decision_reason,
    })
}

fn change_json(c: &pb::RosterChange) -> serde_json::Value {
    json!({
        "employee_id": c.employee_id,
        "kind": enum_name(c.kind().as_str_name(), "ROSTER_CHANGE_KIND_"),
        "display_name": c.display_name,
        "changes": c.changes.iter().map(|f| json!({
            "field": f.field, "old_value": f.old_value, "new_value": f.new_value,
        })).collect::<Vec<_>>(),
    })
}

/// Whose roster changes `roster_changes` shows.
enum Changes {
    /// A held roster sync's (`idgov hr held show`).
    Held(String),
    /// A dry run's preview (`idgov hr preview`).
    Preview(String),
}

/// `idgov hr held show` and `idgov hr preview`: every change of a held
/// roster sync or of a dry run, read a page at a time and printed as it
/// comes (a table per page, or one JSON object written change by change),
/// so a roster of any size is shown in bounded memory.
async fn roster_changes(hr: &mut Hr, out: Format, of: Changes) -> anyhow::Result<ExitCode> {
    let mut token = String::new();
    let mut written = 0usize;
    let mut first = true;
    loop {
        let (changes, next, total, expires) = match &of {
            Changes::Held(id) => {
                let p = hr
                    .list_held_roster_changes(pb::ListHeldRosterChangesRequest {
                        id: id.clone(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                (p.changes, p.next_page_token, p.total_changes, None)
            }
            Changes::Preview(id) => {
                let p = hr
                    .list_roster_preview(pb::ListRosterPreviewRequest {
                        preview_id: id.clone(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                (p.changes, p.next_page_token, p.total_changes, p.expires_at)
            }
        };
        let id = match &of {
            Changes::Held(id) | Changes::Preview(id) => id,
        };
        match out {
            Format::Json => {
                if first {
                    let head = match &of {
                        Changes::Held(_) => format!("\"id\": {}", json!(id)),
                        Changes::Preview(_) => format!(
                            "\"preview_id\": {}, \"expires_at\": {}",
                            json!(id),
                            json!(time(&expires))
                        ),
                    };
                    crate::outln!("{{{head}, \"total_changes\": {total}, \"changes\": [");
                }
                for c in &changes {
                    let sep = if written == 0 { "" } else { "," };
                    crate::outln!("{sep}{}", change_json(c));
                    written += 1;
                }
            }
            Format::Table => {
                if first {
                    match &of {
                        Changes::Held(_) => crate::outln!(
                            "{total} changes of held roster sync {id}, in the order they would apply (leavers first):"
                        ),
                        Changes::Preview(_) => crate::outln!(
                            "{total} changes of roster dry run {id} (kept until {}), in the order they would apply (leavers first); nothing was applied:",
                            time(&expires)
                        ),
                    }
                }
                if !changes.is_empty() {
                    let d = pb::RosterDiff {
                        changes,
                        ..Default::default()
                    };
                    crate::outln!("{}", diff_table(&d));
                }
            }
        }
        first = false;
        if next.is_empty() {
            if let Format::Json = out {
                crate::outln!("]}}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        token = next;
    }
}

async fn held(hr: &mut Hr, out: Format, c: HeldCommand) -> anyhow::Result<ExitCode> {
    let changes = match c {
        HeldCommand::List { state } => {
            let st = match state.as_deref() {
                None | Some("held") => pb::HeldChangeState::Held,
                Some("released") => pb::HeldChangeState::Released,
                Some("discarded") => pb::HeldChangeState::Discarded,
                Some(other) => anyhow::bail!("--state {other:?}: use held, released or discarded"),
            };
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = hr
                    .list_held_changes(pb::ListHeldChangesRequest {
                        page_size: 1000,
                        page_token: token,
                        state: st as i32,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                all.extend(page.held_changes);
                if page.next_page_token.is_empty() {
                    break all;
                }
                token = page.next_page_token;
            }
        }
        HeldCommand::Show { id } => return roster_changes(hr, out, Changes::Held(id)).await,
        HeldCommand::Release { id, reason } => hr
            .release_held_change(pb::ReleaseHeldChangeRequest { id, reason })
            .await
            .map_err(explain)?
            .into_inner()
            .held_change
            .into_iter()
            .collect(),
        HeldCommand::Discard { id, reason } => hr
            .discard_held_change(pb::DiscardHeldChangeRequest { id, reason })
            .await
            .map_err(explain)?
            .into_inner()
            .held_change
            .into_iter()
            .collect(),
    };
    match out {
        Format::Json => json(&serde_json::Value::Array(
            changes.iter().map(held_json).collect(),
        )),
        Format::Table => {
            if changes.is_empty() {
                crate::outln!("no held changes");
            }
            let mut t = table(&["id", "kind", "state", "created", "by", "summary"]);
            for h in &changes {
                t.add_row(vec![
                    h.id.clone(),
                    enum_name(h.kind().as_str_name(), "HELD_CHANGE_KIND_"),
                    enum_name(h.state().as_str_name(), "HELD_CHANGE_STATE_"),
                    time(&h.created_at),
                    h.created_by.clone(),
                    h.summary.clone(),
                ]);
            }
            if !changes.is_empty() {
                crate::outln!("{t}");
            }
            for h in &changes {
                if let Some(d) = &h.diff
                    && !d.changes.is_empty()
                    && h.state() == pb::HeldChangeState::Held
                {
                    crate::outln!("staged changes of {}:\n{}", h.id, diff_table(d));
                    if d.changes_truncated {
                        crate::outln!(
                            "(the first {} of {}; `idgov hr held show {}` lists them all)",
                            d.changes.len(),
                            d.total_changes,
                            h.id
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
