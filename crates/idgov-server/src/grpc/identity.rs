//! `idgov.v1.IdentityService`.

use super::status::OrStatus;
use super::{Api, access, convert, invalid, paging};
use idgov_proto::v1 as pb;
use idgov_proto::v1::identity_service_server::IdentityService;
use idgov_store::IdentityFilter;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl IdentityService for Api {
    async fn get_identity(
        &self,
        req: Request<pb::GetIdentityRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        let access = access(&req)?;
        let (person, active_grants) = self
            .app
            .identity(&access, &req.get_ref().employee_id)
            .await
            .or_status()?;
        Ok(Response::new(convert::identity(&person, active_grants)))
    }

    async fn list_identities(
        &self,
        req: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let status =
            convert::status_from(r.status).map_err(|v| invalid("invalid filter", vec![v]))?;
        let filter = IdentityFilter {
            status,
            department: r.department,
            manager_id: r.manager_employee_id,
        };
        let rows = self
            .app
            .identities(&access, filter, &after, limit + 1)
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |(i, _)| i.employee_id.clone());
        Ok(Response::new(pb::ListIdentitiesResponse {
            identities: rows.iter().map(|(i, n)| convert::identity(i, *n)).collect(),
            next_page_token: next,
        }))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let access = access(&req)?;
        let r = req.into_inner();
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let rows = self
            .app
            .grants(
                &access,
                &r.employee_id,
                r.include_revoked,
                &after,
                limit + 1,
            )
            .await
            .or_status()?;
        let (rows, next) = paging::finish(rows, limit, |(g, _)| g.id.clone());
        Ok(Response::new(pb::ListGrantsResponse {
            grants: rows.iter().map(|(g, c)| convert::grant(g, *c)).collect(),
            next_page_token: next,
        }))
    }
}
