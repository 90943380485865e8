//! `idgov identity` and `idgov grant`.

use crate::ClientOpts;
use crate::client::{Client, explain};
use crate::output::{Format, enum_name, json, table, time};
use clap::Subcommand;
use idgov_proto::v1 as pb;
use idgov_proto::v1::identity_service_client::IdentityServiceClient;
use serde_json::json;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Show one identity.
    Get { employee_id: String },
    /// List identities.
    List {
        /// pre_hire, active, suspended or terminated.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "")]
        department: String,
        /// Only the direct reports of this manager.
        #[arg(long, default_value = "")]
        manager: String,
        /// At most this many (all when 0).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
}

#[derive(Subcommand)]
pub enum GrantCommand {
    /// List an identity's grants.
    List {
        employee_id: String,
        /// Include revoked grants (history).
        #[arg(long)]
        all: bool,
    },
    /// Revoke a grant by hand (an it-admin or the entitlement's owner).
    Revoke {
        /// The grant's id (see `idgov grant list EMPLOYEE_ID`).
        grant_id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Grants that end soon, soonest first (yours, or one person's).
    Expiring {
        #[arg(default_value = "")]
        employee_id: String,
        /// Within this many days.
        #[arg(long, default_value_t = 14)]
        within: u32,
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
}

fn identity_json(i: &pb::Identity) -> serde_json::Value {
    json!({
        "employee_id": i.employee_id, "display_name": i.display_name, "email": i.email,
        "department": i.department, "title": i.title, "job_code": i.job_code, "location": i.location,
        "cost_center": i.cost_center, "manager_employee_id": i.manager_employee_id,
        "employment_type": enum_name(i.employment_type().as_str_name(), "EMPLOYMENT_TYPE_"),
        "background_check": enum_name(i.background_check().as_str_name(), "BACKGROUND_CHECK_"),
        "clearance": enum_name(i.clearance().as_str_name(), "CLASSIFICATION_"),
        "access_ceiling": enum_name(i.access_ceiling().as_str_name(), "CLASSIFICATION_"),
        "status": enum_name(i.status().as_str_name(), "IDENTITY_STATUS_"),
        "start_date": i.start_date, "end_date": i.end_date,
        "active_grants": i.active_grant_count,
        "created_at": time(&i.created_at), "updated_at": time(&i.updated_at),
        "state_effective_at": time(&i.state_effective_at),
    })
}

pub async fn run(opts: &ClientOpts, c: IdentityCommand) -> anyhow::Result<ExitCode> {
    let client = Client::connect(opts).await?;
    let mut ids = crate::client::limited!(IdentityServiceClient::new(client.channel));
    match c {
        IdentityCommand::Get { employee_id } => {
            let i = ids
                .get_identity(pb::GetIdentityRequest { employee_id })
                .await
                .map_err(explain)?
                .into_inner();
            let v = identity_json(&i);
            match opts.output {
                Format::Json => json(&v),
                Format::Table => {
                    let mut t = table(&["attribute", "value"]);
                    if let Some(o) = v.as_object() {
                        for (k, val) in o {
                            t.add_row(vec![
                                k.clone(),
                                val.as_str()
                                    .map(String::from)
                                    .unwrap_or_else(|| val.to_string()),
                            ]);
                        }
                    }
                    crate::outln!("{t}");
                }
            }
        }
        IdentityCommand::List {
            status,
            department,
            manager,
            limit,
        } => {
            let status = match status.as_deref() {
                None | Some("") => pb::IdentityStatus::Unspecified,
                Some(s) => pb::IdentityStatus::from_str_name(&format!(
                    "IDENTITY_STATUS_{}",
                    s.to_ascii_uppercase()
                ))
                .ok_or_else(|| {
                    anyhow::anyhow!("--status must be pre_hire, active, suspended or terminated")
                })?,
            };
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = ids
                    .list_identities(pb::ListIdentitiesRequest {
                        page_size: 1000,
                        page_token: token,
                        status: status as i32,
                        department: department.clone(),
                        manager_employee_id: manager.clone(),
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                all.extend(r.identities);
                token = r.next_page_token;
                if token.is_empty() || (limit > 0 && all.len() >= limit) {
                    break;
                }
            }
            let cut = limit > 0 && (all.len() > limit || !token.is_empty());
            if limit > 0 {
                all.truncate(limit);
            }
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    all.iter().map(identity_json).collect(),
                )),
                Format::Table => {
                    let mut t = table(&[
                        "employee",
                        "name",
                        "department",
                        "title",
                        "manager",
                        "type",
                        "status",
                        "ceiling",
                        "grants",
                    ]);
                    for i in &all {
                        t.add_row(vec![
                            i.employee_id.clone(),
                            i.display_name.clone(),
                            i.department.clone(),
                            i.title.clone(),
                            i.manager_employee_id.clone(),
                            enum_name(i.employment_type().as_str_name(), "EMPLOYMENT_TYPE_"),
                            enum_name(i.status().as_str_name(), "IDENTITY_STATUS_"),
                            enum_name(i.access_ceiling().as_str_name(), "CLASSIFICATION_"),
                            i.active_grant_count.to_string(),
                        ]);
                    }
                    crate::outln!("{t}");
                    crate::outln!("{} identities", all.len());
                    if cut {
                        crate::outln!(
                            "(more follow: raise --limit, or filter by --department / --manager / --status)"
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_grant(opts: &ClientOpts, c: GrantCommand) -> anyhow::Result<ExitCode> {
    let (employee_id, all) = match c {
        GrantCommand::List { employee_id, all } => (employee_id, all),
        GrantCommand::Revoke { grant_id, reason } => {
            return super::access::revoke(opts, grant_id, reason).await;
        }
        GrantCommand::Expiring {
            employee_id,
            within,
            limit,
        } => return super::access::expiring(opts, employee_id, within, limit).await,
    };
    let client = Client::connect(opts).await?;
    let mut ids = crate::client::limited!(IdentityServiceClient::new(client.channel));
    let mut grants = Vec::new();
    let mut token = String::new();
    loop {
        let r = ids
            .list_grants(pb::ListGrantsRequest {
                employee_id: employee_id.clone(),
                include_revoked: all,
                page_size: 1000,
                page_token: token,
            })
            .await
            .map_err(explain)?
            .into_inner();
        grants.extend(r.grants);
        token = r.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    match opts.output {
        Format::Json => json(&serde_json::Value::Array(
            grants
                .iter()
                .map(|g| {
                    json!({
                        "id": g.id, "employee_id": g.employee_id, "entitlement_id": g.entitlement_id,
                        "classification": enum_name(g.classification().as_str_name(), "CLASSIFICATION_"),
                        "source": enum_name(g.source().as_str_name(), "GRANT_SOURCE_KIND_"),
                        "source_ref": g.source_ref, "justification": g.justification,
                        "granted_at": time(&g.granted_at), "expires_at": time(&g.expires_at),
                        "active": g.active, "revoked_at": time(&g.revoked_at),
                        "revoke_reason": if g.active { String::new() } else { enum_name(g.revoke_reason().as_str_name(), "REVOKE_REASON_") },
                        "review_pending": g.review_pending, "approvers": g.approvers,
                    })
                })
                .collect(),
        )),
        Format::Table => {
            let mut t = table(&["id", "entitlement", "class", "source", "granted", "expires", "state", "note"]);
            for g in &grants {
                let state = if g.active {
                    "active".to_string()
                } else {
                    format!(
                        "revoked {} ({})",
                        time(&g.revoked_at),
                        enum_name(g.revoke_reason().as_str_name(), "REVOKE_REASON_")
                    )
                };
                t.add_row(vec![
                    g.id.clone(),
                    g.entitlement_id.clone(),
                    enum_name(g.classification().as_str_name(), "CLASSIFICATION_"),
                    format!("{} {}", enum_name(g.source().as_str_name(), "GRANT_SOURCE_KIND_"), g.source_ref),
                    time(&g.granted_at),
                    time(&g.expires_at),
                    state,
                    match (g.review_pending, g.source()) {
                        (false, _) => String::new(),
                        (true, pb::GrantSourceKind::Imported) => "imported: review pending".into(),
                        (true, _) => "mover review pending".into(),
                    },
                ]);
            }
            crate::outln!("{t}");
            let active = grants.iter().filter(|g| g.active).count();
            crate::outln!("{employee_id}: {active} active grant(s){}", if all { format!(", {} revoked", grants.len() - active) } else { String::new() });
        }
    }
    Ok(ExitCode::SUCCESS)
}
