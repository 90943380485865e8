//! One module per command group.

pub mod access;
pub mod audit;
pub mod authz;
pub mod backup;
pub mod campaign;
pub mod dev;
pub mod directory;
pub mod events;
pub mod hr;
pub mod identity;
pub mod policy;
pub mod provisioning;
pub mod serve;
