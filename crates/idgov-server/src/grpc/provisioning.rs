//! `idgov.v1.ProvisioningService`.

use super::status::OrStatus;
use super::{Api, access, convert, paging};
use crate::error::AppError;
use idgov_domain::drift::DriftKind;
use idgov_proto::v1 as pb;
use idgov_proto::v1::directory_service_server::DirectoryService;
use idgov_proto::v1::provisioning_service_server::ProvisioningService;
use idgov_store::{DirOp, DirOpKind, DirOpState, DriftRow, SyncRun};
use tonic::{Request, Response, Status};

fn operation(o: &DirOp, now: chrono::DateTime<chrono::Utc>) -> pb::DirectoryOperation {
    let kind = match o.kind {
        DirOpKind::AddMember => pb::DirectoryOperationKind::AddMember,
        DirOpKind::RemoveMember => pb::DirectoryOperationKind::RemoveMember,
        DirOpKind::Disable => pb::DirectoryOperationKind::Disable,
        DirOpKind::StripGroups => pb::DirectoryOperationKind::StripGroups,
        DirOpKind::Enable => pb::DirectoryOperationKind::Enable,
        DirOpKind::CreateAccount => pb::DirectoryOperationKind::CreateAccount,
    };
    let state = match o.state {
        DirOpState::Pending => pb::DirectoryOperationState::Pending,
        DirOpState::Done => pb::DirectoryOperationState::Done,
        DirOpState::Failed => pb::DirectoryOperationState::Failed,
        DirOpState::Superseded => pb::DirectoryOperationState::Superseded,
    };
    pb::DirectoryOperation {
        id: o.id,
        employee_id: o.employee_id.clone(),
        kind: kind as i32,
        group_dn: o.group_dn.clone().unwrap_or_default(),
        entitlement_id: o.entitlement_id.clone().unwrap_or_default(),
        cause: o.cause.clone(),
        state: state as i32,
        attempts: o.attempts,
        last_error: o.last_error.clone().unwrap_or_default(),
        outcome: o.outcome.clone().unwrap_or_default(),
        created_at: Some(convert::ts(o.created_at)),
        next_attempt_at: Some(convert::ts(o.next_attempt_at)),
        done_at: convert::opt_ts(o.done_at),
        age_seconds: (o.done_at.unwrap_or(now) - o.created_at).num_seconds(),
    }
}

#[tonic::async_trait]
impl ProvisioningService for Api {
    async fn list_directory_operations(
        &self,
        req: Request<pb::ListDirectoryOperationsRequest>,
    ) -> Result<Response<pb::ListDirectoryOperationsResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode_i64(&r.page_token)?;
        let state = match pb::DirectoryOperationState::try_from(r.state) {
            Ok(pb::DirectoryOperationState::Unspecified) => None,
            Ok(pb::DirectoryOperationState::Pending) => Some(DirOpState::Pending),
            Ok(pb::DirectoryOperationState::Done) => Some(DirOpState::Done),
            Ok(pb::DirectoryOperationState::Failed) => Some(DirOpState::Failed),
            Ok(pb::DirectoryOperationState::Superseded) => Some(DirOpState::Superseded),
            Err(_) => {
                return Err(super::status::to_status(AppError::invalid(
                    "state",
                    "is not a directory operation state",
                )));
            }
        };
        let rows = self
            .app
            .directory_ops(state, &r.employee_id, after, limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |o| o.id.to_string());
        let now = self.app.now();
        Ok(Response::new(pb::ListDirectoryOperationsResponse {
            operations: rows.iter().map(|o| operation(o, now)).collect(),
            next_page_token: next,
        }))
    }

    async fn retry_directory_operation(
        &self,
        req: Request<pb::RetryDirectoryOperationRequest>,
    ) -> Result<Response<pb::DirectoryOperation>, Status> {
        let access = access(&req)?;
        let id = req.into_inner().id;
        if id <= 0 {
            return Err(super::status::to_status(AppError::invalid(
                "id",
                "is required (see `idgov provisioning list --state failed`)",
            )));
        }
        let op = self
            .app
            .retry_directory_op(id, &access.caller.actor())
            .await
            .or_status()?;
        Ok(Response::new(operation(&op, self.app.now())))
    }
}

fn drift_kind(k: DriftKind) -> pb::DriftKind {
    match k {
        DriftKind::OrphanAccount => pb::DriftKind::OrphanAccount,
        DriftKind::EnabledLeaver => pb::DriftKind::EnabledLeaver,
        DriftKind::UnmanagedMembership => pb::DriftKind::UnmanagedMembership,
        DriftKind::MissingMembership => pb::DriftKind::MissingMembership,
        DriftKind::MissingAccount => pb::DriftKind::MissingAccount,
    }
}

fn drift_item(r: &DriftRow) -> pb::DriftItem {
    let d = &r.drift;
    pb::DriftItem {
        seq: r.seq,
        kind: drift_kind(d.kind) as i32,
        employee_id: d.employee_id.clone().unwrap_or_default(),
        account_dn: d.account_dn.clone().unwrap_or_default(),
        group_dn: d.group_dn.clone().unwrap_or_default(),
        entitlement_id: d.entitlement_id.clone().unwrap_or_default(),
        action: r.action.clone(),
    }
}

fn sync_run(run: &SyncRun, drift: &[DriftRow]) -> pb::DirectorySync {
    let counts = run
        .summary
        .get("drift")
        .and_then(|d| d.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    pb::DirectorySync {
        id: run.id.clone(),
        started_at: Some(convert::ts(run.started_at)),
        finished_at: Some(convert::ts(run.finished_at)),
        actor: run.actor.clone(),
        dry_run: run.dry_run,
        accounts: run.accounts,
        groups: run.groups,
        drift_counts: counts,
        remediations_queued: run
            .summary
            .get("remediations_queued")
            .and_then(|v| v.as_i64())
            .unwrap_or(0),
        // The application answers with the first `DRIFT_SHOWN` rows.
        drift: drift.iter().map(drift_item).collect(),
        grants_imported: run
            .summary
            .get("grants_imported")
            .and_then(|v| v.as_i64())
            .unwrap_or(0),
        complete: run.complete,
    }
}

#[tonic::async_trait]
impl DirectoryService for Api {
    async fn run_directory_sync(
        &self,
        req: Request<pb::RunDirectorySyncRequest>,
    ) -> Result<Response<pb::DirectorySync>, Status> {
        let access = access(&req)?;
        let dry_run = req.get_ref().dry_run;
        let actor = access.caller.actor();
        let (run, drift) = super::to_the_end(&self.app, move |app| async move {
            app.sync_directory(dry_run, &actor).await
        })
        .await
        .or_status()?;
        Ok(Response::new(sync_run(
            &run,
            if dry_run { &drift } else { &[] },
        )))
    }

    async fn get_directory_sync(
        &self,
        req: Request<pb::GetDirectorySyncRequest>,
    ) -> Result<Response<pb::DirectorySync>, Status> {
        access(&req)?;
        let run = self
            .app
            .directory_sync_run(&req.get_ref().id)
            .await
            .or_status()?;
        Ok(Response::new(sync_run(&run, &[])))
    }

    async fn list_drift(
        &self,
        req: Request<pb::ListDriftRequest>,
    ) -> Result<Response<pb::ListDriftResponse>, Status> {
        access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode_i64(&r.page_token)?;
        // The one mapping, read backwards: unspecified (0) matches no kind.
        let kind = match pb::DriftKind::try_from(r.kind) {
            Ok(k) => DriftKind::ALL.iter().copied().find(|d| drift_kind(*d) == k),
            Err(_) => {
                return Err(super::status::to_status(AppError::invalid(
                    "kind",
                    "is not a drift kind",
                )));
            }
        };
        let (sync_id, rows) = self
            .app
            .drift(&r.sync_id, kind, after, limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |d| d.seq.to_string());
        Ok(Response::new(pb::ListDriftResponse {
            sync_id,
            drift: rows.iter().map(drift_item).collect(),
            next_page_token: next,
        }))
    }
}
