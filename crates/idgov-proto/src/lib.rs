//! The `idgov.v1` API, generated from `proto/idgov/v1`.

pub mod codec;

/// Messages and services of package `idgov.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("idgov.v1");
}

/// The encoded `FileDescriptorSet` of the API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/idgov_descriptor.bin"));
