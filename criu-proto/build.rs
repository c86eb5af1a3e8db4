//! Compiles the schema in `proto/` with protox (a protobuf compiler written in
//! Rust) and hands the descriptors to prost-build, so building needs neither
//! `protoc` nor a download.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/rpc.proto",
    "proto/stats.proto",
    "proto/pstree.proto",
    "proto/inventory.proto",
    "proto/core.proto",
    "proto/fs.proto",
    "proto/fdinfo.proto",
    "proto/mm.proto",
    "proto/pagemap.proto",
    "proto/mnt.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    prost_build::Config::new()
        .out_dir(&out_dir)
        .compile_fds(descriptors)?;
    Ok(())
}
