//! The idgov service: application services over the store and the domain
//! rules ([`app`]), authentication ([`auth`]), the gRPC API ([`grpc`]) and
//! the process that serves it all ([`serve`]).

pub mod app;
pub mod auth;
pub mod clock;
pub mod error;
pub mod grpc;
pub mod serve;

pub use app::App;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AppError;
pub use serve::{Running, ServeConfig};
