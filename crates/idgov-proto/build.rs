//! Compiles `proto/idgov/v1/*.proto` with protox (no protoc needed) and keeps the
//! descriptor set for gRPC reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "types",
        "hr",
        "identity",
        "policy",
        "audit",
        "provisioning",
        "access",
        "campaign",
    ]
    .map(|f| root.join(format!("idgov/v1/{f}.proto")));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("idgov_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::IdgovCodec")
        .compile_fds(fds)?;
    Ok(())
}
