//! The one place that maps errors to gRPC status codes. Bad input carries
//! `google.rpc.BadRequest` field violations; every error carries an
//! `ErrorInfo` with its stable code as the reason.

use crate::error::AppError;
use idgov_domain::ErrorCode;
use idgov_store::StoreError;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of idgov errors.
pub const ERROR_DOMAIN: &str = "idgov.dev";

/// The `ErrorInfo.reason` of a bulk change (a policy recompute, a roster
/// sync, a held release, a campaign's generation or close) that the
/// service stopped between two steps as it began to stop: UNAVAILABLE, but
/// its progress is recorded and it goes on by itself when the service is
/// back; sending it again is not needed.
pub const GOES_ON_LATER: &str = "IDGOV_GOES_ON_LATER";

/// The longest message, field path and violation description a status
/// carries, and the most violations: whatever a rule wrote, a response stays
/// well within gRPC clients' default 16 KiB metadata limit.
const MAX_MESSAGE: usize = 1024;
const MAX_FIELD: usize = 128;
const MAX_DESCRIPTION: usize = 300;
const MAX_VIOLATIONS: usize = 10;

fn cap(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(max).collect();
        c.push('…');
        c
    }
}

/// The `ErrorInfo.metadata` key of a PERMISSION_DENIED answer that says
/// what refused the call: [`DENIED_BY_ROLE`], the authorization table (no
/// role of the caller's may call the method: another token is the fix), or
/// [`DENIED_BY_RULE`], a rule about this object or this caller (their own
/// request, someone outside their reach, a second step of one request: the
/// message names it, and no other role changes it).
pub const DENIED_BY: &str = "denied_by";
pub const DENIED_BY_ROLE: &str = "role";
pub const DENIED_BY_RULE: &str = "rule";

fn status(code: Code, reason: &str, message: String, violations: &[(String, String)]) -> Status {
    let metadata = if code == Code::PermissionDenied {
        HashMap::from([(DENIED_BY.to_string(), DENIED_BY_RULE.to_string())])
    } else {
        HashMap::new()
    };
    status_with(code, reason, message, violations, metadata)
}

fn status_with(
    code: Code,
    reason: &str,
    message: String,
    violations: &[(String, String)],
    metadata: HashMap<String, String>,
) -> Status {
    let mut d = ErrorDetails::new();
    d.set_error_info(reason, ERROR_DOMAIN, metadata);
    for (field, description) in violations.iter().take(MAX_VIOLATIONS) {
        d.add_bad_request_violation(cap(field, MAX_FIELD), cap(description, MAX_DESCRIPTION));
    }
    Status::with_error_details(code, cap(&message, MAX_MESSAGE), d)
}

/// Maps an application error to a gRPC status.
pub fn to_status(e: AppError) -> Status {
    match e {
        AppError::Domain(d) => {
            let code = match d.code {
                ErrorCode::InvalidArgument | ErrorCode::InvalidPolicy => Code::InvalidArgument,
                ErrorCode::NotFound => Code::NotFound,
                ErrorCode::FailedPrecondition => Code::FailedPrecondition,
                ErrorCode::IdempotencyConflict => Code::AlreadyExists,
                ErrorCode::PermissionDenied => Code::PermissionDenied,
            };
            let violations: Vec<(String, String)> = d
                .violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect();
            status(code, d.code.as_str(), d.to_string(), &violations)
        }
        AppError::Store(s) => {
            let reason = s.code();
            match s {
                StoreError::Unavailable(_) => {
                    tracing::warn!(error = %s, "database unavailable");
                    status(
                        Code::Unavailable,
                        reason,
                        "the database is unavailable; retry shortly".into(),
                        &[],
                    )
                }
                StoreError::PolicyChanged(v) => status(
                    Code::Aborted,
                    reason,
                    format!("the policy changed to version {v} during this change; retry"),
                    &[],
                ),
                StoreError::Conflict(m) => status(
                    Code::Aborted,
                    reason,
                    format!("a concurrent change got there first ({m}); retry"),
                    &[],
                ),
                StoreError::NotFound(m) => status(Code::NotFound, reason, m, &[]),
                other => {
                    tracing::error!(error = %other, code = reason, "internal error");
                    status(
                        Code::Internal,
                        reason,
                        format!("internal error {reason}; the server log has the details"),
                        &[],
                    )
                }
            }
        }
        AppError::Unauthenticated(m) => {
            status(Code::Unauthenticated, "IDGOV_UNAUTHENTICATED", m, &[])
        }
        AppError::PermissionDenied(m) => {
            status(Code::PermissionDenied, "IDGOV_PERMISSION_DENIED", m, &[])
        }
        AppError::Unavailable(m) => status(Code::Unavailable, "IDGOV_UNAVAILABLE", m, &[]),
        AppError::GoesOnLater(m) => status(Code::Unavailable, GOES_ON_LATER, m, &[]),
    }
}

/// Maps a refusal of the authentication layer, before any handler runs:
/// as [`to_status`], with a PERMISSION_DENIED marked as the authorization
/// table's ([`DENIED_BY_ROLE`]): none of the caller's roles may call the
/// method.
pub fn refused_at_the_door(e: AppError) -> Status {
    match e {
        AppError::PermissionDenied(m) => status_with(
            Code::PermissionDenied,
            "IDGOV_PERMISSION_DENIED",
            m,
            &[],
            HashMap::from([(DENIED_BY.to_string(), DENIED_BY_ROLE.to_string())]),
        ),
        other => to_status(other),
    }
}

/// `?` for application results in handlers: maps the error through
/// [`to_status`] (the application layer is another crate, so `From` cannot
/// be implemented here).
pub trait OrStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for Result<T, AppError> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(to_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idgov_domain::{DomainError, FieldViolation};

    #[test]
    fn bad_input_carries_field_violations() {
        let e = AppError::Domain(DomainError::invalid(
            "bad",
            vec![FieldViolation::new("event.employee_id", "is required")],
        ));
        let s = to_status(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        let d = s.get_error_details();
        let br = d
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert_eq!(br.len(), 1);
        assert_eq!(br[0].field, "event.employee_id");
        assert_eq!(
            d.error_info().map(|i| i.reason.as_str()),
            Some("IDGOV_INVALID_ARGUMENT")
        );
    }

    /// A refusal says whether the table refused the caller's roles or a
    /// rule refused this call: a client tells "get another role" from
    /// "nobody may do this" only by it.
    #[test]
    fn a_refusal_says_whether_a_role_or_a_rule_refused() {
        let denied_by = |s: &Status| {
            s.get_error_details()
                .error_info()
                .and_then(|i| i.metadata.get(DENIED_BY).cloned())
        };
        let door = refused_at_the_door(AppError::PermissionDenied(
            "ApplyPolicy requires one of the roles: it-admin".into(),
        ));
        assert_eq!(door.code(), Code::PermissionDenied);
        assert_eq!(denied_by(&door).as_deref(), Some(DENIED_BY_ROLE));
        let rule = to_status(AppError::Domain(DomainError::new(
            ErrorCode::PermissionDenied,
            "nobody approves a request they made or one for themselves",
        )));
        assert_eq!(rule.code(), Code::PermissionDenied);
        assert_eq!(denied_by(&rule).as_deref(), Some(DENIED_BY_RULE));
        let reach = to_status(AppError::PermissionDenied("out of reach".into()));
        assert_eq!(denied_by(&reach).as_deref(), Some(DENIED_BY_RULE));
        let unauthenticated = refused_at_the_door(AppError::Unauthenticated("expired".into()));
        assert_eq!(unauthenticated.code(), Code::Unauthenticated);
        assert_eq!(denied_by(&unauthenticated), None);
    }

    #[test]
    fn internal_errors_hide_details() {
        let s = to_status(AppError::Store(StoreError::Corrupt(
            "row 7 secret detail".into(),
        )));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
    }
}
