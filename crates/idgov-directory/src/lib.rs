//! idgov's side of the directory (LDAP): how names and filters are built
//! safely from data ([`escape`]), what differs between OpenLDAP, Active
//! Directory and 389-ds ([`preset`]), and the operations idgov performs
//! ([`client`]): group membership and account disable/enable, each
//! idempotent (already a member, or already absent, counts as done).

pub mod account;
pub mod client;
pub mod config;
pub mod escape;
pub mod preset;

pub use client::{AccountReader, Directory, DirectoryError, DnCache, GroupReader, Pool};
pub use config::{DirectoryConfig, DriftAction};
pub use preset::{DisableMethod, Preset};
