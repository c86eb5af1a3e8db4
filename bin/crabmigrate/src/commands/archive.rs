//! `crabmigrate export`, `crabmigrate import` and `restore --import`:
//! checkpoint archives.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context};
use crabmigrate_images::archive::{
    self, Compression, ConfigDump, ContainerExport, ExportOptions, Progress,
};

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
            let (dir, c) = container_source(global, id, args)?;
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
        crate::output::warning(w);
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
        crate::output::summary(&line);
    }
    Ok(ExitCode::SUCCESS)
}

/// The images directory of container `id`'s last checkpoint and what else
/// its archive holds.
fn container_source(
    global: &Global,
    id: &str,
    args: &ExportArgs,
) -> anyhow::Result<(PathBuf, ContainerExport)> {
    let root = super::state_root(global);
    let mut state = root.load(id)?;
    state.refresh();
    let images = state.checkpoint.clone().with_context(|| {
        format!("container {id} has no checkpoint; run `crabmigrate checkpoint {id} --images-dir DIR` first")
    })?;
    let status = state.status.to_string();
    if status != "checkpointed" {
        crate::output::warning(&format!(
            "container {id} is {status}; the archive holds its last checkpoint but the rootfs as it is now"
        ));
    }
    if args.image.is_none() {
        crate::output::warning(
            "no --image: podman container restore --import cannot take this archive (Podman \
             rebuilds the rootfs from the image named in config.dump); crabmigrate can",
        );
    }
    let spec = state.bundle.join("config.json");
    let command = std::fs::read(&spec)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value(v.pointer("/process/args")?.clone()).ok())
        .unwrap_or_default();
    let config_dump = archive::config_dump(&ConfigDump {
        id: id.to_owned(),
        created: state.created,
        checkpointed: archive::now_secs(),
        runtime: args.runtime_name.clone(),
        image: args.image.clone().map(|n| (n, args.image_id.clone())),
        command,
        crabmigrate: serde_json::json!({
            "ociVersion": state.oci_version,
            "bundle": state.bundle,
            "rootfs": state.rootfs,
            "annotations": state.annotations,
        }),
    });
    let source = ContainerExport {
        id: id.to_owned(),
        config_dump,
        spec,
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
                "verified": imported.verified(),
                "rootfs": applied,
            }))?
        );
    } else {
        for note in &imported.notes {
            crate::output::warning(note);
        }
        crate::output::summary(&format!(
            "imported {} into {}: {} files, {}, {}",
            args.file.display(),
            imported.images_dir.display(),
            imported.files,
            bytes(imported.bytes),
            checked(&imported)
        ));
        if let Some(a) = applied {
            crate::output::summary(&format!(
                "rootfs: {} entries written, {} deleted",
                a.written, a.deleted
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What was checked of an imported archive, in words.
fn checked(imported: &archive::Imported) -> String {
    match &imported.podman {
        None => "every digest verified".into(),
        Some(p) => format!(
            "a Podman archive (container {}, runtime {}{}): it carries no digests, so its \
             contents are not verified; its layout, paths, sizes, config.dump, spec.dump and \
             CRIU images were checked",
            if p.name.is_empty() { "?" } else { &p.name },
            if p.runtime.is_empty() {
                "?"
            } else {
                &p.runtime
            },
            p.image
                .as_deref()
                .map(|i| format!(", image {i}"))
                .unwrap_or_default()
        ),
    }
}

/// `restore --import FILE`: extracts the archive (into --images-dir, or
/// `BUNDLE/checkpoint` for a container), writes the bundle's config.json
/// from a Podman archive's spec when the bundle has none, applies the
/// rootfs changes to the bundle's rootfs, and returns the arguments to
/// restore with.
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
    for note in &imported.notes {
        crate::output::warning(note);
    }
    if let Some(bundle) = &args.bundle {
        let adopt = imported.podman.is_some() && !bundle.join("config.json").exists();
        if let (true, Some(spec)) = (adopt, &imported.spec) {
            let adopted =
                crabmigrate_runtime::spec::adopt_engine_spec(spec, bundle).with_context(|| {
                    format!(
                        "cannot write {} from the archive's spec",
                        bundle.join("config.json").display()
                    )
                })?;
            for note in &adopted.notes {
                crate::output::note(note);
            }
            if let (Some(shm), Some(devshm)) = (&adopted.shm, &imported.devshm) {
                archive::apply_rootfs_diff(Some(devshm), None, shm).with_context(|| {
                    format!(
                        "cannot put the archive's /dev/shm contents into {}",
                        shm.display()
                    )
                })?;
            }
        }
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
        crate::output::note(&format!(
            "imported {} into {} ({} files, {})",
            file.display(),
            images_dir.display(),
            imported.files,
            checked(&imported)
        ));
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
