//! The idgov service process: authentication ([`auth`]), the gRPC API
//! ([`grpc`], a thin adapter over the application layer `idgov-app`), and
//! the process that serves it all ([`serve`]).

pub mod auth;
pub mod grpc;
pub mod serve;

/// The application layer (its own crate, `idgov-app`).
pub use idgov_app as app;
pub use idgov_app::{App, AppError, Clock, ManualClock, SystemClock, clock, error};
pub use serve::{Running, ServeConfig};
