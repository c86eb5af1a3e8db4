//! `crabmigrate check`: the host report, human or JSON.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use crabmigrate_runtime::check::{self, CheckReport, Probe, Verdict};
use crabmigrate_runtime::host::LAZY_PAGES_PIPE_SIZE;

use crate::cli::{CheckArgs, Global};

pub fn run(global: &Global, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let criu = super::criu(global)?;
    let exe = std::env::current_exe().context("cannot find crabmigrate's own executable")?;
    let mut holder = std::process::Command::new(exe);
    holder.arg("__hold-sockets");
    let report = check::run(&criu, holder);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let verdict = &report.verdicts.checkpoint_restore;
    if verdict.available {
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::bail!(
        "checkpoint/restore does not work here: {}; fix: {}",
        verdict.reason.as_deref().unwrap_or("unknown reason"),
        verdict.fix.as_deref().unwrap_or("see the report above")
    )
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

fn render(r: &CheckReport) -> String {
    let mut out = String::new();
    let line = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "  {key:<20}{value}");
    };

    let _ = writeln!(out, "CRIU");
    line(
        &mut out,
        "path",
        &format!("{} (from {})", r.criu.path.display(), r.criu.found_by),
    );
    match (&r.criu.version, &r.criu.error) {
        (Some(v), _) => line(
            &mut out,
            "version",
            &format!(
                "{v} ({})",
                if r.criu.supported {
                    "supported"
                } else {
                    "too old: 4.0 or newer needed"
                }
            ),
        ),
        (None, Some(e)) => line(&mut out, "version", &format!("unknown: {e}")),
        (None, None) => line(&mut out, "version", "unknown"),
    }
    if let Some(f) = &r.features {
        line(
            &mut out,
            "features",
            &format!(
                "mem_track {}, lazy_pages {}, pidfd_store {}",
                yes_no(f.mem_track),
                yes_no(f.lazy_pages),
                yes_no(f.pidfd_store)
            ),
        );
    }

    let _ = writeln!(out, "\nKernel {}", r.kernel.release);
    for (name, probe) in [
        ("criu check", &r.kernel.criu_check),
        ("mem_dirty_track", &r.kernel.mem_dirty_track),
        ("uffd", &r.kernel.uffd),
        ("uffd-noncoop", &r.kernel.uffd_noncoop),
    ] {
        line(&mut out, name, &probe_text(probe.as_ref()));
    }

    let _ = writeln!(out, "\nHost");
    let pipe = match r.host.pipe_max_size {
        Some(size) => format!("{size} (lazy pages need {LAZY_PAGES_PIPE_SIZE})"),
        None => "unknown".into(),
    };
    line(&mut out, "fs.pipe-max-size", &pipe);
    let lock = match &r.host.iptables_restore {
        Some(path) => path.display().to_string(),
        None => "missing".into(),
    };
    line(&mut out, "iptables-restore", &lock);
    line(&mut out, "cgroups", &r.host.cgroup_layout.to_string());
    let p = &r.host.privilege;
    let who = match (p.root, p.cap_checkpoint_restore) {
        (true, _) => "root".to_owned(),
        (false, true) => "non-root with CAP_CHECKPOINT_RESTORE".to_owned(),
        (false, false) => "non-root without CAP_CHECKPOINT_RESTORE".to_owned(),
    };
    line(&mut out, "privilege", &who);

    let _ = writeln!(out, "\nSockets");
    let lock = &r.sockets.network_lock;
    line(
        &mut out,
        "network lock",
        &match lock.method {
            Some(m) => format!("{m} ({})", lock.why),
            None => format!("none ({})", lock.why),
        },
    );
    line(&mut out, "probe", &probe_text(r.sockets.probe.as_ref()));

    let _ = writeln!(out, "\nVerdict");
    for (name, verdict) in [
        ("checkpoint/restore", &r.verdicts.checkpoint_restore),
        ("TCP/UDP sockets", &r.verdicts.sockets),
        ("pre-dump", &r.verdicts.pre_copy),
        ("post-copy", &r.verdicts.post_copy),
        ("page server", &r.verdicts.page_server),
    ] {
        verdict_lines(&mut out, name, verdict);
    }
    out
}

fn probe_text(probe: Option<&Probe>) -> String {
    match probe {
        Some(p) => match &p.detail {
            Some(d) => format!("{:<4}{d}", yes_no(p.ok)),
            None => yes_no(p.ok).to_owned(),
        },
        None => "not run (CRIU could not be started, or no privilege)".to_owned(),
    }
}

fn verdict_lines(out: &mut String, name: &str, v: &Verdict) {
    match &v.limitation {
        Some(limit) => {
            let _ = writeln!(out, "  {name:<20}{}, but {limit}", yes_no(v.available));
        }
        None => {
            let _ = writeln!(out, "  {name:<20}{}", yes_no(v.available));
        }
    }
    if let Some(reason) = &v.reason {
        let _ = writeln!(out, "  {:<20}  why: {reason}", "");
    }
    if let Some(fix) = &v.fix {
        let _ = writeln!(out, "  {:<20}  fix: {fix}", "");
    }
}
