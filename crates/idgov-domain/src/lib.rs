//! idgov's rules, with no I/O: identities and their lifecycle, HR event
//! semantics, the classification policy and catalog, birthright, roster diffs,
//! the mass-change guard and the audit hash chain.
//!
//! Every function that depends on time takes `now` as an argument; nothing in
//! this crate reads a clock, a file or the network (see `clippy.toml`).

pub mod audit;
pub mod classification;
pub mod drift;
pub mod error;
pub mod grant;
pub mod guard;
pub mod hr;
pub mod identity;
pub mod lifecycle;
pub mod policy;
pub mod roster;
pub mod time;

pub use classification::Classification;
pub use error::{DomainError, ErrorCode, FieldViolation};
