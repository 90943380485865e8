//! `idgov policy`.

use crate::ClientOpts;
use crate::client::{Client, explain};
use crate::output::{Format, enum_name, json, table, time};
use anyhow::Context;
use clap::Subcommand;
use idgov_proto::v1 as pb;
use idgov_proto::v1::policy_service_client::PolicyServiceClient;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Show the policy in force.
    Show {
        /// Print the TOML document as applied.
        #[arg(long)]
        document: bool,
    },
    /// Validate and apply a policy document (TOML).
    Apply {
        file: PathBuf,
        /// Only validate and show the impact.
        #[arg(long)]
        dry_run: bool,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List entitlements.
    Entitlements {
        #[arg(long, default_value = "")]
        system: String,
    },
    /// List roles and the birthright rules that assign them.
    Roles,
}

fn levels_table(p: &pb::Policy) -> comfy_table::Table {
    let mut t = table(&[
        "level",
        "birthright",
        "approvals",
        "max days",
        "review every",
        "on mover",
        "no response",
    ]);
    for l in &p.levels {
        t.add_row(vec![
            enum_name(l.level().as_str_name(), "CLASSIFICATION_"),
            if l.birthright_allowed { "yes" } else { "no" }.into(),
            if l.approvals.is_empty() {
                "none".into()
            } else {
                l.approvals.join(" + ")
            },
            if l.max_grant_days == 0 {
                "none".into()
            } else {
                l.max_grant_days.to_string()
            },
            if l.review_every_months == 0 {
                "never".into()
            } else {
                format!("{} months", l.review_every_months)
            },
            l.on_mover.clone(),
            l.no_review_response.clone(),
        ]);
    }
    t
}

fn policy_json(p: &pb::Policy) -> serde_json::Value {
    json!({
        "version": p.version, "sha256": p.sha256, "applied_at": time(&p.applied_at), "applied_by": p.applied_by,
        "systems": p.systems, "entitlements": p.entitlements, "roles": p.roles, "birthright_rules": p.birthright_rules,
        "hr_time_zone": p.hr_time_zone,
        "guard": {"max_leavers_percent": p.guard_max_leavers_percent, "max_leavers": p.guard_max_leavers},
        "levels": p.levels.iter().map(|l| json!({
            "level": enum_name(l.level().as_str_name(), "CLASSIFICATION_"), "birthright_allowed": l.birthright_allowed,
            "approvals": l.approvals, "max_grant_days": l.max_grant_days, "review_every_months": l.review_every_months,
            "on_mover": l.on_mover, "no_review_response": l.no_review_response,
        })).collect::<Vec<_>>(),
    })
}

pub async fn run(opts: &ClientOpts, c: PolicyCommand) -> anyhow::Result<ExitCode> {
    let mut held = false;
    let client = Client::connect(opts).await?;
    let mut pol = crate::client::limited!(PolicyServiceClient::new(client.channel));
    match c {
        PolicyCommand::Show { document } => {
            let p = pol
                .get_policy(pb::GetPolicyRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            if document {
                crate::outln!("{}", p.document.trim_end());
                return Ok(ExitCode::SUCCESS);
            }
            match opts.output {
                Format::Json => json(&policy_json(&p)),
                Format::Table => {
                    if p.version == 0 {
                        crate::outln!(
                            "no policy applied yet (defaults in force); apply one with `idgov policy apply FILE`"
                        );
                    } else {
                        crate::outln!(
                            "policy version {} (sha256 {}…), applied {} by {}",
                            p.version,
                            &p.sha256[..12.min(p.sha256.len())],
                            time(&p.applied_at),
                            p.applied_by
                        );
                    }
                    crate::outln!(
                        "{} systems, {} entitlements, {} roles, {} birthright rules; HR time zone {}; \
                         guard holds syncs terminating more than min({}% of active, {})",
                        p.systems,
                        p.entitlements,
                        p.roles,
                        p.birthright_rules,
                        p.hr_time_zone,
                        p.guard_max_leavers_percent,
                        p.guard_max_leavers
                    );
                    crate::outln!("{}", levels_table(&p));
                }
            }
        }
        PolicyCommand::Apply {
            file,
            dry_run,
            reason,
        } => {
            let document = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let r = pol
                .apply_policy(pb::ApplyPolicyRequest {
                    document,
                    dry_run,
                    reason,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let outcome = enum_name(r.outcome().as_str_name(), "CHANGE_OUTCOME_");
            let i = r.impact.clone().unwrap_or_default();
            let g = r.guard.unwrap_or_default();
            if r.outcome() == pb::ChangeOutcome::Held {
                held = true;
            }
            match opts.output {
                Format::Json => json(&json!({
                    "outcome": outcome,
                    "version": r.policy.as_ref().map(|p| p.version),
                    "grants_added": i.grants_added, "grants_revoked": i.grants_revoked,
                    "identities_affected": i.identities_affected,
                    "added_entitlements": i.added_entitlements, "removed_entitlements": i.removed_entitlements,
                    "changed_entitlements": i.changed_entitlements, "added_roles": i.added_roles,
                    "removed_roles": i.removed_roles, "changed_roles": i.changed_roles, "changed_levels": i.changed_levels,
                    "guard": {"active": g.active, "affected": g.affected, "threshold": g.threshold, "tripped": g.tripped},
                    "held_change_id": r.held_change_id,
                    "sod_conflicts": i.sod_conflicts, "sod_examples": i.sod_examples,
                })),
                Format::Table => {
                    let names = |label: &str, v: &[String]| {
                        if !v.is_empty() {
                            crate::outln!("  {label}: {}", v.join(", "));
                        }
                    };
                    crate::outln!("{} is valid.", file.display());
                    names("entitlements added", &i.added_entitlements);
                    names("entitlements removed", &i.removed_entitlements);
                    names("entitlements changed", &i.changed_entitlements);
                    names("roles added", &i.added_roles);
                    names("roles removed", &i.removed_roles);
                    names("roles changed", &i.changed_roles);
                    names("levels changed", &i.changed_levels);
                    crate::outln!(
                        "impact: {} grants added, {} revoked, {} identities affected",
                        i.grants_added,
                        i.grants_revoked,
                        i.identities_affected
                    );
                    if i.sod_conflicts > 0 {
                        crate::outln!(
                            "separation of duties: {} conflict(s) the detective check will report, e.g. {}",
                            i.sod_conflicts,
                            i.sod_examples
                                .iter()
                                .take(5)
                                .cloned()
                                .collect::<Vec<_>>()
                                .join("; ")
                        );
                    }
                    match r.outcome() {
                        pb::ChangeOutcome::Applied => crate::outln!(
                            "applied as version {}",
                            r.policy.as_ref().map(|p| p.version).unwrap_or_default()
                        ),
                        pb::ChangeOutcome::DryRun => crate::outln!("dry run: nothing was applied"),
                        pb::ChangeOutcome::Unchanged => {
                            crate::outln!("unchanged: this document is already in force")
                        }
                        pb::ChangeOutcome::Held => crate::outln!(
                            "HELD: it would strip grants from {} of {} active people (threshold {}). \
                             Release with `idgov hr held release {} --reason …`",
                            g.affected,
                            g.active,
                            g.threshold,
                            r.held_change_id
                        ),
                        _ => {}
                    }
                }
            }
        }
        PolicyCommand::Entitlements { system } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = pol
                    .list_entitlements(pb::ListEntitlementsRequest {
                        page_size: 1000,
                        page_token: token,
                        system_id: system.clone(),
                        classification: 0,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                all.extend(r.entitlements);
                token = r.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    all.iter()
                        .map(|e| json!({
                            "id": e.id, "system": e.system_id, "name": e.name,
                            "classification": enum_name(e.classification().as_str_name(), "CLASSIFICATION_"),
                            "owner": e.owner_employee_id, "kind": e.kind, "ldap_group_dn": e.ldap_group_dn,
                        }))
                        .collect(),
                )),
                Format::Table => {
                    let mut t = table(&["entitlement", "system", "class", "kind", "owner", "name"]);
                    for e in &all {
                        t.add_row(vec![
                            e.id.clone(),
                            e.system_id.clone(),
                            enum_name(e.classification().as_str_name(), "CLASSIFICATION_"),
                            e.kind.clone(),
                            e.owner_employee_id.clone(),
                            e.name.clone(),
                        ]);
                    }
                    crate::outln!("{t}");
                }
            }
        }
        PolicyCommand::Roles => {
            let r = pol
                .list_roles(pb::ListRolesRequest {
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            match opts.output {
                Format::Json => json(&serde_json::Value::Array(
                    r.roles
                        .iter()
                        .map(|x| json!({"id": x.id, "name": x.name, "entitlements": x.entitlement_ids, "birthright": x.birthright_rules}))
                        .collect(),
                )),
                Format::Table => {
                    let mut t = table(&["role", "entitlements", "birthright for"]);
                    for x in &r.roles {
                        t.add_row(vec![x.id.clone(), x.entitlement_ids.join("\n"), x.birthright_rules.join("\n")]);
                    }
                    crate::outln!("{t}");
                }
            }
        }
    }
    Ok(if held {
        ExitCode::from(crate::output::EXIT_HELD)
    } else {
        ExitCode::SUCCESS
    })
}
