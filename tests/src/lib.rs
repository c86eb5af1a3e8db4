//! Shared helpers for the integration tests: finding the built programs,
//! gating tests that need root and a real CRIU, and stand-in CRIUs.
//!
//! Gating rule: under `CI=true` a missing CRIU or missing root is a test
//! failure, never a skip. Elsewhere such a test prints why it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use criu_rpc::{Criu, CriuBinary};

/// Whether we run in CI, where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The directory holding the built programs (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // The test executable lives in target/<profile>/deps.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn built(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// The `crabmigrate` program under test.
pub fn crabmigrate() -> Command {
    Command::new(built("crabmigrate"))
}

/// Runs `crabmigrate ARGS` and returns its output.
pub fn run(args: &[&str]) -> Output {
    crabmigrate().args(args).output().expect("crabmigrate runs")
}

/// A real CRIU and root, or `None` after printing why (outside CI only).
pub fn real_criu(test: &str) -> Option<Criu> {
    let problem = if !nix_is_root() {
        Some("not running as root".to_owned())
    } else {
        match CriuBinary::locate(None) {
            Ok(binary) => return Some(Criu::new(binary)),
            Err(e) => Some(format!("{e}")),
        }
    };
    let problem = problem.unwrap_or_default();
    assert!(
        !in_ci(),
        "{test}: needs root and CRIU under CI=true, but {problem}"
    );
    println!("SKIPPED {test}: {problem}");
    None
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A wrapper script that starts the stand-in CRIU with `scenario`; pass it
/// to `--criu`. Lives in `dir`, which the caller cleans up.
pub fn standin_criu(dir: &Path, scenario: &str) -> PathBuf {
    let script = dir.join(format!("criu-{scenario}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' '{scenario}' \"$@\"\n",
            built("criu-standin").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}
