//! `idgov.v1.CampaignService`.

use super::status::{OrStatus, to_status};
use super::{Api, access, convert, paging};
use crate::error::AppError;
use idgov_app::review::ItemDecision;
use idgov_domain::review::{Campaign, CampaignState, ItemState, ReviewItem, Verdict};
use idgov_proto::v1 as pb;
use idgov_proto::v1::campaign_service_server::CampaignService;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

fn bad(field: &str, msg: &str) -> Status {
    to_status(AppError::invalid(field, msg))
}

fn campaign(c: &Campaign) -> pb::Campaign {
    pb::Campaign {
        id: c.id.clone(),
        definition_id: c.definition_id.clone(),
        name: c.name.clone(),
        state: match c.state {
            CampaignState::Open => pb::CampaignState::Open,
            CampaignState::Held => pb::CampaignState::Held,
            CampaignState::Closed => pb::CampaignState::Closed,
            CampaignState::Starting => pb::CampaignState::Starting,
            CampaignState::Closing => pb::CampaignState::Closing,
        } as i32,
        policy_version: c.policy_version,
        started_at: Some(convert::ts(c.started_at)),
        started_by: c.started_by.clone(),
        due_at: Some(convert::ts(c.due_at)),
        closed_at: convert::opt_ts(c.closed_at),
        items: c.items,
        mover: c.mover,
        held_change_id: c.held_change_id.clone().unwrap_or_default(),
        definition_json: serde_json::to_string(&c.definition).unwrap_or_default(),
    }
}

fn item_state(s: ItemState) -> pb::ReviewItemState {
    match s {
        ItemState::Open => pb::ReviewItemState::Open,
        ItemState::Certified => pb::ReviewItemState::Certified,
        ItemState::Revoked => pb::ReviewItemState::Revoked,
        ItemState::Kept => pb::ReviewItemState::Kept,
        ItemState::Flagged => pb::ReviewItemState::Flagged,
        ItemState::Superseded => pb::ReviewItemState::Superseded,
    }
}

fn item_state_from(v: i32) -> Result<Option<ItemState>, Status> {
    Ok(match pb::ReviewItemState::try_from(v) {
        Ok(pb::ReviewItemState::Unspecified) => None,
        Ok(pb::ReviewItemState::Open) => Some(ItemState::Open),
        Ok(pb::ReviewItemState::Certified) => Some(ItemState::Certified),
        Ok(pb::ReviewItemState::Revoked) => Some(ItemState::Revoked),
        Ok(pb::ReviewItemState::Kept) => Some(ItemState::Kept),
        Ok(pb::ReviewItemState::Flagged) => Some(ItemState::Flagged),
        Ok(pb::ReviewItemState::Superseded) => Some(ItemState::Superseded),
        Err(_) => return Err(bad("state", "is not a known item state")),
    })
}

pub fn item(i: &ReviewItem) -> pb::ReviewItem {
    pb::ReviewItem {
        id: i.id.clone(),
        campaign_id: i.campaign_id.clone(),
        grant_id: i.grant_id.clone(),
        employee_id: i.employee_id.clone(),
        entitlement_id: i.entitlement_id.clone(),
        classification: convert::classification(i.classification) as i32,
        source: i.source.to_string(),
        source_ref: i.source_ref.clone(),
        granted_at: Some(convert::ts(i.granted_at)),
        approvers: i.approvers.clone(),
        last_decision: i.last_decision.map(|d| d.to_string()).unwrap_or_default(),
        last_reviewed_at: convert::opt_ts(i.last_reviewed_at),
        peers_holding: i.peers_holding,
        peers_total: i.peers_total,
        recommendation: i.recommendation.to_string(),
        reason: i.reason.clone(),
        stage: i.stage.to_string(),
        reviewer: i.reviewer.clone(),
        note: i.note.clone(),
        state: item_state(i.state) as i32,
        decided_by: i.decided_by.clone().unwrap_or_default(),
        decided_at: convert::opt_ts(i.decided_at),
        justification: i.justification.clone(),
    }
}

fn check_id(field: &str, id: &str) -> Result<(), Status> {
    if id.trim().is_empty() {
        return Err(bad(field, "is required"));
    }
    if let Some(p) = idgov_domain::identity::text_problem(id, 128) {
        return Err(bad(field, &p));
    }
    Ok(())
}

type EvidenceStream = Pin<Box<dyn Stream<Item = Result<pb::EvidenceChunk, Status>> + Send>>;

#[tonic::async_trait]
impl CampaignService for Api {
    async fn preview_campaign(
        &self,
        req: Request<pb::PreviewCampaignRequest>,
    ) -> Result<Response<pb::CampaignPreview>, Status> {
        access(&req)?;
        let id = &req.get_ref().definition_id;
        check_id("definition_id", id)?;
        let p = self.app.preview_campaign(id).await.or_status()?;
        Ok(Response::new(pb::CampaignPreview {
            definition_id: p.definition_id,
            items: p.items as i64,
            people: p.people as i64,
            by_level: p
                .by_level
                .iter()
                .map(|(l, n)| pb::LevelCount {
                    classification: l
                        .parse()
                        .map(|c| convert::classification(c) as i32)
                        .unwrap_or_default(),
                    items: *n as i64,
                })
                .collect(),
            by_reviewer: p
                .by_reviewer
                .into_iter()
                .map(|(reviewer, n)| pb::ReviewerCount {
                    reviewer,
                    items: n as i64,
                })
                .collect(),
        }))
    }

    async fn start_campaign(
        &self,
        req: Request<pb::StartCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        let access = access(&req)?;
        let id = &req.get_ref().definition_id;
        check_id("definition_id", id)?;
        let (id, actor) = (id.clone(), access.caller.actor());
        let c = super::to_the_end(&self.app, move |app| async move {
            app.start_campaign(&id, &actor).await
        })
        .await
        .or_status()?;
        Ok(Response::new(campaign(&c)))
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::Campaign>, Status> {
        access(&req)?;
        check_id("id", &req.get_ref().id)?;
        let c = self.app.campaign(&req.get_ref().id).await.or_status()?;
        Ok(Response::new(campaign(&c)))
    }

    async fn list_campaigns(
        &self,
        req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let before = paging::decode(&r.page_token)?;
        let rows = self
            .app
            .campaigns(r.open_only, &before, limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |c| c.id.clone());
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: rows.iter().map(campaign).collect(),
            next_page_token: next,
        }))
    }

    async fn list_review_items(
        &self,
        req: Request<pb::ListReviewItemsRequest>,
    ) -> Result<Response<pb::ListReviewItemsResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let rows = self
            .app
            .review_items(
                &access,
                r.mine,
                Some(r.campaign_id).filter(|s| !s.is_empty()),
                item_state_from(r.state)?,
                Some(r.employee_id).filter(|s| !s.is_empty()),
                &after,
                limit + 1,
            )
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |i| i.id.clone());
        Ok(Response::new(pb::ListReviewItemsResponse {
            items: rows.iter().map(item).collect(),
            next_page_token: next,
        }))
    }

    async fn decide_review_items(
        &self,
        req: Request<pb::DecideReviewItemsRequest>,
    ) -> Result<Response<pb::DecideReviewItemsResponse>, Status> {
        let access = access(&req)?;
        let mut decisions = Vec::new();
        for (k, d) in req.into_inner().decisions.into_iter().enumerate() {
            let verdict = match pb::ReviewVerdict::try_from(d.verdict) {
                Ok(pb::ReviewVerdict::Certify) => Verdict::Certify,
                Ok(pb::ReviewVerdict::Revoke) => Verdict::Revoke,
                _ => {
                    return Err(bad(
                        &format!("decisions[{k}].verdict"),
                        "say certify or revoke",
                    ));
                }
            };
            check_id(&format!("decisions[{k}].item_id"), &d.item_id)?;
            decisions.push(ItemDecision {
                item_id: d.item_id,
                verdict,
                justification: d.justification,
            });
        }
        let out = self
            .app
            .decide_items(&access, decisions)
            .await
            .or_status()?;
        Ok(Response::new(pb::DecideReviewItemsResponse {
            results: out
                .into_iter()
                .map(|o| match o.result {
                    Ok(i) => pb::DecisionResult {
                        item_id: o.item_id,
                        ok: true,
                        code: String::new(),
                        message: String::new(),
                        item: Some(item(&i)),
                    },
                    Err(e) => {
                        let s = to_status(e);
                        pb::DecisionResult {
                            item_id: o.item_id,
                            ok: false,
                            code: format!("{:?}", s.code()),
                            message: s.message().to_string(),
                            item: None,
                        }
                    }
                })
                .collect(),
        }))
    }

    async fn reassign_review_item(
        &self,
        req: Request<pb::ReassignReviewItemRequest>,
    ) -> Result<Response<pb::ReviewItem>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        check_id("item_id", &r.item_id)?;
        let i = self
            .app
            .reassign_item(&access, &r.item_id, &r.to_employee_id, &r.reason)
            .await
            .or_status()?;
        Ok(Response::new(item(&i)))
    }

    async fn close_campaign(
        &self,
        req: Request<pb::CloseCampaignRequest>,
    ) -> Result<Response<pb::CloseCampaignResponse>, Status> {
        let access = access(&req)?;
        check_id("id", &req.get_ref().id)?;
        let (id, actor) = (req.get_ref().id.clone(), access.caller.actor());
        let o = super::to_the_end(&self.app, move |app| async move {
            app.close_campaign(&id, &actor).await
        })
        .await
        .or_status()?;
        Ok(Response::new(pb::CloseCampaignResponse {
            campaign: Some(campaign(&o.campaign)),
            defaulted: o.defaulted as i64,
            revoked_by_default: o.revoked as i64,
            superseded: o.superseded as i64,
            held_change_id: o.held_change_id.unwrap_or_default(),
            guard: o.guard.as_ref().map(convert::verdict),
        }))
    }

    async fn get_campaign_report(
        &self,
        req: Request<pb::GetCampaignReportRequest>,
    ) -> Result<Response<pb::CampaignReport>, Status> {
        access(&req)?;
        check_id("id", &req.get_ref().id)?;
        let r = self
            .app
            .campaign_report(&req.get_ref().id)
            .await
            .or_status()?;
        Ok(Response::new(pb::CampaignReport {
            campaign_id: r.campaign_id,
            items: r.items as i64,
            decided: r.decided as i64,
            by_state: r
                .by_state
                .into_iter()
                .map(|(state, n)| pb::StateCount {
                    state,
                    items: n as i64,
                })
                .collect(),
            reviewers: r
                .reviewers
                .into_iter()
                .map(|x| pb::ReviewerReport {
                    reviewer: x.reviewer,
                    items: x.items as i64,
                    open: x.open as i64,
                    certified: x.certified as i64,
                    revoked: x.revoked as i64,
                    approve_rate: x.approve_rate,
                    median_seconds_per_decision: x.median_seconds_per_decision.unwrap_or(0.0),
                    bulk_decisions: x.bulk_decisions as i64,
                    decided_without_opening: x.decided_without_opening as i64,
                })
                .collect(),
        }))
    }

    type ExportCampaignEvidenceStream = EvidenceStream;

    async fn export_campaign_evidence(
        &self,
        req: Request<pb::ExportCampaignEvidenceRequest>,
    ) -> Result<Response<Self::ExportCampaignEvidenceStream>, Status> {
        access(&req)?;
        let id = req.get_ref().id.clone();
        check_id("id", &id)?;
        // Fail before streaming when the campaign does not exist.
        self.app.campaign(&id).await.or_status()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, AppError>>(256);
        let (chunks, out) = tokio::sync::mpsc::channel::<Result<pb::EvidenceChunk, Status>>(4);
        let app = self.app.clone();
        let errors = tx.clone();
        let workers = &self.app.workers;
        workers.spawn("evidence export", async move {
            if let Err(e) = app.export_evidence(&id, tx).await {
                let _ = errors.send(Err(e)).await;
            }
        });
        // Lines bundled into chunks of about 60 KiB.
        workers.spawn("evidence export", async move {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            while let Some(line) = rx.recv().await {
                match line {
                    Ok(l) => {
                        buf.extend_from_slice(l.as_bytes());
                        buf.push(b'\n');
                        if buf.len() >= 60 * 1024
                            && chunks
                                .send(Ok(pb::EvidenceChunk {
                                    data: std::mem::take(&mut buf),
                                }))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = chunks.send(Err(to_status(e))).await;
                        return;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = chunks.send(Ok(pb::EvidenceChunk { data: buf })).await;
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(out);
        Ok(Response::new(Box::pin(stream)))
    }
}
