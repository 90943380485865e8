//! idgov-server
