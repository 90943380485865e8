//! Domain errors with stable codes and field-level violations.

use std::fmt;

/// A stable, searchable error code. The string form never changes once
/// released; clients and runbooks may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Input failed validation; see the field violations.
    InvalidArgument,
    /// The policy document is invalid; see the violations.
    InvalidPolicy,
    /// The named object does not exist.
    NotFound,
    /// The request conflicts with the current state.
    FailedPrecondition,
    /// The same idempotency key was used for a different payload.
    IdempotencyConflict,
    /// A rule forbids this caller this action on this object.
    PermissionDenied,
}

impl ErrorCode {
    /// The stable string form, e.g. `IDGOV_INVALID_ARGUMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "IDGOV_INVALID_ARGUMENT",
            ErrorCode::InvalidPolicy => "IDGOV_INVALID_POLICY",
            ErrorCode::NotFound => "IDGOV_NOT_FOUND",
            ErrorCode::FailedPrecondition => "IDGOV_FAILED_PRECONDITION",
            ErrorCode::IdempotencyConflict => "IDGOV_IDEMPOTENCY_CONFLICT",
            ErrorCode::PermissionDenied => "IDGOV_PERMISSION_DENIED",
        }
    }
}

/// One offending field (or policy entry) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `event.employee_id` or `roles[2].entitlements`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// An error raised by a domain rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
    pub violations: Vec<FieldViolation>,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            violations: Vec::new(),
        }
    }

    /// An invalid-argument error carrying field violations.
    pub fn invalid(message: impl Into<String>, violations: Vec<FieldViolation>) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            message: message.into(),
            violations,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for v in &self.violations {
            write!(f, "; {}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for DomainError {}

/// At most this many characters of a user's value are echoed in errors and
/// logs.
pub const ECHO_MAX: usize = 64;

/// A value as echoed back in an error message or a log line: quoted,
/// control characters escaped, and cut to [`ECHO_MAX`] characters with the
/// full length named, so nothing attacker-sized is ever copied out.
pub fn echo(value: &str) -> String {
    let n = value.chars().count();
    if n <= ECHO_MAX {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(ECHO_MAX).collect();
        format!("{cut:?}… ({n} characters)")
    }
}

#[cfg(test)]
mod echo_tests {
    use super::*;

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(1 << 20);
        let e = echo(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.ends_with("(1048576 characters)"));
        assert_eq!(echo("E1"), "\"E1\"");
        assert_eq!(echo("a\u{0}b"), "\"a\\0b\"");
    }
}
