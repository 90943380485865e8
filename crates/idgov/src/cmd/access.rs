//! `idgov request …`, `idgov grant revoke|expiring` and `idgov sod …`:
//! access requests and their approvals, manual revocation, time-bound
//! grants and separation of duties.

use crate::ClientOpts;
use crate::client::{Client, explain, more_follow_on_stderr, up_to};
use crate::output::{Format, enum_name, json, plain, table, time};
use clap::{Subcommand, ValueEnum};
use idgov_proto::v1 as pb;
use idgov_proto::v1::access_service_client::AccessServiceClient;
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Entitlement,
    Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum View {
    /// Everything you may see.
    All,
    /// Made by you or for you.
    Mine,
    /// Waiting for your decision.
    Waiting,
}

#[derive(Subcommand)]
pub enum RequestCommand {
    /// Ask for an entitlement (or a role) for yourself or a direct report.
    Create {
        /// The entitlement (or, with --role, the role) asked for.
        target: String,
        /// Ask for a role instead of an entitlement.
        #[arg(long)]
        role: bool,
        /// For this direct report (default: yourself).
        #[arg(long = "for", value_name = "EMPLOYEE_ID", default_value = "")]
        beneficiary: String,
        /// Why it is needed (required from confidential up).
        #[arg(long, short = 'j', default_value = "")]
        justification: String,
        /// How long the access lasts (required where the level caps it).
        #[arg(long, value_name = "DAYS")]
        days: Option<u32>,
        /// Extend this time-bound grant instead (same approvals as a new request).
        #[arg(long, value_name = "GRANT_ID")]
        extends: Option<String>,
    },
    /// List requests.
    List {
        #[arg(long, value_enum, default_value = "all")]
        view: View,
        /// pending, approved, denied, cancelled or expired.
        #[arg(long)]
        state: Option<String>,
        #[arg(long = "for", value_name = "EMPLOYEE_ID")]
        beneficiary: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Show one request with its approval steps.
    Show { id: String },
    /// Approve the step waiting for you.
    Approve {
        id: String,
        #[arg(long, short = 'c', default_value = "")]
        comment: String,
    },
    /// Deny a request (a comment is required); it ends.
    Deny {
        id: String,
        #[arg(long, short = 'c')]
        comment: String,
    },
    /// Cancel a pending request.
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum SodCommand {
    /// Open separation-of-duties violations (what the detective check found).
    Violations {
        /// Also the resolved ones.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Exceptions granted by security officers.
    Exceptions {
        #[arg(long, default_value = "")]
        employee_id: String,
        /// Only the live ones.
        #[arg(long)]
        active: bool,
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Let one person hold both sides of a rule for a while (security officers).
    GrantException {
        employee_id: String,
        /// The rule's id in the policy (`[[sod]] id`).
        rule: String,
        #[arg(long, short = 'j')]
        justification: String,
        #[arg(long)]
        days: u32,
    },
    /// Run the detective check now.
    Check,
}

fn state_name(r: &pb::AccessRequest) -> String {
    enum_name(r.state().as_str_name(), "ACCESS_REQUEST_STATE_")
}

fn request_json(r: &pb::AccessRequest) -> serde_json::Value {
    json!({
        "id": r.id, "requester": r.requester_employee_id, "beneficiary": r.beneficiary_employee_id,
        "target_kind": enum_name(r.target_kind().as_str_name(), "ACCESS_TARGET_KIND_"),
        "target_id": r.target_id, "entitlements": r.entitlements,
        "classification": enum_name(r.classification().as_str_name(), "CLASSIFICATION_"),
        "justification": r.justification,
        "duration_days": if r.duration_days > 0 { json!(r.duration_days) } else { serde_json::Value::Null },
        "state": state_name(r), "waiting_on": r.waiting_on,
        "created_at": time(&r.created_at), "expires_at": time(&r.expires_at), "decided_at": time(&r.decided_at),
        "reason": r.reason, "grant_ids": r.grant_ids, "extends_grant_id": r.extends_grant_id,
        "sod_exception_id": r.sod_exception_id,
        "steps": r.steps.iter().map(|s| json!({
            "approver": s.approver, "assignee": s.assignee,
            "state": enum_name(s.state().as_str_name(), "APPROVAL_STEP_STATE_"),
            "decided_by": s.decided_by, "decided_at": time(&s.decided_at), "comment": s.comment, "note": s.note,
        })).collect::<Vec<_>>(),
    })
}

fn print_request(r: &pb::AccessRequest) {
    crate::outln!(
        "request {}: {} for {} — {} {} ({})",
        r.id,
        state_name(r),
        r.beneficiary_employee_id,
        enum_name(r.target_kind().as_str_name(), "ACCESS_TARGET_KIND_"),
        r.target_id,
        enum_name(r.classification().as_str_name(), "CLASSIFICATION_"),
    );
    crate::outln!(
        "  asked by {} on {}; {}",
        r.requester_employee_id,
        time(&r.created_at),
        if r.duration_days > 0 {
            format!("for {} days", r.duration_days)
        } else {
            "no end date".into()
        }
    );
    if !r.justification.is_empty() {
        crate::outln!("  justification: {}", plain(&r.justification));
    }
    let mut t = table(&[
        "step",
        "assignee",
        "state",
        "decided by",
        "when",
        "comment / note",
    ]);
    for s in &r.steps {
        let note = [plain(&s.comment), plain(&s.note)]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join(" — ");
        t.add_row(vec![
            s.approver.clone(),
            s.assignee.clone(),
            enum_name(s.state().as_str_name(), "APPROVAL_STEP_STATE_"),
            s.decided_by.clone(),
            time(&s.decided_at),
            note,
        ]);
    }
    if !r.steps.is_empty() {
        crate::outln!("{t}");
    }
    match r.state() {
        pb::AccessRequestState::Pending => crate::outln!(
            "waiting on {}; expires {} if nobody decides",
            if r.waiting_on == "@security" {
                "any security officer".to_string()
            } else {
                r.waiting_on.clone()
            },
            time(&r.expires_at)
        ),
        pb::AccessRequestState::Approved => {
            crate::outln!("granted: {}", r.grant_ids.join(", "))
        }
        _ => crate::outln!("{}", plain(&r.reason)),
    }
}

fn parse_state(s: Option<&str>) -> anyhow::Result<pb::AccessRequestState> {
    Ok(match s {
        None | Some("") => pb::AccessRequestState::Unspecified,
        Some("pending") => pb::AccessRequestState::Pending,
        Some("approved") => pb::AccessRequestState::Approved,
        Some("denied") => pb::AccessRequestState::Denied,
        Some("cancelled") => pb::AccessRequestState::Cancelled,
        Some("expired") => pb::AccessRequestState::Expired,
        Some(o) => {
            anyhow::bail!("--state {o:?}: use pending, approved, denied, cancelled or expired")
        }
    })
}

pub async fn run_request(opts: &ClientOpts, c: RequestCommand) -> anyhow::Result<ExitCode> {
    let client = Client::connect(opts).await?;
    let mut svc = crate::client::limited!(AccessServiceClient::new(client.channel));
    let one = match c {
        RequestCommand::Create {
            target,
            role,
            beneficiary,
            justification,
            days,
            extends,
        } => {
            let days = match days {
                Some(d) => {
                    i32::try_from(d).map_err(|_| anyhow::anyhow!("--days {d} is out of range"))?
                }
                None => 0,
            };
            svc.create_access_request(pb::CreateAccessRequestRequest {
                beneficiary_employee_id: beneficiary,
                target_kind: if role {
                    pb::AccessTargetKind::Role
                } else {
                    pb::AccessTargetKind::Entitlement
                } as i32,
                target_id: target,
                justification,
                duration_days: days,
                extends_grant_id: extends.unwrap_or_default(),
            })
            .await
            .map_err(explain)?
            .into_inner()
        }
        RequestCommand::Show { id } => svc
            .get_access_request(pb::GetAccessRequestRequest { id })
            .await
            .map_err(explain)?
            .into_inner(),
        RequestCommand::Approve { id, comment } => svc
            .approve_access_request(pb::DecideAccessRequestRequest { id, comment })
            .await
            .map_err(explain)?
            .into_inner(),
        RequestCommand::Deny { id, comment } => svc
            .deny_access_request(pb::DecideAccessRequestRequest { id, comment })
            .await
            .map_err(explain)?
            .into_inner(),
        RequestCommand::Cancel { id, reason } => svc
            .cancel_access_request(pb::CancelAccessRequestRequest { id, reason })
            .await
            .map_err(explain)?
            .into_inner(),
        RequestCommand::List {
            view,
            state,
            beneficiary,
            limit,
        } => {
            let waiting = view == View::Waiting;
            let view = match view {
                View::All => pb::AccessRequestView::All,
                View::Mine => pb::AccessRequestView::Mine,
                View::Waiting => pb::AccessRequestView::WaitingForMe,
            } as i32;
            let state = parse_state(state.as_deref())? as i32;
            let beneficiary = beneficiary.unwrap_or_default();
            let (items, next) = up_to(limit, String::new(), |page_size, page_token| {
                let mut svc = svc.clone();
                let req = pb::ListAccessRequestsRequest {
                    view,
                    state,
                    beneficiary_employee_id: beneficiary.clone(),
                    page_size,
                    page_token,
                };
                async move {
                    let r = svc
                        .list_access_requests(req)
                        .await
                        .map_err(explain)?
                        .into_inner();
                    Ok((r.requests, r.next_page_token))
                }
            })
            .await?;
            if matches!(opts.output, Format::Json) {
                more_follow_on_stderr(&next, "raise --limit or filter by --state / --for");
            }
            let r = pb::ListAccessRequestsResponse {
                requests: items,
                next_page_token: next,
            };
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.requests.iter().map(request_json).collect(),
                )),
                Format::Table => {
                    let mut t = table(&[
                        "id",
                        "for",
                        "asks for",
                        "class",
                        "state",
                        "waiting on",
                        "created",
                        "expires",
                    ]);
                    for q in &r.requests {
                        t.add_row(vec![
                            q.id.clone(),
                            q.beneficiary_employee_id.clone(),
                            q.target_id.clone(),
                            enum_name(q.classification().as_str_name(), "CLASSIFICATION_"),
                            state_name(q),
                            q.waiting_on.clone(),
                            time(&q.created_at),
                            time(&q.expires_at),
                        ]);
                    }
                    if r.requests.is_empty() {
                        crate::outln!(
                            "no requests{}",
                            if waiting { " are waiting for you" } else { "" }
                        );
                    } else {
                        crate::outln!("{t}");
                        crate::outln!(
                            "{} request(s); `idgov request show ID` for the steps",
                            r.requests.len()
                        );
                    }
                    if !r.next_page_token.is_empty() {
                        crate::outln!("(more follow: raise --limit or filter by --state / --for)");
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match opts.output {
        Format::Json => json(&request_json(&one)),
        Format::Table => print_request(&one),
    }
    Ok(ExitCode::SUCCESS)
}

/// `idgov grant revoke GRANT_ID --reason …`.
pub async fn revoke(
    opts: &ClientOpts,
    grant_id: String,
    reason: String,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(opts).await?;
    let g = crate::client::limited!(AccessServiceClient::new(client.channel))
        .revoke_grant(pb::RevokeGrantRequest { grant_id, reason })
        .await
        .map_err(explain)?
        .into_inner();
    match opts.output {
        Format::Json => json(&json!({
            "id": g.id, "employee_id": g.employee_id, "entitlement_id": g.entitlement_id,
            "revoked_at": time(&g.revoked_at),
            "revoke_reason": enum_name(g.revoke_reason().as_str_name(), "REVOKE_REASON_"),
        })),
        Format::Table => crate::outln!(
            "revoked {} of {} ({}); the directory change is queued",
            g.entitlement_id,
            g.employee_id,
            g.id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `idgov grant expiring [EMPLOYEE_ID] --within DAYS`.
pub async fn expiring(
    opts: &ClientOpts,
    employee_id: String,
    within: u32,
    limit: i32,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(opts).await?;
    let svc = crate::client::limited!(AccessServiceClient::new(client.channel));
    let (items, next) = up_to(limit, String::new(), |page_size, page_token| {
        let mut svc = svc.clone();
        let req = pb::ListExpiringGrantsRequest {
            employee_id: employee_id.clone(),
            within_days: i32::try_from(within).unwrap_or(i32::MAX),
            page_size,
            page_token,
        };
        async move {
            let r = svc
                .list_expiring_grants(req)
                .await
                .map_err(explain)?
                .into_inner();
            Ok((r.grants, r.next_page_token))
        }
    })
    .await?;
    if matches!(opts.output, Format::Json) {
        more_follow_on_stderr(&next, "raise --limit or name one person");
    }
    let r = pb::ListGrantsResponse {
        grants: items,
        next_page_token: next,
    };
    match opts.output {
        Format::Json => json(&serde_json::Value::Array(
            r.grants
                .iter()
                .map(|g| json!({
                    "id": g.id, "employee_id": g.employee_id, "entitlement_id": g.entitlement_id,
                    "classification": enum_name(g.classification().as_str_name(), "CLASSIFICATION_"),
                    "source_ref": g.source_ref, "expires_at": time(&g.expires_at),
                }))
                .collect(),
        )),
        Format::Table => {
            if r.grants.is_empty() {
                crate::outln!("no grant ends within {within} days");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table(&["expires", "employee", "entitlement", "class", "grant", "from"]);
            for g in &r.grants {
                t.add_row(vec![
                    time(&g.expires_at),
                    g.employee_id.clone(),
                    g.entitlement_id.clone(),
                    enum_name(g.classification().as_str_name(), "CLASSIFICATION_"),
                    g.id.clone(),
                    g.source_ref.clone(),
                ]);
            }
            crate::outln!("{t}");
            crate::outln!(
                "{} grant(s) end within {within} days; to keep one, ask to extend it: \
                 idgov request create ENTITLEMENT --extends GRANT_ID --days N",
                r.grants.len()
            );
            if !r.next_page_token.is_empty() {
                crate::outln!("(more follow: raise --limit or name one person)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_sod(opts: &ClientOpts, c: SodCommand) -> anyhow::Result<ExitCode> {
    let client = Client::connect(opts).await?;
    let mut svc = crate::client::limited!(AccessServiceClient::new(client.channel));
    match c {
        SodCommand::Violations { all, limit } => {
            let (items, next) = up_to(limit, String::new(), |page_size, page_token| {
                let mut svc = svc.clone();
                let req = pb::ListSodViolationsRequest {
                    include_resolved: all,
                    page_size,
                    page_token,
                };
                async move {
                    let r = svc
                        .list_sod_violations(req)
                        .await
                        .map_err(explain)?
                        .into_inner();
                    Ok((r.violations, r.next_page_token))
                }
            })
            .await?;
            if matches!(opts.output, Format::Json) {
                more_follow_on_stderr(&next, "raise --limit");
            }
            let r = pb::ListSodViolationsResponse {
                violations: items,
                next_page_token: next,
            };
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.violations
                        .iter()
                        .map(|v| json!({
                            "employee_id": v.employee_id, "rule_id": v.rule_id,
                            "severity": enum_name(v.severity().as_str_name(), "SOD_SEVERITY_"),
                            "entitlements": v.entitlements, "detected_at": time(&v.detected_at),
                            "checked_at": time(&v.checked_at), "resolved_at": time(&v.resolved_at),
                        }))
                        .collect(),
                )),
                Format::Table => {
                    if r.violations.is_empty() {
                        crate::outln!("no separation-of-duties violations{}", if all { "" } else { " are open" });
                    } else {
                        let mut t = table(&["employee", "rule", "severity", "holds", "detected", "resolved"]);
                        for v in &r.violations {
                            t.add_row(vec![
                                v.employee_id.clone(),
                                v.rule_id.clone(),
                                enum_name(v.severity().as_str_name(), "SOD_SEVERITY_"),
                                v.entitlements.join(" + "),
                                time(&v.detected_at),
                                time(&v.resolved_at),
                            ]);
                        }
                        crate::outln!("{t}");
                        crate::outln!(
                            "{} violation(s); resolve one by revoking a side (idgov grant revoke) \
                             or by a time-bound exception (idgov sod grant-exception)",
                            r.violations.len()
                        );
                        if !r.next_page_token.is_empty() {
                            crate::outln!("(more follow: raise --limit)");
                        }
                    }
                }
            }
        }
        SodCommand::Exceptions {
            employee_id,
            active,
            limit,
        } => {
            let (items, next) = up_to(limit, String::new(), |page_size, page_token| {
                let mut svc = svc.clone();
                let req = pb::ListSodExceptionsRequest {
                    employee_id: employee_id.clone(),
                    active_only: active,
                    page_size,
                    page_token,
                };
                async move {
                    let r = svc
                        .list_sod_exceptions(req)
                        .await
                        .map_err(explain)?
                        .into_inner();
                    Ok((r.exceptions, r.next_page_token))
                }
            })
            .await?;
            if matches!(opts.output, Format::Json) {
                more_follow_on_stderr(&next, "raise --limit or name one person");
            }
            let r = pb::ListSodExceptionsResponse {
                exceptions: items,
                next_page_token: next,
            };
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.exceptions.iter().map(exception_json).collect(),
                )),
                Format::Table => {
                    if r.exceptions.is_empty() {
                        crate::outln!("no exceptions");
                    } else {
                        let mut t = table(&[
                            "id",
                            "employee",
                            "rule",
                            "state",
                            "granted by",
                            "until",
                            "justification",
                        ]);
                        for x in &r.exceptions {
                            t.add_row(vec![
                                x.id.clone(),
                                x.employee_id.clone(),
                                x.rule_id.clone(),
                                x.state.clone(),
                                x.granted_by.clone(),
                                time(&x.expires_at),
                                plain(&x.justification),
                            ]);
                        }
                        crate::outln!("{t}");
                        if !r.next_page_token.is_empty() {
                            crate::outln!("(more follow: raise --limit or name one person)");
                        }
                    }
                }
            }
        }
        SodCommand::GrantException {
            employee_id,
            rule,
            justification,
            days,
        } => {
            let x = svc
                .grant_sod_exception(pb::GrantSodExceptionRequest {
                    employee_id,
                    rule_id: rule,
                    justification,
                    days: i32::try_from(days).unwrap_or(i32::MAX),
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&exception_json(&x)),
                Format::Table => crate::outln!(
                    "exception {} lets {} hold both sides of {} until {}; the grants it allows are revoked then",
                    x.id,
                    x.employee_id,
                    x.rule_id,
                    time(&x.expires_at)
                ),
            }
        }
        SodCommand::Check => {
            let r = svc
                .run_sod_check(pb::RunSodCheckRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&json!({
                    "holders_checked": r.holders_checked, "open": r.open, "new": r.new, "resolved": r.resolved,
                })),
                Format::Table => crate::outln!(
                    "checked {} people holding a side of a rule: {} open violation(s), {} new, {} resolved",
                    r.holders_checked,
                    r.open,
                    r.new,
                    r.resolved
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exception_json(x: &pb::SodException) -> serde_json::Value {
    json!({
        "id": x.id, "employee_id": x.employee_id, "rule_id": x.rule_id,
        "justification": x.justification, "granted_by": x.granted_by,
        "granted_at": time(&x.granted_at), "expires_at": time(&x.expires_at),
        "state": x.state, "ended_at": time(&x.ended_at),
    })
}
