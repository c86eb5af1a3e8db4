//! Benchmark 2: a container's checkpoint and restore, crabmigrate against
//! runc on the same busybox bundle (a `sh -c` counter loop).
//!
//! Each side, in each pair: `run -d` (not timed), wait for the counter,
//! `checkpoint` (timed), `restore -d` (timed), check that the counter goes
//! on, `delete --force`. Separate state roots, unique IDs; runc finds the
//! provisioned CRIU through a directory holding a `criu` link that is put
//! first on its PATH.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::proc::{self, Finished};
use crate::report::{Benchmark, Case, Comparison};
use crate::stats::a_first;
use crate::workload::ms;
use crate::Ctx;

pub const NAME: &str = "container-cr";
pub const TITLE: &str =
    "container checkpoint + restore: crabmigrate vs runc 1.1.5 (same CRIU, same busybox bundle)";
const GOAL: &str = "ratio ≤ 1.0 (no slower than runc)";
const LIMIT: Duration = Duration::from_secs(120);

/// The counter loop of the container tests; the write goes through a
/// rename so that a reader never sees half a line.
const COUNTER: &str = "read t < /proc/sys/kernel/random/uuid; i=0; \
    while true; do i=$((i+1)); echo \"$t $i\" > /tmp/counter.new; \
    mv /tmp/counter.new /tmp/counter; sleep 0.1; done";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Benchmark {
    let Some(runc) = ctx.runc.clone() else {
        return Benchmark::unavailable(
            NAME,
            TITLE,
            Some(GOAL),
            "runc is not installed (scripts/setup.sh installs it)".into(),
        );
    };
    match measure(ctx, &runc) {
        Ok(cases) => Benchmark::new(NAME, TITLE, Some(GOAL), cases),
        Err(e) => Benchmark::failed(NAME, TITLE, Some(GOAL), format!("{e:#}")),
    }
}

/// One side: a runtime with its own state root.
struct Side<'a> {
    ours: bool,
    ctx: &'a Ctx,
    runc: &'a Path,
    root: PathBuf,
    /// Holds `criu` for runc.
    path_dir: PathBuf,
}

impl Side<'_> {
    fn name(&self) -> &'static str {
        if self.ours {
            "crabmigrate"
        } else {
            "runc"
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = if self.ours {
            self.ctx.crabmigrate()
        } else {
            let mut cmd = Command::new(self.runc);
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![self.path_dir.clone()];
            dirs.extend(std::env::split_paths(&path));
            if let Ok(joined) = std::env::join_paths(dirs) {
                cmd.env("PATH", joined);
            }
            cmd
        };
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    fn run(&self, args: &[&str], dir: &Path) -> anyhow::Result<Finished> {
        let what = format!("{} {}", self.name(), args.first().unwrap_or(&""));
        Ok(proc::run(&mut self.command(args), dir, LIMIT)?.ok(&what)?)
    }

    fn delete(&self, id: &str, dir: &Path) {
        let _ = proc::run(&mut self.command(&["delete", "--force", id]), dir, LIMIT);
        proc::reap_orphans();
    }
}

/// One checkpoint + restore of a fresh container; (checkpoint ms, restore
/// ms, record).
fn cycle(
    side: &Side<'_>,
    bundle: &Path,
    dir: &Path,
    i: usize,
) -> anyhow::Result<(f64, f64, serde_json::Value)> {
    let id = format!(
        "cmbench-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        side.name()
    );
    let result = cycle_with(side, bundle, dir, &id, i);
    side.delete(&id, dir);
    result
}

fn cycle_with(
    side: &Side<'_>,
    bundle: &Path,
    dir: &Path,
    id: &str,
    i: usize,
) -> anyhow::Result<(f64, f64, serde_json::Value)> {
    let bundle_s = bundle.to_string_lossy();
    let counter = bundle.join("rootfs/tmp/counter");
    let _ = std::fs::remove_file(&counter);
    let what = format!("{} run -d", side.name());
    proc::run_silent(
        &mut side.command(&["run", "-d", "--bundle", &bundle_s, id]),
        LIMIT,
    )?
    .ok(&what)?;
    let first = wait_count(&counter, None)?;
    let images = dir.join(format!("images-{i}-{}", side.name()));
    let _ = std::fs::remove_dir_all(&images);
    let images_s = images.to_string_lossy().into_owned();
    let checkpoint = if side.ours {
        side.run(&["checkpoint", id, "--images-dir", &images_s], dir)?
    } else {
        side.run(&["checkpoint", "--image-path", &images_s, id], dir)?
    };
    let at_dump = read_count(&counter).unwrap_or(first);
    let restore = if side.ours {
        side.run(
            &[
                "restore",
                id,
                "--bundle",
                &bundle_s,
                "--images-dir",
                &images_s,
                "-d",
            ],
            dir,
        )?
    } else {
        side.run(
            &[
                "restore",
                "-d",
                "--image-path",
                &images_s,
                "--bundle",
                &bundle_s,
                id,
            ],
            dir,
        )?
    };
    wait_count(&counter, Some(&at_dump)).context("the restored container does not count on")?;
    let dump_stats = criu_rpc::read_dump_stats(&images).ok().flatten();
    let restore_stats = criu_rpc::read_restore_stats(&images).ok().flatten();
    let _ = std::fs::remove_dir_all(&images);
    let (c, r) = (ms(checkpoint.wall), ms(restore.wall));
    Ok((
        c,
        r,
        json!({"side": side.name(), "pair": i, "checkpoint_ms": c, "restore_ms": r,
               "criu_dump": dump_stats, "criu_restore": restore_stats}),
    ))
}

/// `TOKEN N` from the counter file.
fn read_count(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (token, n) = text.trim().split_once(' ')?;
    Some((token.to_owned(), n.parse().ok()?))
}

/// Waits until the counter exists (and has gone past `after`, same token).
fn wait_count(path: &Path, after: Option<&(String, u64)>) -> anyhow::Result<(String, u64)> {
    proc::wait_until(Duration::from_secs(30), Duration::from_millis(5), || {
        read_count(path).filter(|c| match after {
            Some((token, n)) => &c.0 == token && c.1 > *n,
            None => c.1 >= 2,
        })
    })
    .with_context(|| format!("the counter in {} does not move", path.display()))
}

fn measure(ctx: &Ctx, runc: &Path) -> anyhow::Result<Vec<Case>> {
    let dir = ctx.dir("container")?;
    let bundle = busybox_bundle(&ctx.tmp_dir("bundle")?)?;
    let path_dir = ctx.tmp_dir("runc-path")?;
    std::os::unix::fs::symlink(&ctx.criu, path_dir.join("criu"))
        .context("cannot link criu for runc")?;
    let sides = [true, false].map(|ours| -> anyhow::Result<Side<'_>> {
        Ok(Side {
            ours,
            ctx,
            runc,
            root: ctx.tmp_dir(if ours { "root-ours" } else { "root-runc" })?,
            path_dir: path_dir.clone(),
        })
    });
    let [ours, theirs] = sides;
    let (ours, theirs) = (ours?, theirs?);

    // Does runc checkpoint work here at all? One try before counting.
    let mut runc_problem = None;
    if let Err(e) = cycle(&theirs, &bundle, &dir, usize::MAX) {
        runc_problem = Some(format!("runc checkpoint/restore does not work here: {e:#}"));
    }
    let mut values: [[Vec<f64>; 2]; 2] = Default::default();
    let mut runs = Vec::new();
    for i in 0..ctx.warmup + ctx.pairs {
        let counted = i >= ctx.warmup;
        let order = if a_first(i) { [0, 1] } else { [1, 0] };
        for s in order {
            let side = if s == 0 { &ours } else { &theirs };
            if s == 1 && runc_problem.is_some() {
                continue;
            }
            let (c, r, record) = cycle(side, &bundle, &dir, i)?;
            ctx.log(&format!(
                "{NAME} pair {i}{}: {} checkpoint {c:.1} ms, restore {r:.1} ms",
                if counted { "" } else { " (warm-up)" },
                side.name()
            ));
            if counted {
                values[0][s].push(c);
                values[1][s].push(r);
                runs.push(record);
            }
        }
    }
    let [[c_ours, c_runc], [r_ours, r_runc]] = values;
    let total =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x + y).collect() };
    let t_ours = total(&c_ours, &r_ours);
    let t_runc = total(&c_runc, &r_runc);
    let mut cases = Vec::new();
    for (label, a, b, verb) in [
        ("checkpoint", c_ours, c_runc, "checkpoint"),
        ("restore -d", r_ours, r_runc, "restore"),
        (
            "checkpoint + restore",
            t_ours,
            t_runc,
            "checkpoint + restore",
        ),
    ] {
        let mut case = Case::new(label);
        match &runc_problem {
            Some(problem) => {
                case.metric(&format!("crabmigrate {verb} ms"), &a);
                case = case.unavailable(problem.clone());
            }
            None => {
                case.comparison = Some(Comparison::new(
                    &format!("crabmigrate {verb}"),
                    &format!("runc {verb}"),
                    "ms",
                    a,
                    b,
                ));
            }
        }
        cases.push(case);
    }
    if let Some(last) = cases.last_mut() {
        last.runs = runs;
    }
    Ok(cases)
}

/// A busybox OCI bundle in `dir` as `testkit::BusyboxBundle` makes it
/// (`runc spec`-like namespaces, mounts and masked paths; a writable rootfs
/// of busybox-static) running the counter loop.
pub fn busybox_bundle(dir: &Path) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "tmp", "proc", "sys", "dev", "etc", "data"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox is not installed; install busybox-static (scripts/setup.sh does)")?;
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    for applet in ["sh", "sleep", "echo", "cat", "mv", "rm", "true", "read"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", COUNTER],
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "crabmigrate-bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    Ok(dir.to_path_buf())
}
