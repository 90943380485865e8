//! `idgov.v1.AccessService`.

use super::status::OrStatus;
use super::{Api, access, convert, paging};
use crate::error::AppError;
use chrono::{DateTime, Utc};
use idgov_app::access::{CreateRequest, RequestView};
use idgov_domain::access::{
    AccessRequest, RequestState, SodException, SodViolation, StepState, TargetKind,
};
use idgov_domain::policy::Severity;
use idgov_proto::v1 as pb;
use idgov_proto::v1::access_service_server::AccessService;
use tonic::{Request, Response, Status};

fn bad(field: &str, msg: &str) -> Status {
    super::status::to_status(AppError::invalid(field, msg))
}

fn target_kind_from(v: i32) -> Result<Option<TargetKind>, Status> {
    match pb::AccessTargetKind::try_from(v) {
        Ok(pb::AccessTargetKind::Unspecified) => Ok(None),
        Ok(pb::AccessTargetKind::Entitlement) => Ok(Some(TargetKind::Entitlement)),
        Ok(pb::AccessTargetKind::Role) => Ok(Some(TargetKind::Role)),
        Err(_) => Err(bad(
            "target_kind",
            "is not a known kind (entitlement or role)",
        )),
    }
}

fn state(s: RequestState) -> pb::AccessRequestState {
    match s {
        RequestState::Pending => pb::AccessRequestState::Pending,
        RequestState::Approved => pb::AccessRequestState::Approved,
        RequestState::Denied => pb::AccessRequestState::Denied,
        RequestState::Cancelled => pb::AccessRequestState::Cancelled,
        RequestState::Expired => pb::AccessRequestState::Expired,
    }
}

fn state_from(v: i32) -> Result<Option<RequestState>, Status> {
    Ok(match pb::AccessRequestState::try_from(v) {
        Ok(pb::AccessRequestState::Unspecified) => None,
        Ok(pb::AccessRequestState::Pending) => Some(RequestState::Pending),
        Ok(pb::AccessRequestState::Approved) => Some(RequestState::Approved),
        Ok(pb::AccessRequestState::Denied) => Some(RequestState::Denied),
        Ok(pb::AccessRequestState::Cancelled) => Some(RequestState::Cancelled),
        Ok(pb::AccessRequestState::Expired) => Some(RequestState::Expired),
        Err(_) => return Err(bad("state", "is not a known request state")),
    })
}

fn step_state(s: StepState) -> pb::ApprovalStepState {
    match s {
        StepState::Waiting => pb::ApprovalStepState::Waiting,
        StepState::Open => pb::ApprovalStepState::Open,
        StepState::Approved => pb::ApprovalStepState::Approved,
        StepState::Denied => pb::ApprovalStepState::Denied,
    }
}

pub fn request(r: &AccessRequest) -> pb::AccessRequest {
    pb::AccessRequest {
        id: r.id.clone(),
        requester_employee_id: r.requester.clone(),
        beneficiary_employee_id: r.beneficiary.clone(),
        target_kind: match r.target_kind {
            TargetKind::Entitlement => pb::AccessTargetKind::Entitlement,
            TargetKind::Role => pb::AccessTargetKind::Role,
        } as i32,
        target_id: r.target_id.clone(),
        entitlements: r.entitlements.clone(),
        classification: convert::classification(r.classification) as i32,
        justification: r.justification.clone(),
        duration_days: r.duration_days.map(|d| d as i32).unwrap_or(0),
        state: state(r.state) as i32,
        created_at: Some(convert::ts(r.created_at)),
        expires_at: Some(convert::ts(r.expires_at)),
        decided_at: convert::opt_ts(r.decided_at),
        reason: r.reason.clone(),
        steps: r
            .steps
            .iter()
            .map(|s| pb::ApprovalStep {
                approver: s.approver.to_string(),
                assignee: s.assignee.clone(),
                state: step_state(s.state) as i32,
                decided_by: s.decided_by.clone().unwrap_or_default(),
                decided_at: convert::opt_ts(s.decided_at),
                comment: s.comment.clone(),
                note: s.note.clone(),
            })
            .collect(),
        grant_ids: r.grant_ids.clone(),
        extends_grant_id: r.extends_grant_id.clone().unwrap_or_default(),
        sod_exception_id: r.sod_exception_id.clone().unwrap_or_default(),
        waiting_on: r.waiting_on().unwrap_or_default().to_string(),
    }
}

fn severity(s: Severity) -> pb::SodSeverity {
    match s {
        Severity::Low => pb::SodSeverity::Low,
        Severity::Medium => pb::SodSeverity::Medium,
        Severity::High => pb::SodSeverity::High,
    }
}

fn violation(v: &SodViolation) -> pb::SodViolation {
    pb::SodViolation {
        employee_id: v.employee_id.clone(),
        rule_id: v.rule_id.clone(),
        severity: severity(v.severity) as i32,
        entitlements: v.entitlements.clone(),
        detected_at: Some(convert::ts(v.detected_at)),
        checked_at: Some(convert::ts(v.checked_at)),
        resolved_at: convert::opt_ts(v.resolved_at),
    }
}

fn exception(x: &SodException) -> pb::SodException {
    pb::SodException {
        id: x.id.clone(),
        employee_id: x.employee_id.clone(),
        rule_id: x.rule_id.clone(),
        justification: x.justification.clone(),
        granted_by: x.granted_by.clone(),
        granted_at: Some(convert::ts(x.granted_at)),
        expires_at: Some(convert::ts(x.expires_at)),
        state: x.state.to_string(),
        ended_at: convert::opt_ts(x.ended_at),
    }
}

fn days(field: &str, v: i32) -> Result<Option<u32>, Status> {
    match v {
        0 => Ok(None),
        n if n < 0 => Err(bad(field, "must not be negative")),
        n => Ok(Some(n as u32)),
    }
}

/// Splits a compound page key written as `a\u{1f}b`.
fn split_key(key: &str) -> Result<Option<(String, String)>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    key.split_once('\u{1f}')
        .map(|(a, b)| Some((a.to_string(), b.to_string())))
        .ok_or_else(|| {
            bad(
                "page_token",
                "is not a token this server issued; start again without one",
            )
        })
}

impl Api {
    /// Approve and deny: one call with the verdict.
    async fn decide(
        &self,
        req: Request<pb::DecideAccessRequestRequest>,
        approve: bool,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let out = self
            .app
            .decide_request(&access, &r.id, approve, &r.comment)
            .await
            .or_status()?;
        Ok(Response::new(request(&out)))
    }
}

#[tonic::async_trait]
impl AccessService for Api {
    async fn create_access_request(
        &self,
        req: Request<pb::CreateAccessRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let new = CreateRequest {
            beneficiary: r.beneficiary_employee_id,
            target_kind: target_kind_from(r.target_kind)?,
            target_id: r.target_id,
            justification: r.justification,
            duration_days: days("duration_days", r.duration_days)?,
            extends_grant_id: Some(r.extends_grant_id).filter(|s| !s.is_empty()),
        };
        let out = self.app.create_request(&access, new).await.or_status()?;
        Ok(Response::new(request(&out)))
    }

    async fn get_access_request(
        &self,
        req: Request<pb::GetAccessRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let access = access(&req)?;
        let out = self
            .app
            .request(&access, &req.get_ref().id)
            .await
            .or_status()?;
        Ok(Response::new(request(&out)))
    }

    async fn list_access_requests(
        &self,
        req: Request<pb::ListAccessRequestsRequest>,
    ) -> Result<Response<pb::ListAccessRequestsResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let view = match pb::AccessRequestView::try_from(r.view) {
            Ok(pb::AccessRequestView::Mine) => RequestView::Mine,
            Ok(pb::AccessRequestView::WaitingForMe) => RequestView::WaitingForMe,
            Ok(pb::AccessRequestView::All | pb::AccessRequestView::Unspecified) => RequestView::All,
            Err(_) => return Err(bad("view", "is not a known view")),
        };
        let rows = self
            .app
            .requests(
                &access,
                view,
                state_from(r.state)?,
                Some(r.beneficiary_employee_id).filter(|s| !s.is_empty()),
                &after,
                limit + 1,
            )
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |r| r.id.clone());
        Ok(Response::new(pb::ListAccessRequestsResponse {
            requests: rows.iter().map(request).collect(),
            next_page_token: next,
        }))
    }

    async fn approve_access_request(
        &self,
        req: Request<pb::DecideAccessRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        self.decide(req, true).await
    }

    async fn deny_access_request(
        &self,
        req: Request<pb::DecideAccessRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        self.decide(req, false).await
    }

    async fn cancel_access_request(
        &self,
        req: Request<pb::CancelAccessRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let out = self
            .app
            .cancel_request(&access, &r.id, &r.reason)
            .await
            .or_status()?;
        Ok(Response::new(request(&out)))
    }

    async fn revoke_grant(
        &self,
        req: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let g = self
            .app
            .revoke_grant(&access, &r.grant_id, &r.reason)
            .await
            .or_status()?;
        let class = self
            .app
            .policy()
            .policy
            .entitlements
            .get(&g.entitlement_id)
            .map(|e| e.classification)
            .unwrap_or(idgov_domain::Classification::Public);
        Ok(Response::new(convert::grant(&g, class)))
    }

    async fn list_expiring_grants(
        &self,
        req: Request<pb::ListExpiringGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let within = days("within_days", r.within_days)?.unwrap_or(14);
        let after = match split_key(&paging::decode(&r.page_token)?)? {
            None => None,
            Some((at, id)) => {
                let us: i64 = at
                    .parse()
                    .map_err(|_| bad("page_token", "is not a token this server issued"))?;
                let t = DateTime::<Utc>::from_timestamp_micros(us)
                    .ok_or_else(|| bad("page_token", "is not a token this server issued"))?;
                Some((t, id))
            }
        };
        let rows = self
            .app
            .expiring_grants(&access, &r.employee_id, within, after, limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |(g, _)| {
            format!(
                "{}\u{1f}{}",
                g.expires_at.map(|t| t.timestamp_micros()).unwrap_or(0),
                g.id
            )
        });
        Ok(Response::new(pb::ListGrantsResponse {
            grants: rows.iter().map(|(g, c)| convert::grant(g, *c)).collect(),
            next_page_token: next,
        }))
    }

    async fn list_sod_violations(
        &self,
        req: Request<pb::ListSodViolationsRequest>,
    ) -> Result<Response<pb::ListSodViolationsResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = split_key(&paging::decode(&r.page_token)?)?.unwrap_or_default();
        let rows = self
            .app
            .sod_violations(r.include_resolved, (&after.0, &after.1), limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |v| {
            format!("{}\u{1f}{}", v.employee_id, v.rule_id)
        });
        Ok(Response::new(pb::ListSodViolationsResponse {
            violations: rows.iter().map(violation).collect(),
            next_page_token: next,
        }))
    }

    async fn run_sod_check(
        &self,
        req: Request<pb::RunSodCheckRequest>,
    ) -> Result<Response<pb::RunSodCheckResponse>, Status> {
        let access = access(&req)?;
        let c = self
            .app
            .run_sod_check(&access.caller.actor())
            .await
            .or_status()?;
        Ok(Response::new(pb::RunSodCheckResponse {
            holders_checked: c.holders_checked as i64,
            open: c.open as i64,
            new: c.new as i64,
            resolved: c.resolved as i64,
        }))
    }

    async fn list_sod_exceptions(
        &self,
        req: Request<pb::ListSodExceptionsRequest>,
    ) -> Result<Response<pb::ListSodExceptionsResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let who = Some(r.employee_id.as_str()).filter(|s| !s.is_empty());
        let rows = self
            .app
            .sod_exceptions(who, r.active_only, &after, limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |x| x.id.clone());
        Ok(Response::new(pb::ListSodExceptionsResponse {
            exceptions: rows.iter().map(exception).collect(),
            next_page_token: next,
        }))
    }

    async fn grant_sod_exception(
        &self,
        req: Request<pb::GrantSodExceptionRequest>,
    ) -> Result<Response<pb::SodException>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let d = days("days", r.days)?
            .ok_or_else(|| bad("days", "say how many days the exception lasts"))?;
        let x = self
            .app
            .grant_sod_exception(&access, &r.employee_id, &r.rule_id, &r.justification, d)
            .await
            .or_status()?;
        Ok(Response::new(exception(&x)))
    }
}
