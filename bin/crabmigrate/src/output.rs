//! Where what a command has to say goes, so that crabmigrate is as quiet as
//! runc when an engine drives it.
//!
//! runc prints nothing on stdout for a successful checkpoint or restore.
//! Engines pass runc's stdout on: `podman container checkpoint` shows it in
//! the user's terminal, and conmon runs `restore` with the container's own
//! stdio, so a summary line lands in the container's log. Engines call
//! crabmigrate in one of two recognisable ways:
//!
//! - with `--log FILE` (containerd's shim always; Podman for create, exec
//!   and restore when the runtime is listed in `runtime_supports_json`);
//! - with runc's spelling of the images directory, `--image-path` (Podman,
//!   conmon and containerd, on every checkpoint and restore; crabmigrate's
//!   own spelling is `--images-dir`).
//!
//! Either way the command is *quiet*: its summary goes to the log at info
//! level (the `--log` file, or stderr at `--log-level info`) instead of
//! stdout, and its warnings go to the log instead of stderr when there is a
//! `--log`. Output that was asked for (`--json`, `state`, `ps`, `spec`,
//! ...) is printed as always. Errors go to stderr and, with `--log`, to the
//! log (runc's way; see `main`).

use std::sync::OnceLock;

use crate::cli::Global;

/// How this run reports.
#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    /// Summaries go to the log, not stdout.
    quiet: bool,
    /// Logs go to a `--log` file.
    log_file: bool,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Decides the mode from the global flags and the command line as given.
pub fn init(global: &Global, log_file: bool) {
    let runc_spelling = runc_spelling(std::env::args_os().skip(1));
    let _ = MODE.set(Mode {
        quiet: global.log.is_some() || runc_spelling,
        log_file,
    });
}

/// Whether the arguments (before any `--`) name the images directory the
/// way runc does.
fn runc_spelling<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> bool {
    args.into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .any(|a| a == "--image-path" || a.starts_with("--image-path="))
}

fn mode() -> Mode {
    MODE.get().copied().unwrap_or_default()
}

/// A command's summary of what it did: stdout, or the log when quiet.
pub fn summary(line: &str) {
    if mode().quiet {
        tracing::info!("{line}");
    } else {
        println!("{line}");
    }
}

/// Progress the user may want to know of (on stderr), or the log when
/// quiet.
pub fn note(line: &str) {
    if mode().quiet {
        tracing::info!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// A warning: stderr, or the `--log` file when there is one.
pub fn warning(message: &str) {
    // Escaped like errors: bytes from users and files never reach the
    // terminal raw.
    let message = crate::commands::escape(message);
    if mode().log_file {
        tracing::warn!("{message}");
    } else {
        eprintln!("crabmigrate: warning: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
        list.iter().map(Into::into).collect()
    }

    #[test]
    fn runcs_spelling_is_recognised() {
        assert!(runc_spelling(args(&[
            "checkpoint",
            "--image-path",
            "/x",
            "id"
        ])));
        assert!(runc_spelling(args(&["restore", "--image-path=/x", "id"])));
        assert!(!runc_spelling(args(&[
            "checkpoint",
            "--images-dir",
            "/x",
            "id"
        ])));
        assert!(!runc_spelling(args(&["exec", "id", "--", "--image-path"])));
    }
}
