//! `crabmigrate export`, `crabmigrate import` and `restore --import`:
//! checkpoint archives.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context};
use crabmigrate_images::archive::{self, Compression, ContainerExport, ExportOptions, Progress};

use super::inspect::bytes;
use crate::cli::{CompressArg, ExportArgs, Global, ImportArgs, RestoreArgs};

/// Archives smaller than this get no progress bar.
const PROGRESS_FROM: u64 = 64 << 20;

pub fn export(global: &Global, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    super::validate::output_file(&args.output, "--output")?;
    let compression = match args.compress {
        CompressArg::Zstd => Compression::Zstd,
        CompressArg::Gzip => Compression::Gzip,
        CompressArg::None => Compression::None,
    };
    let criu_version = super::criu(global)
        .ok()
        .and_then(|c| c.version().ok())
        .map(|v| v.to_string());
    let (images_dir, container) = match (&args.id, &args.images_dir) {
        (Some(id), _) => {
            let (dir, c) = container_source(global, id)?;
            (dir, Some(c))
        }
        (None, Some(dir)) => (dir.clone(), None),
        (None, None) => bail!("give a container ID or --images-dir"),
    };
    let opts = ExportOptions {
        images_dir: &images_dir,
        compression,
        container,
        criu_version,
        created_by: format!("crabmigrate {}", env!("CARGO_PKG_VERSION")),
    };
    let what = match &args.id {
        Some(id) => format!("container {id}"),
        None => images_dir.display().to_string(),
    };
    let exported = archive::export(&opts, &args.output, &mut Bar::new("export"))
        .with_context(|| format!("cannot export {what}"))?;
    for w in &exported.warnings {
        super::warn(w);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&exported)?);
    } else {
        let mut line = format!(
            "exported {what} to {}: {} members, {} ({} {})",
            exported.output.display(),
            exported.members,
            bytes(exported.bytes),
            bytes(exported.archive_bytes),
            match exported.compression {
                Compression::Zstd => "with zstd",
                Compression::Gzip => "with gzip",
                Compression::None => "uncompressed",
            }
        );
        if let Some(n) = exported.rootfs_diff_files {
            line.push_str(&format!(", {n} changed rootfs entries"));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The images directory of container `id`'s last checkpoint and what else
/// its archive holds.
fn container_source(global: &Global, id: &str) -> anyhow::Result<(PathBuf, ContainerExport)> {
    let root = super::state_root(global);
    let mut state = root.load(id)?;
    state.refresh();
    let images = state.checkpoint.clone().with_context(|| {
        format!("container {id} has no checkpoint; run `crabmigrate checkpoint {id} --images-dir DIR` first")
    })?;
    let status = state.status.to_string();
    if status != "checkpointed" {
        eprintln!(
            "crabmigrate: warning: container {id} is {status}; the archive holds its last checkpoint but the rootfs as it is now"
        );
    }
    let config_dump = serde_json::json!({
        "id": id,
        "name": id,
        "runtime": "crabmigrate",
        "createdTime": archive::rfc3339(state.created),
        "checkpointedTime": archive::rfc3339(archive::now_secs()),
        "ociVersion": state.oci_version,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "annotations": state.annotations,
    });
    let source = ContainerExport {
        id: id.to_owned(),
        config_dump,
        spec: state.bundle.join("config.json"),
        rootfs: state.rootfs.clone(),
        changed_since: UNIX_EPOCH + Duration::from_secs(state.created),
    };
    Ok((images, source))
}

pub fn import(_global: &Global, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let imported = archive::import(&args.file, &args.images_dir, &mut Bar::new("import"))
        .with_context(|| format!("cannot import {}", args.file.display()))?;
    let applied = match &args.rootfs {
        Some(rootfs) => Some(
            archive::apply_rootfs_diff(
                imported.rootfs_diff.as_deref(),
                imported.deleted_files.as_deref(),
                rootfs,
            )
            .with_context(|| {
                format!(
                    "cannot apply the archive's rootfs changes to {}",
                    rootfs.display()
                )
            })?,
        ),
        None => None,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "imported": imported,
                "rootfs": applied,
            }))?
        );
    } else {
        println!(
            "imported {} into {}: {} files, {}, every digest verified",
            args.file.display(),
            imported.images_dir.display(),
            imported.files,
            bytes(imported.bytes)
        );
        if let Some(a) = applied {
            println!(
                "rootfs: {} entries written, {} deleted",
                a.written, a.deleted
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `restore --import FILE`: extracts the archive (into --images-dir, or
/// `BUNDLE/checkpoint` for a container), applies its rootfs changes to the
/// bundle's rootfs, and returns the arguments to restore with.
pub fn restore_import(args: &RestoreArgs, file: &Path) -> anyhow::Result<RestoreArgs> {
    let images_dir = if !args.images_dir.as_os_str().is_empty() {
        args.images_dir.clone()
    } else if let Some(bundle) = &args.bundle {
        bundle.join("checkpoint")
    } else {
        bail!("restoring a process tree with --import needs --images-dir for the extracted images");
    };
    let imported = archive::import(file, &images_dir, &mut Bar::new("import"))
        .with_context(|| format!("cannot import {}", file.display()))?;
    if let Some(bundle) = &args.bundle {
        let rootfs = crabmigrate_runtime::spec::load(bundle)
            .with_context(|| format!("cannot use the bundle {}", bundle.display()))?
            .rootfs;
        archive::apply_rootfs_diff(
            imported.rootfs_diff.as_deref(),
            imported.deleted_files.as_deref(),
            &rootfs,
        )
        .with_context(|| {
            format!(
                "cannot apply the archive's rootfs changes to {}",
                rootfs.display()
            )
        })?;
    }
    if !args.json {
        eprintln!(
            "imported {} into {} ({} files, every digest verified)",
            file.display(),
            images_dir.display(),
            imported.files
        );
    }
    Ok(RestoreArgs {
        images_dir,
        import: None,
        ..args.clone()
    })
}

/// A progress bar on a terminal for large archives; nothing otherwise.
struct Bar {
    what: &'static str,
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    fn new(what: &'static str) -> Self {
        Self { what, bar: None }
    }
}

impl Progress for Bar {
    fn begin(&mut self, total: u64) {
        if total < PROGRESS_FROM || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(self.what);
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
