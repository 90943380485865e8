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
            subject: r.employee_id,
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

    async fn list_webhook_subscriptions(
        &self,
        req: Request<pb::ListWebhookSubscriptionsRequest>,
    ) -> Result<Response<pb::ListWebhookSubscriptionsResponse>, Status> {
        access(&req)?;
        let subs = self.app.webhook_subscriptions().await.or_status()?;
        Ok(Response::new(pb::ListWebhookSubscriptionsResponse {
            subscriptions: subs.iter().map(subscription).collect(),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = if r.limit <= 0 { 50 } else { i64::from(r.limit) };
        let rows = self
            .app
            .webhook_deliveries(&r.subscription_id, limit)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: rows
                .iter()
                .map(|a| pb::WebhookDelivery {
                    seq: a.seq,
                    attempt: a.attempt,
                    at: Some(convert::ts(a.at)),
                    status: a.status.unwrap_or(0) as i32,
                    error: a.error.clone().unwrap_or_default(),
                    millis: a.millis,
                })
                .collect(),
        }))
    }

    async fn redeliver_webhook(
        &self,
        req: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let s = self
            .app
            .redeliver_webhook(
                &r.subscription_id,
                (r.from_seq != 0).then_some(r.from_seq),
                &r.reason,
                &access.caller.actor(),
            )
            .await
            .or_status()?;
        Ok(Response::new(subscription(&s)))
    }

    async fn create_webhook_subscription(
        &self,
        req: Request<pb::CreateWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::CreateWebhookSubscriptionResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let (s, secret) = self
            .app
            .create_webhook(&r.id, &r.url, &r.events, &access.caller.actor())
            .await
            .or_status()?;
        Ok(Response::new(pb::CreateWebhookSubscriptionResponse {
            subscription: Some(subscription(&s)),
            secret,
        }))
    }

    async fn delete_webhook_subscription(
        &self,
        req: Request<pb::DeleteWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteWebhookSubscriptionResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        self.app
            .delete_webhook(&r.subscription_id, &r.reason, &access.caller.actor())
            .await
            .or_status()?;
        Ok(Response::new(pb::DeleteWebhookSubscriptionResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        req: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let (secret, n) = self
            .app
            .rotate_webhook_secret(&r.subscription_id, &access.caller.actor())
            .await
            .or_status()?;
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            secret,
            secrets_in_use: n as u32,
        }))
    }
}

fn subscription(s: &idgov_store::webhooks::Subscription) -> pb::WebhookSubscription {
    pb::WebhookSubscription {
        id: s.id.clone(),
        url: s.url.clone(),
        events: s.events.clone(),
        cursor: s.cursor,
        state: s.state.clone(),
        state_reason: s.state_reason.clone().unwrap_or_default(),
        failures: s.failures,
        origin: s.origin.clone(),
        next_attempt_at: Some(convert::ts(s.next_attempt_at)),
    }
}
