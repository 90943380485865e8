//! idgov-store
