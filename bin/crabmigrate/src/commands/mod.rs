//! One module per command; each turns parsed arguments into library calls.

mod archive;
mod check;
mod checkpoint;
mod common;
pub mod container;
mod features;
mod inspect;
mod migrate;
mod network;
mod oci;
mod page_server;
mod restore;
mod validate;

use std::process::ExitCode;

use anyhow::Context;
use criu_rpc::{Criu, CriuBinary};

use crate::cli::{Cli, Command, Global};

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.global.systemd_cgroup {
        let why = if std::path::Path::new("/run/systemd/system").is_dir() {
            "crabmigrate manages cgroupfs cgroups only and has no systemd cgroup driver"
        } else {
            "this host runs no systemd, and crabmigrate manages cgroupfs cgroups only"
        };
        anyhow::bail!(
            "--systemd-cgroup is not supported: {why}; configure the engine for cgroupfs \
             (podman --cgroup-manager cgroupfs, containerd SystemdCgroup = false)"
        );
    }
    match cli.command {
        Command::Check(args) => check::run(&cli.global, &args),
        Command::Checkpoint(args) => checkpoint::run(&cli.global, &args),
        Command::PreDump(args) => checkpoint::run_pre_dump(&cli.global, &args),
        Command::Restore(args) => restore::run(&cli.global, &args),
        Command::PageServer(args) => page_server::run(&cli.global, &args),
        Command::LazyPages(args) => page_server::run_lazy(&cli.global, &args),
        Command::Inspect(args) => inspect::run(&cli.global, &args),
        Command::Export(args) => archive::export(&cli.global, &args),
        Command::Import(args) => archive::import(&cli.global, &args),
        Command::Create(args) => container::create(&cli.global, &args),
        Command::Start(args) => container::start(&cli.global, &args),
        Command::Run(args) => container::run(&cli.global, &args),
        Command::State(args) => container::state(&cli.global, &args),
        Command::List(args) => container::list(&cli.global, &args),
        Command::Ps(args) => container::ps(&cli.global, &args),
        Command::Kill(args) => container::kill(&cli.global, &args),
        Command::Delete(args) => container::delete(&cli.global, &args),
        Command::Exec(args) => oci::exec(&cli.global, &args),
        Command::Update(args) => oci::update(&cli.global, &args),
        Command::Events(args) => oci::events(&cli.global, &args),
        Command::Features => oci::features(),
        Command::Spec(args) => oci::spec(&args),
        Command::Pause(args) => container::pause(&cli.global, &args),
        Command::Resume(args) => container::resume(&cli.global, &args),
        Command::Network(command) => network::run(&cli.global, &command),
        Command::Agent(args) => migrate::agent(&cli.global, &args),
        Command::Migrate(args) => migrate::migrate(&cli.global, &args),
        Command::Recover(args) => migrate::recover(&args),
        Command::HoldSockets => match crabmigrate_runtime::sockets::hold_sockets() {
            Err(e) => Err(anyhow::Error::new(e).context("the socket probe's holder failed")),
            Ok(never) => match never {},
        },
        Command::Keygen(args) => {
            validate::output_file(&args.out, "--out")?;
            crabmigrate_migrate::key::Key::generate_file(&args.out)?;
            println!(
                "wrote a new migration key to {}; copy it to the other host (keep it mode 0600)",
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `text` fit for one line on a terminal: control characters (escape
/// sequences, newlines, C1 controls) and invisible bidirectional overrides
/// are written as `\u{..}` escapes, so bytes a user or a file supplied
/// cannot move the cursor, recolour the terminal or split the line.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The CRIU client for `--criu`, the environment, the prefix or PATH.
pub fn criu(global: &Global) -> anyhow::Result<Criu> {
    let binary = CriuBinary::locate(global.criu.as_deref()).context("cannot find CRIU")?;
    Ok(Criu::new(binary))
}

/// The host's CNI setup from `--cni-config-dir` and `--cni-plugin-dir`.
pub fn cni(global: &Global) -> crabmigrate_runtime::network::Cni {
    let mut cni = crabmigrate_runtime::network::Cni {
        config_dir: global.cni_config_dir.clone(),
        ..Default::default()
    };
    if !global.cni_plugin_dir.is_empty() {
        cni.plugin_dirs = global.cni_plugin_dir.clone();
    }
    cni
}

/// The container state root from `--root`.
pub fn state_root(global: &Global) -> crabmigrate_runtime::state::StateRoot {
    crabmigrate_runtime::state::StateRoot::new(&global.root)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_keeps_text_and_neutralises_controls() {
        assert_eq!(
            super::escape("cannot open /tmp/a b: é"),
            "cannot open /tmp/a b: é"
        );
        assert_eq!(
            super::escape("x\u{1b}[31mred\nline\u{202e}"),
            "x\\u{1b}[31mred\\u{a}line\\u{202e}"
        );
    }
}
