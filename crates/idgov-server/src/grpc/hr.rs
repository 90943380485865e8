//! `idgov.v1.HrService`.

use super::status::OrStatus;
use super::{Api, access, convert, invalid, paging};
use crate::app::App;
use crate::app::roster::{RosterInput, RosterUpload, SyncRequest};
use crate::error::AppError;
use idgov_domain::FieldViolation;
use idgov_domain::hr::HrEvent;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_server::HrService;
use idgov_proto::v1::sync_roster_request::Item;
use idgov_store::EventFilter;
use tonic::{Request, Response, Status, Streaming};

/// The largest roster accepted in one sync.
const MAX_ROSTER: usize = 2_000_000;

#[tonic::async_trait]
impl HrService for Api {
    async fn submit_hr_event(
        &self,
        req: Request<pb::SubmitHrEventRequest>,
    ) -> Result<Response<pb::SubmitHrEventResponse>, Status> {
        let access = access(&req)?;
        let Some(ev) = req.into_inner().event else {
            return Err(invalid(
                "the request has no event",
                vec![FieldViolation::new("event", "is required")],
            ));
        };
        let input = convert::event_input(&ev).map_err(|v| invalid("the HR event is invalid", v))?;
        let policy = self.app.policy();
        let event = HrEvent::parse(input, policy.policy.hr_time_zone, self.app.now())
            .map_err(AppError::from)
            .or_status()?;
        let out = self
            .app
            .submit_event(event, &access.caller.actor())
            .await
            .or_status()?;
        Ok(Response::new(pb::SubmitHrEventResponse {
            state: convert::event_state(out.state) as i32,
            duplicate: out.duplicate,
            effective_at: Some(convert::ts(out.effective_at)),
            detail: out.detail,
            grants_added: out.grants_added as i32,
            grants_revoked: out.grants_revoked as i32,
        }))
    }

    async fn sync_roster(
        &self,
        req: Request<Streaming<pb::SyncRosterRequest>>,
    ) -> Result<Response<pb::SyncRosterResponse>, Status> {
        let access = access(&req)?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::SyncRosterRequest {
                item: Some(Item::Header(h)),
            }) => h,
            _ => {
                return Err(invalid(
                    "the first message of a roster sync must be its header",
                    vec![FieldViolation::new("header", "is required first")],
                ));
            }
        };
        // Staged as they arrive: a roster is never held whole.
        // (The guard drops the stage when this handler is dropped mid-way,
        // its sender gone.)
        let mut upload = self.app.begin_roster_upload().await.or_status()?;
        let guard = upload.guard(&self.app);
        let received = receive_roster(&self.app, &mut stream, &mut upload).await;
        if let Err(e) = received {
            upload.abandon(&self.app).await;
            guard.disarm();
            return Err(e);
        }
        let staged = upload.finish(&self.app).await;
        guard.disarm();
        let staged = staged.or_status()?;
        let request = SyncRequest {
            source: header.source,
            sync_id: header.sync_id,
            dry_run: header.dry_run,
            as_of: header.as_of,
            time_zone: header.time_zone,
            entries: RosterInput::Staged(staged),
        };
        let actor = access.caller.actor();
        let out = super::to_the_end(&self.app, move |app| async move {
            app.sync_roster(request, &actor).await
        })
        .await
        .or_status()?;
        Ok(Response::new(convert::sync_response(&out)))
    }

    async fn list_hr_events(
        &self,
        req: Request<pb::ListHrEventsRequest>,
    ) -> Result<Response<pb::ListHrEventsResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let state =
            convert::event_state_from(r.state).map_err(|v| invalid("invalid filter", vec![v]))?;
        let filter = EventFilter {
            state,
            employee_id: r.employee_id,
        };
        let (rows, next) = match (r.roster_source.as_str(), r.roster_sync_id.as_str()) {
            ("", "") => {
                let after = paging::decode_i64(&r.page_token)?;
                let rows = self
                    .app
                    .hr_events(&filter, after, limit + 1)
                    .await
                    .or_status()?;
                paging::finish(rows, limit, |e| e.arrival.to_string())
            }
            (source, sync_id) if !source.is_empty() && !sync_id.is_empty() => {
                // As long as a roster's header may make them.
                let v: Vec<FieldViolation> =
                    [("roster_source", source), ("roster_sync_id", sync_id)]
                        .into_iter()
                        .filter_map(|(field, value)| {
                            idgov_domain::identity::text_problem(value, 128)
                                .map(|p| FieldViolation::new(field, p))
                        })
                        .collect();
                if !v.is_empty() {
                    return Err(invalid("invalid filter", v));
                }
                let after = paging::decode(&r.page_token)?;
                let rows = self
                    .app
                    .roster_sync_events(source, sync_id, &filter, &after, limit + 1)
                    .await
                    .or_status()?;
                paging::finish(rows, limit, |e| e.event.event_id.clone())
            }
            (source, _) => {
                let (field, other) = if source.is_empty() {
                    ("roster_source", "roster_sync_id")
                } else {
                    ("roster_sync_id", "roster_source")
                };
                return Err(invalid(
                    "invalid filter",
                    vec![FieldViolation::new(
                        field,
                        format!(
                            "is required with {other}: a roster sync is named by its source and its sync id"
                        ),
                    )],
                ));
            }
        };
        Ok(Response::new(pb::ListHrEventsResponse {
            events: rows.iter().map(convert::recorded_event).collect(),
            next_page_token: next,
        }))
    }

    async fn list_held_changes(
        &self,
        req: Request<pb::ListHeldChangesRequest>,
    ) -> Result<Response<pb::ListHeldChangesResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let state =
            convert::held_state_from(r.state).map_err(|v| invalid("invalid filter", vec![v]))?;
        let rows = self
            .app
            .held_changes(state, &after, limit + 1)
            .await
            .or_status()?;
        let (rows, mut next) = paging::finish(rows, limit, |h| h.id.clone());
        let mut held: Vec<pb::HeldChange> = rows.iter().map(convert::held).collect();
        let fit = paging::fitting(&held, paging::PAGE_BYTES);
        if fit < held.len() {
            held.truncate(fit);
            next = held
                .last()
                .map(|h| paging::encode(&h.id))
                .unwrap_or_default();
        }
        Ok(Response::new(pb::ListHeldChangesResponse {
            held_changes: held,
            next_page_token: next,
        }))
    }

    async fn list_held_roster_changes(
        &self,
        req: Request<pb::ListHeldRosterChangesRequest>,
    ) -> Result<Response<pb::ListHeldRosterChangesResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)? as usize;
        let from = page_place(&r.page_token)?;
        let (page, total) = self
            .app
            .held_roster_changes(&r.id, from, limit)
            .await
            .or_status()?;
        let (changes, next) = changes_page(&page, from, total);
        Ok(Response::new(pb::ListHeldRosterChangesResponse {
            next_page_token: next,
            changes,
            total_changes: total as i64,
        }))
    }

    async fn list_roster_preview(
        &self,
        req: Request<pb::ListRosterPreviewRequest>,
    ) -> Result<Response<pb::ListRosterPreviewResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)? as usize;
        let from = page_place(&r.page_token)?;
        let page = self
            .app
            .roster_preview(&r.preview_id, from, limit)
            .await
            .or_status()?;
        let (changes, next) = changes_page(&page.changes, from, page.total);
        Ok(Response::new(pb::ListRosterPreviewResponse {
            changes,
            next_page_token: next,
            total_changes: page.total as i64,
            expires_at: Some(convert::ts(page.expires_at)),
        }))
    }

    async fn release_held_change(
        &self,
        req: Request<pb::ReleaseHeldChangeRequest>,
    ) -> Result<Response<pb::ReleaseHeldChangeResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let actor = access.caller.actor();
        let h = super::to_the_end(&self.app, move |app| async move {
            app.release_held(&r.id, &r.reason, &actor).await
        })
        .await
        .or_status()?;
        Ok(Response::new(pb::ReleaseHeldChangeResponse {
            held_change: Some(convert::held(&h)),
        }))
    }

    async fn discard_held_change(
        &self,
        req: Request<pb::DiscardHeldChangeRequest>,
    ) -> Result<Response<pb::DiscardHeldChangeResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let actor = access.caller.actor();
        let h = super::to_the_end(&self.app, move |app| async move {
            app.discard_held(&r.id, &r.reason, &actor).await
        })
        .await
        .or_status()?;
        Ok(Response::new(pb::DiscardHeldChangeResponse {
            held_change: Some(convert::held(&h)),
        }))
    }
}

/// The place a page of staged roster changes starts at, from its token.
fn page_place(token: &str) -> Result<usize, Status> {
    usize::try_from(paging::decode_i64(token)?).map_err(|_| {
        invalid(
            "invalid page token",
            vec![FieldViolation::new(
                "page_token",
                "is not a token this server issued; start again without one",
            )],
        )
    })
}

/// A page of roster changes read from place `from` of `total`, cut to
/// stay well under the message limit, and the token of the next page.
fn changes_page(
    page: &[idgov_domain::roster::RosterChange],
    from: usize,
    total: usize,
) -> (Vec<pb::RosterChange>, String) {
    let mut changes: Vec<pb::RosterChange> = page.iter().map(convert::roster_change).collect();
    changes.truncate(paging::fitting(&changes, paging::PAGE_BYTES));
    let upto = from + changes.len();
    let next = if upto < total && !changes.is_empty() {
        paging::encode(&upto.to_string())
    } else {
        String::new()
    };
    (changes, next)
}

/// Takes a roster's entries from `stream` into `upload`, as they arrive.
/// An entry that cannot be read is reported (the first hundred such
/// problems, by place); a message that is not an entry, or a roster over
/// [`MAX_ROSTER`] entries, ends it.
async fn receive_roster(
    app: &App,
    stream: &mut Streaming<pb::SyncRosterRequest>,
    upload: &mut RosterUpload,
) -> Result<(), Status> {
    let mut violations = Vec::new();
    while let Some(msg) = stream.message().await? {
        match msg.item {
            Some(Item::Entry(e)) => {
                match convert::roster_entry(e, upload.len()) {
                    Ok(entry) => upload.push(app, entry).await.or_status()?,
                    Err(mut v) => {
                        violations.append(&mut v);
                        // Keeps the count, so later entries are named by their place.
                        upload.skip();
                    }
                }
                if upload.len() > MAX_ROSTER {
                    return Err(invalid(
                        "the roster is too large",
                        vec![FieldViolation::new(
                            "entries",
                            format!("at most {MAX_ROSTER} entries per sync"),
                        )],
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "a roster sync has one header, then only entries",
                    vec![FieldViolation::new(
                        format!("entries[{}]", upload.len()),
                        "is not an entry",
                    )],
                ));
            }
        }
        if violations.len() > 100 {
            break;
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(invalid("the roster has invalid entries", violations))
    }
}
