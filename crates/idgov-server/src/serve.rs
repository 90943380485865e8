//! Serving.
pub struct ServeConfig;
pub struct Running;
