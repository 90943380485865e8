//! gRPC API.
