//! Generates the gRPC code from `proto/` with the vendored `protoc`, so a
//! fresh machine needs no system protobuf compiler.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // prost-build prints no rerun-if line for protos; without this one an
    // edited .proto would not rebuild (see DEPS.md trap 7).
    println!("cargo:rerun-if-changed=proto");
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the
        // environment concurrently.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("slotgate_descriptor.bin"))
        .compile_protos(&["proto/slotgate/v1/reservations.proto"], &["proto"])?;
    Ok(())
}
