//! Generates the gRPC messages and service from `proto/converge/v1/sync.proto` with protox (a
//! pure-Rust protobuf compiler): no `protoc` needed. Also writes the encoded descriptor set that
//! server reflection serves.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("converge/v1/sync.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("converge_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // The client is generic over the channel, so the generated code builds without tonic's
        // transport; `GrpcClient` brings the channel.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
