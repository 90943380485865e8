//! `idgov.v1.ProvisioningService`.

use super::{Api, access, convert, paging};
use crate::error::AppError;
use idgov_proto::v1 as pb;
use idgov_proto::v1::provisioning_service_server::ProvisioningService;
use idgov_store::{DirOp, DirOpKind, DirOpState};
use tonic::{Request, Response, Status};

fn operation(o: &DirOp, now: chrono::DateTime<chrono::Utc>) -> pb::DirectoryOperation {
    let kind = match o.kind {
        DirOpKind::AddMember => pb::DirectoryOperationKind::AddMember,
        DirOpKind::RemoveMember => pb::DirectoryOperationKind::RemoveMember,
        DirOpKind::Disable => pb::DirectoryOperationKind::Disable,
        DirOpKind::Enable => pb::DirectoryOperationKind::Enable,
    };
    let state = match o.state {
        DirOpState::Pending => pb::DirectoryOperationState::Pending,
        DirOpState::Done => pb::DirectoryOperationState::Done,
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
            Err(_) => {
                return Err(
                    AppError::invalid("state", "is not a directory operation state").into(),
                );
            }
        };
        let rows = self
            .app
            .store
            .list_directory_ops(state, &r.employee_id, after, limit + 1)
            .await
            .map_err(AppError::from)?;
        let (rows, next) = paging::finish(rows, limit, |o| o.id.to_string());
        let now = self.app.now();
        Ok(Response::new(pb::ListDirectoryOperationsResponse {
            operations: rows.iter().map(|o| operation(o, now)).collect(),
            next_page_token: next,
        }))
    }
}
