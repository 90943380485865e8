//! `idgov.v1.IdentityService`.

use super::{Api, access, convert, invalid, paging};
use crate::error::AppError;
use idgov_authz::{Access, Grant, ObjectFacts, check_object};
use idgov_domain::FieldViolation;
use idgov_domain::identity::{Identity, validate_employee_id};
use idgov_proto::v1 as pb;
use idgov_proto::v1::identity_service_server::IdentityService;
use idgov_store::IdentityFilter;
use tonic::{Request, Response, Status};

impl Api {
    /// Loads the identity a call is about and checks the caller may reach
    /// it. A scoped caller learns nothing about identities outside its
    /// reach: unknown and unrelated look the same.
    async fn reachable_identity(
        &self,
        access: &Access,
        employee_id: &str,
    ) -> Result<Identity, Status> {
        validate_employee_id(employee_id).map_err(|e| {
            invalid(
                "invalid employee id",
                vec![FieldViolation::new("employee_id", e)],
            )
        })?;
        let found = self
            .app
            .store
            .get_identity(employee_id)
            .await
            .map_err(AppError::from)?;
        let scoped = matches!(access.grant, Grant::Scoped { .. });
        let person = match found {
            Some(p) => p,
            None if scoped => return Err(denied(access)),
            None => {
                return Err(
                    AppError::not_found(format!("there is no identity {employee_id}")).into(),
                );
            }
        };
        let facts = ObjectFacts {
            employee_id: Some(person.employee_id.clone()),
            manager_id: person.attrs.manager_id.clone(),
        };
        check_object(access, &facts).map_err(|_| denied(access))?;
        Ok(person)
    }
}

/// Out of reach and missing answer alike (see `idgov_authz::out_of_reach`).
fn denied(access: &Access) -> Status {
    AppError::PermissionDenied(idgov_authz::out_of_reach(access).reason).into()
}

#[tonic::async_trait]
impl IdentityService for Api {
    async fn get_identity(
        &self,
        req: Request<pb::GetIdentityRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        let access = access(&req)?;
        let person = self
            .reachable_identity(&access, &req.get_ref().employee_id)
            .await?;
        let active_grants = self
            .app
            .store
            .count_active_grants(&person.employee_id)
            .await
            .map_err(AppError::from)?;
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
        let mut filter = IdentityFilter {
            status,
            department: r.department,
            manager_id: r.manager_employee_id,
        };
        if let Grant::Scoped { .. } = access.grant {
            // A manager lists their own reports, and only those.
            let me = access.caller.employee_id.clone().unwrap_or_default();
            if filter.manager_id.is_empty() {
                filter.manager_id = me;
            } else if filter.manager_id != me {
                return Err(denied(&access));
            }
        }
        let rows = self
            .app
            .store
            .list_identities(&filter, &after, limit + 1)
            .await
            .map_err(AppError::from)?;
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
        let person = self.reachable_identity(&access, &r.employee_id).await?;
        let limit = paging::page_size(r.page_size)?;
        let after = paging::decode(&r.page_token)?;
        let rows = self
            .app
            .store
            .list_grants(&person.employee_id, r.include_revoked, &after, limit + 1)
            .await
            .map_err(AppError::from)?;
        let (rows, next) = paging::finish(rows, limit, |(g, _)| g.id.clone());
        Ok(Response::new(pb::ListGrantsResponse {
            grants: rows.iter().map(|(g, c)| convert::grant(g, *c)).collect(),
            next_page_token: next,
        }))
    }
}
