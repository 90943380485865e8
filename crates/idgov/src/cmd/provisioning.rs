//! `idgov provisioning`: the directory operations idgov owes the directory.

use crate::ClientOpts;
use crate::client::{Client, explain};
use crate::output::{Format, enum_name, json, table, time};
use clap::Subcommand;
use idgov_proto::v1 as pb;
use idgov_proto::v1::provisioning_service_client::ProvisioningServiceClient;
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ProvisioningCommand {
    /// List directory operations, oldest first.
    List {
        /// pending or done (default: both).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value = "")]
        employee_id: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
}

pub async fn run(opts: &ClientOpts, c: ProvisioningCommand) -> anyhow::Result<ExitCode> {
    let ProvisioningCommand::List {
        state,
        employee_id,
        limit,
    } = c;
    let state = match state.as_deref() {
        None | Some("") => pb::DirectoryOperationState::Unspecified,
        Some("pending") => pb::DirectoryOperationState::Pending,
        Some("done") => pb::DirectoryOperationState::Done,
        Some(o) => anyhow::bail!("--state {o:?}: use pending or done"),
    };
    let client = Client::connect(opts).await?;
    let r = ProvisioningServiceClient::new(client.channel)
        .list_directory_operations(pb::ListDirectoryOperationsRequest {
            page_size: limit,
            page_token: String::new(),
            state: state as i32,
            employee_id,
        })
        .await
        .map_err(explain)?
        .into_inner();
    match opts.output {
        Format::Json => json(&serde_json::Value::Array(
            r.operations
                .iter()
                .map(|o| {
                    json!({
                        "id": o.id, "employee_id": o.employee_id,
                        "kind": enum_name(o.kind().as_str_name(), "DIRECTORY_OPERATION_KIND_"),
                        "group_dn": o.group_dn, "entitlement_id": o.entitlement_id, "cause": o.cause,
                        "state": enum_name(o.state().as_str_name(), "DIRECTORY_OPERATION_STATE_"),
                        "attempts": o.attempts, "last_error": o.last_error, "outcome": o.outcome,
                        "created_at": time(&o.created_at), "next_attempt_at": time(&o.next_attempt_at),
                        "done_at": time(&o.done_at), "age_seconds": o.age_seconds,
                    })
                })
                .collect(),
        )),
        Format::Table => {
            let mut t = table(&["id", "employee", "operation", "group", "state", "tries", "age", "last error / outcome"]);
            for o in &r.operations {
                let state = enum_name(o.state().as_str_name(), "DIRECTORY_OPERATION_STATE_");
                t.add_row(vec![
                    o.id.to_string(),
                    o.employee_id.clone(),
                    enum_name(o.kind().as_str_name(), "DIRECTORY_OPERATION_KIND_"),
                    o.group_dn.clone(),
                    state.clone(),
                    o.attempts.to_string(),
                    format!("{} s", o.age_seconds),
                    if state == "pending" { o.last_error.clone() } else { o.outcome.clone() },
                ]);
            }
            crate::outln!("{t}");
            let pending = r.operations.iter().filter(|o| o.state() == pb::DirectoryOperationState::Pending).count();
            crate::outln!("{} operation(s), {pending} pending", r.operations.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
