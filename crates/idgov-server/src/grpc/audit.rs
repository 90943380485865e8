//! `idgov.v1.AuditService`.

use super::status::OrStatus;
use super::{Api, access, convert, paging};
use idgov_proto::v1 as pb;
use idgov_proto::v1::audit_service_server::AuditService;
use idgov_store::AuditFilter;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl AuditService for Api {
    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode_i64(&r.page_token)?;
        let filter = AuditFilter {
            actor: r.actor,
            target: r.target,
            action: r.action,
            start: r.start_time.as_ref().and_then(convert::from_ts),
            end: r.end_time.as_ref().and_then(convert::from_ts),
        };
        let rows = self
            .app
            .audit_events(&filter, after, limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |e| e.seq.to_string());
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: rows
                .into_iter()
                .map(|e| pb::AuditEvent {
                    seq: e.seq,
                    occurred_at: Some(convert::ts(e.occurred_at)),
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    detail_json: e.detail,
                    prev_hash: e.prev_hash,
                    hash: e.hash,
                    security_event: e.security,
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn verify_audit_chain(
        &self,
        req: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let access = access(&req)?;
        let report = self
            .app
            .verify_audit(&access.caller.actor())
            .await
            .or_status()?;
        Ok(Response::new(pb::VerifyAuditChainResponse {
            ok: report.broken.is_none(),
            events_checked: report.checked as i64,
            first_bad_seq: report.broken.as_ref().map(|b| b.seq).unwrap_or(0),
            problem: report.broken.map(|b| b.problem).unwrap_or_default(),
            head_hash: report.head_hash,
            checkpoints_checked: report.checkpoints as i64,
            last_checkpoint_seq: report.last_checkpoint.map(|c| c.0).unwrap_or(0),
            last_checkpoint_at: report.last_checkpoint.map(|c| super::convert::ts(c.1)),
        }))
    }
}
