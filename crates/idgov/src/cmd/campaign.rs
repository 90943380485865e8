//! `idgov campaign …`: access review campaigns, their items and decisions,
//! the report, and the evidence an auditor verifies offline.

use crate::ClientOpts;
use crate::client::{Client, explain, more_follow_on_stderr, up_to};
use crate::output::{Format, enum_name, json, plain, table, time};
use clap::Subcommand;
use idgov_domain::evidence::{Checker, Line};
use idgov_proto::v1 as pb;
use idgov_proto::v1::campaign_service_client::CampaignServiceClient;
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum CampaignCommand {
    /// What starting a campaign would create (nothing is written).
    Preview {
        /// The campaign's id in the policy (`[[campaigns]] id`).
        definition: String,
    },
    /// Start a campaign now.
    Start { definition: String },
    /// List campaigns, newest first.
    List {
        /// Only those not closed.
        #[arg(long)]
        open: bool,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// One campaign.
    Show { id: String },
    /// Review items: yours by default; staff may list a campaign's.
    Items {
        #[arg(long)]
        campaign: Option<String>,
        /// open, certified, revoked, kept, flagged or superseded.
        #[arg(long)]
        state: Option<String>,
        /// Every item of the campaign (staff readers), not only yours.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Certify or revoke items (one call, each checked on its own).
    Decide {
        /// The items.
        #[arg(required = true)]
        items: Vec<String>,
        #[arg(long, conflicts_with = "revoke")]
        certify: bool,
        #[arg(long)]
        revoke: bool,
        /// Required to revoke, and to certify restricted access.
        #[arg(long, short = 'j', default_value = "")]
        justification: String,
    },
    /// Give an item to another reviewer (never to the person whose access it is).
    Reassign {
        item: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: String,
    },
    /// Close now: unanswered items take their level's default.
    Close { id: String },
    /// Completion, decisions per reviewer and rubber-stamp indicators.
    Report { id: String },
    /// Export the evidence (JSON lines) to a file.
    Export {
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check an evidence export offline (no server needed).
    VerifyEvidence { path: PathBuf },
}

fn state_from(s: Option<&str>) -> anyhow::Result<pb::ReviewItemState> {
    Ok(match s {
        None | Some("") => pb::ReviewItemState::Unspecified,
        Some("open") => pb::ReviewItemState::Open,
        Some("certified") => pb::ReviewItemState::Certified,
        Some("revoked") => pb::ReviewItemState::Revoked,
        Some("kept") => pb::ReviewItemState::Kept,
        Some("flagged") => pb::ReviewItemState::Flagged,
        Some("superseded") => pb::ReviewItemState::Superseded,
        Some(o) => anyhow::bail!(
            "--state {o:?}: use open, certified, revoked, kept, flagged or superseded"
        ),
    })
}

fn campaign_json(c: &pb::Campaign) -> serde_json::Value {
    json!({
        "id": c.id, "definition_id": c.definition_id, "name": c.name,
        "state": enum_name(c.state().as_str_name(), "CAMPAIGN_STATE_"),
        "policy_version": c.policy_version, "started_at": time(&c.started_at), "started_by": c.started_by,
        "due_at": time(&c.due_at), "closed_at": time(&c.closed_at), "items": c.items, "mover": c.mover,
        "held_change_id": c.held_change_id,
    })
}

fn item_json(i: &pb::ReviewItem) -> serde_json::Value {
    json!({
        "id": i.id, "campaign_id": i.campaign_id, "grant_id": i.grant_id, "employee_id": i.employee_id,
        "entitlement_id": i.entitlement_id,
        "classification": enum_name(i.classification().as_str_name(), "CLASSIFICATION_"),
        "source": i.source, "source_ref": i.source_ref, "granted_at": time(&i.granted_at),
        "approvers": i.approvers, "last_decision": i.last_decision, "last_reviewed_at": time(&i.last_reviewed_at),
        "peers_holding": i.peers_holding, "peers_total": i.peers_total,
        "recommendation": i.recommendation, "reason": i.reason, "stage": i.stage, "reviewer": i.reviewer,
        "note": i.note, "state": enum_name(i.state().as_str_name(), "REVIEW_ITEM_STATE_"),
        "decided_by": i.decided_by, "decided_at": time(&i.decided_at), "justification": i.justification,
    })
}

fn print_campaign(c: &pb::Campaign) {
    crate::outln!(
        "campaign {} ({}): {} — {} items, started {} by {}, due {}{}",
        c.id,
        c.name,
        enum_name(c.state().as_str_name(), "CAMPAIGN_STATE_"),
        c.items,
        time(&c.started_at),
        c.started_by,
        time(&c.due_at),
        if c.held_change_id.is_empty() {
            String::new()
        } else {
            format!("; close held as {} (idgov hr held list)", c.held_change_id)
        }
    );
}

pub async fn run(opts: &ClientOpts, c: CampaignCommand) -> anyhow::Result<ExitCode> {
    if let CampaignCommand::VerifyEvidence { path } = &c {
        return verify_evidence(path, opts.output);
    }
    let client = Client::connect(opts).await?;
    let mut svc = crate::client::limited!(CampaignServiceClient::new(client.channel));
    match c {
        // Handled above, without a server.
        CampaignCommand::VerifyEvidence { .. } => {}
        CampaignCommand::Preview { definition } => {
            let p = svc
                .preview_campaign(pb::PreviewCampaignRequest {
                    definition_id: definition,
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&json!({
                    "definition_id": p.definition_id, "items": p.items, "people": p.people,
                    "by_level": p.by_level.iter().map(|l| json!({
                        "classification": enum_name(l.classification().as_str_name(), "CLASSIFICATION_"),
                        "items": l.items})).collect::<Vec<_>>(),
                    "by_reviewer": p.by_reviewer.iter().map(|r| json!({"reviewer": r.reviewer, "items": r.items})).collect::<Vec<_>>(),
                })),
                Format::Table => {
                    crate::outln!(
                        "{}: {} items for {} people (nothing was written)",
                        p.definition_id,
                        p.items,
                        p.people
                    );
                    for l in &p.by_level {
                        crate::outln!(
                            "  {}: {}",
                            enum_name(l.classification().as_str_name(), "CLASSIFICATION_"),
                            l.items
                        );
                    }
                    let mut t = table(&["reviewer", "items"]);
                    for r in &p.by_reviewer {
                        t.add_row(vec![r.reviewer.clone(), r.items.to_string()]);
                    }
                    if !p.by_reviewer.is_empty() {
                        crate::outln!("{t}");
                    }
                }
            }
        }
        CampaignCommand::Start { definition } => {
            let c = svc
                .start_campaign(pb::StartCampaignRequest {
                    definition_id: definition,
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&campaign_json(&c)),
                Format::Table => {
                    print_campaign(&c);
                    crate::outln!("reviewers see their items with `idgov campaign items`");
                }
            }
        }
        CampaignCommand::Show { id } => {
            let c = svc
                .get_campaign(pb::GetCampaignRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&campaign_json(&c)),
                Format::Table => print_campaign(&c),
            }
        }
        CampaignCommand::List { open, limit } => {
            let (items, next) = up_to(limit, String::new(), |page_size, page_token| {
                let mut svc = svc.clone();
                let req = pb::ListCampaignsRequest {
                    open_only: open,
                    page_size,
                    page_token,
                };
                async move {
                    let r = svc.list_campaigns(req).await.map_err(explain)?.into_inner();
                    Ok((r.campaigns, r.next_page_token))
                }
            })
            .await?;
            if matches!(opts.output, Format::Json) {
                more_follow_on_stderr(&next, "raise --limit or list --open ones");
            }
            let r = pb::ListCampaignsResponse {
                campaigns: items,
                next_page_token: next,
            };
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.campaigns.iter().map(campaign_json).collect(),
                )),
                Format::Table => {
                    if r.campaigns.is_empty() {
                        crate::outln!(
                            "no campaigns yet; `idgov campaign start ID` starts one defined in the policy"
                        );
                    } else {
                        let mut t =
                            table(&["id", "definition", "state", "items", "started", "due"]);
                        for c in &r.campaigns {
                            t.add_row(vec![
                                c.id.clone(),
                                c.definition_id.clone(),
                                enum_name(c.state().as_str_name(), "CAMPAIGN_STATE_"),
                                c.items.to_string(),
                                time(&c.started_at),
                                time(&c.due_at),
                            ]);
                        }
                        crate::outln!("{t}");
                        if !r.next_page_token.is_empty() {
                            crate::outln!("(more follow: raise --limit or list --open ones)");
                        }
                    }
                }
            }
        }
        CampaignCommand::Items {
            campaign,
            state,
            all,
            limit,
        } => {
            let campaign_id = campaign.unwrap_or_default();
            let state = state_from(state.as_deref())? as i32;
            let (items, next) = up_to(limit, String::new(), |page_size, page_token| {
                let mut svc = svc.clone();
                let req = pb::ListReviewItemsRequest {
                    mine: !all,
                    campaign_id: campaign_id.clone(),
                    state,
                    employee_id: String::new(),
                    page_size,
                    page_token,
                };
                async move {
                    let r = svc
                        .list_review_items(req)
                        .await
                        .map_err(explain)?
                        .into_inner();
                    Ok((r.items, r.next_page_token))
                }
            })
            .await?;
            if matches!(opts.output, Format::Json) {
                more_follow_on_stderr(&next, "raise --limit or filter by --state");
            }
            let r = pb::ListReviewItemsResponse {
                items,
                next_page_token: next,
            };
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.items.iter().map(item_json).collect(),
                )),
                Format::Table => {
                    if r.items.is_empty() {
                        crate::outln!(
                            "no review items{}",
                            if all { "" } else { " are assigned to you" }
                        );
                    } else {
                        let mut t = table(&[
                            "item", "person", "access", "class", "source", "advice", "why", "state",
                        ]);
                        for i in &r.items {
                            t.add_row(vec![
                                i.id.clone(),
                                i.employee_id.clone(),
                                i.entitlement_id.clone(),
                                enum_name(i.classification().as_str_name(), "CLASSIFICATION_"),
                                format!("{} {}", i.source, i.source_ref),
                                i.recommendation.clone(),
                                plain(&i.reason),
                                enum_name(i.state().as_str_name(), "REVIEW_ITEM_STATE_"),
                            ]);
                        }
                        crate::outln!("{t}");
                        crate::outln!(
                            "{} item(s); decide with `idgov campaign decide ITEM… --certify` or `--revoke -j WHY`",
                            r.items.len()
                        );
                    }
                    if !r.next_page_token.is_empty() {
                        crate::outln!("(more follow: raise --limit or filter by --state)");
                    }
                }
            }
        }
        CampaignCommand::Decide {
            items,
            certify,
            revoke,
            justification,
        } => {
            if certify == revoke {
                anyhow::bail!("say --certify or --revoke");
            }
            let verdict = if certify {
                pb::ReviewVerdict::Certify
            } else {
                pb::ReviewVerdict::Revoke
            };
            let r = svc
                .decide_review_items(pb::DecideReviewItemsRequest {
                    decisions: items
                        .into_iter()
                        .map(|item_id| pb::ReviewDecision {
                            item_id,
                            verdict: verdict as i32,
                            justification: justification.clone(),
                        })
                        .collect(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let failed = r.results.iter().filter(|x| !x.ok).count();
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.results
                        .iter()
                        .map(|x| json!({"item_id": x.item_id, "ok": x.ok, "code": x.code, "message": x.message,
                                        "item": x.item.as_ref().map(item_json)}))
                        .collect(),
                )),
                Format::Table => {
                    for x in &r.results {
                        match (&x.item, x.ok) {
                            (Some(i), true) => crate::outln!(
                                "{}: {}{}",
                                x.item_id,
                                enum_name(i.state().as_str_name(), "REVIEW_ITEM_STATE_"),
                                if i.state() == pb::ReviewItemState::Open {
                                    format!(" — now with {} for the {} stage", i.reviewer, i.stage)
                                } else {
                                    String::new()
                                }
                            ),
                            _ => crate::outln!("{}: refused ({}): {}", x.item_id, x.code, x.message),
                        }
                    }
                }
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        CampaignCommand::Reassign { item, to, reason } => {
            let i = svc
                .reassign_review_item(pb::ReassignReviewItemRequest {
                    item_id: item,
                    to_employee_id: to,
                    reason,
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&item_json(&i)),
                Format::Table => crate::outln!("{} is now with {}", i.id, i.reviewer),
            }
        }
        CampaignCommand::Close { id } => {
            let o = svc
                .close_campaign(pb::CloseCampaignRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&json!({
                    "campaign": o.campaign.as_ref().map(campaign_json), "defaulted": o.defaulted,
                    "revoked_by_default": o.revoked_by_default, "superseded": o.superseded,
                    "held_change_id": o.held_change_id,
                })),
                Format::Table => {
                    if !o.held_change_id.is_empty() {
                        crate::outln!(
                            "HELD: the defaults would revoke access of more people than the guard allows; nothing was applied.\n\
                             Release with `idgov hr held release {} --reason …` or discard (the unanswered are then kept, flagged).",
                            o.held_change_id
                        );
                        return Ok(ExitCode::from(crate::output::EXIT_HELD));
                    }
                    crate::outln!(
                        "closed: {} unanswered item(s) took their default ({} revoked), {} superseded",
                        o.defaulted,
                        o.revoked_by_default,
                        o.superseded
                    );
                }
            }
        }
        CampaignCommand::Report { id } => {
            let r = svc
                .get_campaign_report(pb::GetCampaignReportRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&json!({
                    "campaign_id": r.campaign_id, "items": r.items, "decided": r.decided,
                    "by_state": r.by_state.iter().map(|s| (s.state.clone(), s.items)).collect::<std::collections::BTreeMap<_, _>>(),
                    "reviewers": r.reviewers.iter().map(|x| json!({
                        "reviewer": x.reviewer, "items": x.items, "open": x.open, "certified": x.certified,
                        "revoked": x.revoked, "approve_rate": x.approve_rate,
                        "median_seconds_per_decision": x.median_seconds_per_decision, "bulk_decisions": x.bulk_decisions,
                        "decided_without_opening": x.decided_without_opening,
                    })).collect::<Vec<_>>(),
                })),
                Format::Table => {
                    let done = if r.items > 0 {
                        100.0 * r.decided as f64 / r.items as f64
                    } else {
                        0.0
                    };
                    crate::outln!(
                        "campaign {}: {} items, {} decided by reviewers ({done:.0}%)",
                        r.campaign_id,
                        r.items,
                        r.decided
                    );
                    crate::outln!(
                        "  {}",
                        r.by_state
                            .iter()
                            .map(|s| format!("{} {}", s.items, s.state))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let mut t = table(&[
                        "reviewer",
                        "items",
                        "open",
                        "certified",
                        "revoked",
                        "approve rate",
                        "median s/decision",
                        "bulk",
                        "unopened",
                    ]);
                    for x in &r.reviewers {
                        t.add_row(vec![
                            x.reviewer.clone(),
                            x.items.to_string(),
                            x.open.to_string(),
                            x.certified.to_string(),
                            x.revoked.to_string(),
                            format!("{:.0}%", x.approve_rate * 100.0),
                            format!("{:.1}", x.median_seconds_per_decision),
                            x.bulk_decisions.to_string(),
                            x.decided_without_opening.to_string(),
                        ]);
                    }
                    crate::outln!("{t}");
                }
            }
        }
        CampaignCommand::Export { id, out } => {
            let mut stream = svc
                .export_campaign_evidence(pb::ExportCampaignEvidenceRequest { id: id.clone() })
                .await
                .map_err(explain)?
                .into_inner();
            let tmp = out.with_extension("partial");
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?,
            );
            let mut bytes = 0usize;
            while let Some(chunk) = stream.message().await.map_err(explain)? {
                bytes += chunk.data.len();
                f.write_all(&chunk.data)?;
            }
            f.flush()?;
            drop(f);
            std::fs::rename(&tmp, &out)?;
            match opts.output {
                Format::Json => json(
                    &json!({"campaign_id": id, "path": out.display().to_string(), "bytes": bytes}),
                ),
                Format::Table => crate::outln!(
                    "evidence of {id} written to {} ({bytes} bytes); check it anywhere with `idgov campaign verify-evidence {}`",
                    out.display(),
                    out.display()
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks an export offline.
fn verify_evidence(path: &PathBuf, out: Format) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut checker = Checker::new();
    let mut bad_lines = Vec::new();
    for (k, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("line {}: {e}", k + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(&line) {
            Ok(l) => checker.line(k + 1, l),
            Err(e) => bad_lines.push(format!("line {}: not an evidence record ({e})", k + 1)),
        }
    }
    let verdict = checker.finish();
    let problems: Vec<String> = match &verdict {
        Ok(_) => bad_lines.clone(),
        Err(p) => bad_lines.iter().cloned().chain(p.iter().cloned()).collect(),
    };
    match (out, &verdict) {
        (Format::Json, Ok(s)) if problems.is_empty() => json(&json!({"ok": true, "summary": s})),
        (Format::Json, _) => json(&json!({"ok": false, "problems": problems})),
        (Format::Table, Ok(s)) if problems.is_empty() => crate::outln!(
            "evidence OK: campaign {}, {} items, {} decisions each backed by its audit event, {} audit events chained to head {} ({})",
            s.campaign_id,
            s.items,
            s.decisions,
            s.audit_events,
            s.head_seq,
            s.head_hash.get(..16).unwrap_or(&s.head_hash)
        ),
        (Format::Table, _) => {
            crate::outln!("EVIDENCE BROKEN: {} problem(s)", problems.len());
            for p in &problems {
                crate::outln!("  - {p}");
            }
        }
    }
    Ok(if problems.is_empty() && verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
