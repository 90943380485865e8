//! Errors of the application layer. [`crate::grpc::status`] is the one place
//! that maps them to gRPC status codes.

use idgov_domain::DomainError;
use idgov_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AppError {
    #[error("{0}")]
    Domain(#[from] DomainError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The service is shutting down or a worker is gone.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Bulk work the service stopped between two steps as it began to
    /// stop: its progress is recorded and it goes on by itself when the
    /// service is back, so it must not be sent again.
    #[error("unavailable: {0}")]
    GoesOnLater(String),
}

impl AppError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        AppError::Domain(DomainError::invalid(
            "invalid request",
            vec![idgov_domain::FieldViolation::new(field, description)],
        ))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        AppError::Domain(DomainError::not_found(message))
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        AppError::Domain(DomainError::precondition(message))
    }

    /// True for errors of the store (the transaction may be unusable).
    pub fn is_store(&self) -> bool {
        matches!(self, AppError::Store(_))
    }

    /// True for the server's own concurrency: the policy changed under a
    /// change, or another transaction got there first. The server retries
    /// these itself; a client never has to.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AppError::Store(StoreError::PolicyChanged(_) | StoreError::Conflict(_))
        )
    }
}
