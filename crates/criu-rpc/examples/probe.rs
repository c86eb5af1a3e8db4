//! Asks a CRIU for its version and features: `cargo run -p criu-rpc --example probe [PATH]`.

use criu_rpc::{Criu, CriuBinary, Features};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let explicit = std::env::args_os().nth(1).map(std::path::PathBuf::from);
    let criu = Criu::new(CriuBinary::locate(explicit.as_deref())?);
    println!("criu: {}", criu.binary().path().display());
    println!("version: {}", criu.version()?);
    println!("features: {:?}", criu.feature_check(Features::ALL)?);
    Ok(())
}
