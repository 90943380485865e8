//! idgov-authz
