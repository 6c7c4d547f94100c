//! Generates the gRPC code from `proto/` with the vendored `protoc`, so a
//! fresh machine needs no system protobuf compiler.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // prost-build prints no rerun-if line for protos, and once a build script
    // prints any, cargo reruns it only for the paths named: without this
    // line an edited .proto would not rebuild.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    // A `PROTOC` from the environment wins (a distribution's own protoc).
    let protoc = match env::var_os("PROTOC") {
        Some(protoc) => PathBuf::from(protoc),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    config.protoc_executable(protoc);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure().file_descriptor_set_path(out.join("slotgate_descriptor.bin")).compile_with_config(
        config,
        &["proto/slotgate/v1/reservations.proto"],
        &["proto"],
    )?;
    Ok(())
}
