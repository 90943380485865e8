//! `idgov directory`: sync with the directory and look at the drift.

use crate::ClientOpts;
use crate::client::{Client, explain};
use crate::output::{Format, enum_name, json, table, time};
use clap::Subcommand;
use idgov_proto::v1 as pb;
use idgov_proto::v1::directory_service_client::DirectoryServiceClient;
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Compare the directory with idgov; record the drift and remediate
    /// what the directory configuration says to.
    Sync {
        /// Only report; record and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the drift of the latest sync (or of --sync-id).
    Drift {
        /// orphan_account, enabled_leaver, unmanaged_membership, missing_membership or missing_account.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value = "")]
        sync_id: String,
    },
}

fn drift_json(d: &pb::DriftItem) -> serde_json::Value {
    json!({
        "seq": d.seq, "kind": enum_name(d.kind().as_str_name(), "DRIFT_KIND_"), "employee_id": d.employee_id,
        "account_dn": d.account_dn, "group_dn": d.group_dn, "entitlement_id": d.entitlement_id, "action": d.action,
    })
}

fn drift_table(items: &[pb::DriftItem]) -> comfy_table::Table {
    let mut t = table(&["drift", "employee", "account", "group", "action"]);
    for d in items {
        t.add_row(vec![
            enum_name(d.kind().as_str_name(), "DRIFT_KIND_"),
            d.employee_id.clone(),
            d.account_dn.clone(),
            d.group_dn.clone(),
            d.action.clone(),
        ]);
    }
    t
}

pub async fn run(opts: &ClientOpts, c: DirectoryCommand) -> anyhow::Result<ExitCode> {
    let client = Client::connect(opts).await?;
    let mut dir = crate::client::limited!(DirectoryServiceClient::new(client.channel));
    match c {
        DirectoryCommand::Sync { dry_run } => {
            let r = dir
                .run_directory_sync(pb::RunDirectorySyncRequest { dry_run })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&json!({
                    "id": r.id, "dry_run": r.dry_run, "accounts": r.accounts, "groups": r.groups,
                    "drift": r.drift_counts, "remediations_queued": r.remediations_queued, "grants_imported": r.grants_imported,
                    "started_at": time(&r.started_at), "finished_at": time(&r.finished_at),
                    "complete": r.complete,
                    "items": r.drift.iter().map(drift_json).collect::<Vec<_>>(),
                })),
                Format::Table => {
                    if !r.drift.is_empty() {
                        crate::outln!("{}", drift_table(&r.drift));
                        let total: i64 = r.drift_counts.values().sum();
                        if total > r.drift.len() as i64 {
                            crate::outln!(
                                "(showing the first {} of {total} drift items)",
                                r.drift.len()
                            );
                        }
                    }
                    let counts: Vec<String> = r
                        .drift_counts
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect();
                    crate::outln!(
                        "{}sync {}: {} accounts, {} groups; drift: {}; {} remediation(s) queued, {} grant(s) imported",
                        if r.dry_run { "dry-run " } else { "" },
                        r.id,
                        r.accounts,
                        r.groups,
                        if counts.is_empty() {
                            "none".into()
                        } else {
                            counts.join(", ")
                        },
                        r.remediations_queued,
                        r.grants_imported
                    );
                    if !r.dry_run && !counts.is_empty() {
                        crate::outln!(
                            "see it with `idgov directory drift`; follow remediations with `idgov provisioning list`"
                        );
                    }
                }
            }
        }
        DirectoryCommand::Drift { kind, sync_id } => {
            let kind = match kind.as_deref() {
                None | Some("") => pb::DriftKind::Unspecified,
                Some(k) => {
                    pb::DriftKind::from_str_name(&format!("DRIFT_KIND_{}", k.to_ascii_uppercase()))
                        .ok_or_else(|| anyhow::anyhow!("--kind {k:?} is not a drift kind"))?
                }
            };
            let mut items = Vec::new();
            let mut token = String::new();
            let id = loop {
                let r = dir
                    .list_drift(pb::ListDriftRequest {
                        sync_id: sync_id.clone(),
                        kind: kind as i32,
                        page_size: 1000,
                        page_token: token,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                items.extend(r.drift);
                token = r.next_page_token;
                if token.is_empty() {
                    break r.sync_id;
                }
            };
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    items.iter().map(drift_json).collect(),
                )),
                Format::Table => {
                    crate::outln!("{}", drift_table(&items));
                    crate::outln!("{} drift item(s) in sync {id}", items.len());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
