//! The `idgov.v1` gRPC API: thin adapters from messages to the application
//! services. Authentication and the RPC-level authorization happened in
//! [`crate::auth::layer`]; handlers of relationship-scoped RPCs finish the
//! object-level check with `idgov_authz::check_object`.

mod access;
mod audit;
mod campaign;
pub mod convert;
mod hr;
mod identity;
pub mod paging;
mod policy;
mod provisioning;
pub mod status;

use crate::app::App;
use crate::error::AppError;
use idgov_authz::Access;
use idgov_domain::{DomainError, FieldViolation};
use std::sync::Arc;
use tonic::{Request, Status};

/// The API over the application.
#[derive(Debug, Clone)]
pub struct Api {
    app: Arc<App>,
}

impl Api {
    pub fn new(app: Arc<App>) -> Self {
        Api { app }
    }
}

pub(crate) use crate::app::to_the_end;

/// The authorization decision the layer attached to the request.
pub(crate) fn access<T>(req: &Request<T>) -> Result<Access, Status> {
    req.extensions()
        .get::<Access>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("no authorization decision for this call"))
}

/// An INVALID_ARGUMENT status from field violations.
pub(crate) fn invalid(message: &str, violations: Vec<FieldViolation>) -> Status {
    status::to_status(AppError::Domain(DomainError::invalid(message, violations)))
}
