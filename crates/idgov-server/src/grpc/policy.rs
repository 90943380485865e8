//! `idgov.v1.PolicyService`.

use super::status::OrStatus;
use super::{Api, access, convert, invalid, paging};
use crate::AppError;
use crate::app::policy::PolicyOutcome;
use idgov_proto::v1 as pb;
use idgov_proto::v1::policy_service_server::PolicyService;
use std::collections::BTreeMap;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl PolicyService for Api {
    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        access(&req)?;
        Ok(Response::new(convert::policy(&self.app.policy())))
    }

    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let reason = if r.reason.trim().is_empty() {
            "no reason given".to_string()
        } else {
            r.reason.trim().to_string()
        };
        if let Some(p) = idgov_domain::identity::text_problem(&reason, 1000) {
            return Err(super::status::to_status(AppError::invalid("reason", p)));
        }
        let actor = access.caller.actor();
        let (document, dry_run) = (r.document, r.dry_run);
        let res = super::to_the_end(&self.app, move |app| async move {
            app.apply_policy(&document, dry_run, &reason, &actor).await
        })
        .await
        .or_status()?;
        let d = &res.diff;
        Ok(Response::new(pb::ApplyPolicyResponse {
            outcome: match res.outcome {
                PolicyOutcome::Applied => pb::ChangeOutcome::Applied,
                PolicyOutcome::Held => pb::ChangeOutcome::Held,
                PolicyOutcome::DryRun => pb::ChangeOutcome::DryRun,
                PolicyOutcome::Unchanged => pb::ChangeOutcome::Unchanged,
            } as i32,
            policy: Some(convert::policy(&res.policy)),
            impact: Some(pb::PolicyImpact {
                grants_added: res.impact.grants_added as i32,
                grants_revoked: res.impact.grants_revoked as i32,
                identities_affected: res.impact.identities_affected as i32,
                added_entitlements: d.added_entitlements.clone(),
                removed_entitlements: d.removed_entitlements.clone(),
                changed_entitlements: d.changed_entitlements.clone(),
                added_roles: d.added_roles.clone(),
                removed_roles: d.removed_roles.clone(),
                changed_roles: d.changed_roles.clone(),
                changed_levels: d.changed_levels.clone(),
                sod_conflicts: res.impact.sod_conflicts as i32,
                sod_examples: res.impact.sod_examples.clone(),
                sod_rules_changed: d.sod_changed,
            }),
            guard: Some(convert::verdict(&res.guard)),
            held_change_id: res.held_change_id.unwrap_or_default(),
        }))
    }

    async fn list_entitlements(
        &self,
        req: Request<pb::ListEntitlementsRequest>,
    ) -> Result<Response<pb::ListEntitlementsResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let class = convert::classification_from(r.classification, "classification")
            .map_err(|v| invalid("invalid filter", vec![v]))?;
        let policy = self.app.policy();
        let items: Vec<pb::Entitlement> = policy
            .policy
            .entitlements
            .range::<String, _>((
                std::ops::Bound::Excluded(&after),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, e)| e)
            .filter(|e| r.system_id.is_empty() || e.system == r.system_id)
            .filter(|e| class.is_none_or(|c| e.classification == c))
            .take(limit as usize + 1)
            .map(|e| pb::Entitlement {
                id: e.id.clone(),
                system_id: e.system.clone(),
                name: e.name.clone(),
                classification: convert::classification(e.classification) as i32,
                owner_employee_id: e.owner.clone(),
                kind: e.kind.to_string(),
                ldap_group_dn: e.ldap_group_dn.clone().unwrap_or_default(),
                description: e.description.clone(),
                requestable: e.requestable,
            })
            .collect();
        let (items, next) = paging::finish(items, limit, |e| e.id.clone());
        Ok(Response::new(pb::ListEntitlementsResponse {
            entitlements: items,
            next_page_token: next,
        }))
    }

    async fn list_roles(
        &self,
        req: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let policy = self.app.policy();
        let mut rules: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for rule in &policy.policy.birthright {
            rules
                .entry(rule.role.as_str())
                .or_default()
                .push(rule.describe());
        }
        let items: Vec<pb::Role> = policy
            .policy
            .roles
            .range::<String, _>((
                std::ops::Bound::Excluded(&after),
                std::ops::Bound::Unbounded,
            ))
            .take(limit as usize + 1)
            .map(|(_, role)| pb::Role {
                id: role.id.clone(),
                name: role.name.clone(),
                entitlement_ids: role.entitlements.clone(),
                birthright_rules: rules.get(role.id.as_str()).cloned().unwrap_or_default(),
            })
            .collect();
        let (items, next) = paging::finish(items, limit, |r| r.id.clone());
        Ok(Response::new(pb::ListRolesResponse {
            roles: items,
            next_page_token: next,
        }))
    }
}
