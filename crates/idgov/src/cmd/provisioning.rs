//! `idgov provisioning`: the directory operations idgov owes the directory.

use crate::ClientOpts;
use crate::client::{Client, explain, more_follow_on_stderr, up_to};
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
        /// pending, done, failed or superseded (default: all).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value = "")]
        employee_id: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Put a failed operation back in the queue, after fixing its cause.
    Retry {
        /// The operation's id (see `idgov provisioning list --state failed`).
        id: i64,
    },
}

pub async fn run(opts: &ClientOpts, c: ProvisioningCommand) -> anyhow::Result<ExitCode> {
    let (state, employee_id, limit) = match c {
        ProvisioningCommand::List {
            state,
            employee_id,
            limit,
        } => (state, employee_id, limit),
        ProvisioningCommand::Retry { id } => {
            let client = Client::connect(opts).await?;
            let o = crate::client::limited!(ProvisioningServiceClient::new(client.channel))
                .retry_directory_operation(pb::RetryDirectoryOperationRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(
                    &json!({"id": o.id, "state": enum_name(o.state().as_str_name(), "DIRECTORY_OPERATION_STATE_")}),
                ),
                Format::Table => crate::outln!(
                    "operation {} ({} of {}) is pending again; the worker applies it now",
                    o.id,
                    enum_name(o.kind().as_str_name(), "DIRECTORY_OPERATION_KIND_"),
                    o.employee_id
                ),
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let state = match state.as_deref() {
        None | Some("") => pb::DirectoryOperationState::Unspecified,
        Some("pending") => pb::DirectoryOperationState::Pending,
        Some("done") => pb::DirectoryOperationState::Done,
        Some("failed") => pb::DirectoryOperationState::Failed,
        Some("superseded") => pb::DirectoryOperationState::Superseded,
        Some(o) => anyhow::bail!("--state {o:?}: use pending, done, failed or superseded"),
    };
    let client = Client::connect(opts).await?;
    let svc = crate::client::limited!(ProvisioningServiceClient::new(client.channel));
    let (items, next) = up_to(limit, String::new(), |page_size, page_token| {
        let mut svc = svc.clone();
        let req = pb::ListDirectoryOperationsRequest {
            page_size,
            page_token,
            state: state as i32,
            employee_id: employee_id.clone(),
        };
        async move {
            let r = svc
                .list_directory_operations(req)
                .await
                .map_err(explain)?
                .into_inner();
            Ok((r.operations, r.next_page_token))
        }
    })
    .await?;
    if matches!(opts.output, Format::Json) {
        more_follow_on_stderr(&next, "raise --limit or filter by --state / --employee-id");
    }
    let r = pb::ListDirectoryOperationsResponse {
        operations: items,
        next_page_token: next,
    };
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
                    if state == "pending" || state == "failed" { o.last_error.clone() } else { o.outcome.clone() },
                ]);
            }
            crate::outln!("{t}");
            let pending = r.operations.iter().filter(|o| o.state() == pb::DirectoryOperationState::Pending).count();
            let failed = r.operations.iter().filter(|o| o.state() == pb::DirectoryOperationState::Failed).count();
            crate::outln!("{} operation(s), {pending} pending, {failed} failed", r.operations.len());
            if failed > 0 {
                crate::outln!("failed operations need a fix in the data or the directory, then `idgov provisioning retry ID`");
            }
            if !r.next_page_token.is_empty() {
                crate::outln!("(more operations follow: raise --limit or filter by --state / --employee-id)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
