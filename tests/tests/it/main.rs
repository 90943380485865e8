//! idgov's integration tests: one binary (link time), modules by subject.
//! Tests named `…::sqlite` and `…::postgres` run the same body on both
//! backends; PostgreSQL is a private cluster started by the test kit.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod access;
mod api;
mod backup;
mod bulk;
mod campaigns;
mod checkpoints;
mod common;
mod directory;
mod drift;
mod input_limits;
mod lifecycle;
mod oidc;
mod ordering;
mod provisioning;
mod provisioning_faults;
mod replicas;
mod sessions;
mod shutdown;
mod store_suite;
mod web;
mod webhooks;
