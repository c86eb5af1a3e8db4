//! `crabmigrate inspect DIR`: what a checkpoint holds, read from CRIU's
//! images without CRIU.

use std::process::ExitCode;

use anyhow::Context;
use crabmigrate_images::Checkpoint;

use super::common;
use crate::cli::{Global, InspectArgs};

pub fn run(_global: &Global, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let mut cp = Checkpoint::open(&args.dir)
        .with_context(|| format!("cannot inspect {}", args.dir.display()))?;
    // What restore would refuse is shown, not hidden behind a fine view.
    if let Err(e) = crabmigrate_images::validate::check_restorable(&args.dir) {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(": ");
            why.push_str(&s.to_string());
            source = s.source();
        }
        cp.warnings.push(format!("restore would refuse it: {why}"));
    }
    let all =
        !(args.ps_tree || args.files || args.mounts || args.memory || args.stats || args.images);
    let show = Sections {
        tree: all || args.ps_tree,
        memory: all || args.memory,
        files: all || args.files,
        mounts: all || args.mounts,
        stats: all || args.stats,
        images: args.images,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json(&cp, &show))?);
    } else {
        print!("{}", human(&cp, &show));
    }
    Ok(ExitCode::SUCCESS)
}

struct Sections {
    tree: bool,
    memory: bool,
    files: bool,
    mounts: bool,
    stats: bool,
    images: bool,
}

/// The whole checkpoint as JSON, less the sections not asked for.
fn json(cp: &Checkpoint, show: &Sections) -> serde_json::Value {
    let mut value = serde_json::to_value(cp).unwrap_or_default();
    let Some(obj) = value.as_object_mut() else {
        return value;
    };
    if !(show.tree || show.memory || show.files) {
        obj.remove("processes");
    } else if let Some(procs) = obj.get_mut("processes").and_then(|p| p.as_array_mut()) {
        for p in procs.iter_mut().filter_map(|p| p.as_object_mut()) {
            if !show.memory {
                p.remove("memory");
            }
            if !show.files {
                p.remove("files");
            }
        }
    }
    if !show.mounts {
        obj.remove("mount_namespaces");
    }
    if !show.stats {
        obj.remove("dump_stats");
        obj.remove("restore_stats");
    }
    if !show.images {
        obj.remove("images");
    }
    value
}

fn human(cp: &Checkpoint, show: &Sections) -> String {
    let mut out = String::new();
    let s = &cp.summary;
    out.push_str(&format!("checkpoint {}\n", cp.dir.display()));
    let mut facts = vec![match &cp.criu_version {
        Some(v) => format!("CRIU {v}"),
        None => "CRIU version not recorded".to_owned(),
    }];
    facts.push(format!("image format v{}", cp.inventory.img_version));
    if let Some(arch) = &cp.arch {
        facts.push(arch.clone());
    }
    if let Some(lock) = &cp.inventory.network_lock {
        facts.push(format!("network lock {lock}"));
    }
    out.push_str(&format!("  {}\n", facts.join(", ")));
    out.push_str(&format!(
        "  {} {}, {} {}, {} open {}, {} {}\n",
        s.processes,
        plural(s.processes, "process", "processes"),
        s.threads,
        plural(s.threads, "thread", "threads"),
        s.open_files,
        plural(s.open_files, "file", "files"),
        s.mounts,
        plural(s.mounts, "mount", "mounts"),
    ));
    out.push_str(&format!(
        "  memory: {} mapped, {} dumped ({} pages), {} pages in the parent, {} lazy pages\n",
        bytes(s.mapped_bytes),
        bytes(s.dumped_bytes),
        s.pages_dumped,
        s.pages_in_parent,
        s.pages_lazy
    ));
    out.push_str(&format!(
        "  images: {} files, {} ({} of pages)\n",
        s.image_files,
        bytes(s.image_bytes),
        bytes(s.pages_bytes)
    ));
    for w in &cp.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    if show.tree {
        out.push_str("\nprocess tree\n");
        let mut rows = vec![row(&[
            "PID", "PPID", "PGID", "SID", "STATE", "THREADS", "COMMAND",
        ])];
        for (p, depth, last) in tree_order(cp) {
            let mut command = String::new();
            if depth > 0 {
                command.push_str(&"   ".repeat(depth - 1));
                command.push_str(if last { "└─ " } else { "├─ " });
            }
            command.push_str(&p.command);
            let state = match p.exit_code {
                Some(code) => format!("{} ({code})", p.state),
                None => p.state.clone(),
            };
            rows.push(vec![
                p.pid.to_string(),
                p.ppid.to_string(),
                p.pgid.to_string(),
                p.sid.to_string(),
                state,
                p.threads.len().to_string(),
                command,
            ]);
        }
        out.push_str(&table(&rows));
    }
    if show.memory {
        out.push_str("\nmemory\n");
        let mut rows = vec![row(&[
            "PID",
            "COMMAND",
            "VMAS",
            "MAPPED",
            "ANON",
            "FILE",
            "DUMPED",
            "PAGES",
            "PARENT",
            "LAZY",
            "PAGE FILE",
        ])];
        for p in &cp.processes {
            let Some(m) = &p.memory else {
                rows.push(vec![p.pid.to_string(), p.command.clone(), "-".into()]);
                continue;
            };
            rows.push(vec![
                p.pid.to_string(),
                p.command.clone(),
                m.vmas.to_string(),
                bytes(m.mapped_bytes),
                bytes(m.anon_private_bytes + m.anon_shared_bytes),
                bytes(m.file_bytes),
                bytes(m.dumped_bytes),
                m.pages_dumped.to_string(),
                m.pages_in_parent.to_string(),
                m.pages_lazy.to_string(),
                m.pages_image.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if show.files {
        out.push_str("\nopen files\n");
        for p in &cp.processes {
            let mut about = vec![];
            for (what, v) in [("exe", &p.exe), ("cwd", &p.cwd), ("root", &p.root)] {
                if let Some(v) = v {
                    about.push(format!("{what} {v}"));
                }
            }
            out.push_str(&format!(
                "pid {} ({}): {}\n",
                p.pid,
                p.command,
                about.join(", ")
            ));
            if p.files.is_empty() {
                out.push_str("  no open descriptors\n");
                continue;
            }
            let mut rows = vec![row(&["FD", "TYPE", "MODE", "DESCRIPTION"])];
            for f in &p.files {
                rows.push(vec![
                    f.fd.to_string(),
                    f.kind.clone(),
                    f.access.clone().unwrap_or_else(|| "-".into()),
                    f.description.clone(),
                ]);
            }
            for line in table(&rows).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    if show.mounts {
        out.push_str("\nmounts\n");
        if cp.mount_namespaces.is_empty() {
            out.push_str("no mount namespace was dumped (the tree shared the host's)\n");
        }
        for ns in &cp.mount_namespaces {
            out.push_str(&format!("mount namespace {}\n", ns.id));
            let mut rows = vec![row(&[
                "ID",
                "PARENT",
                "MOUNTPOINT",
                "TYPE",
                "SOURCE",
                "OPTIONS",
            ])];
            for m in &ns.mounts {
                let source = match (&m.external_key, m.external) {
                    (Some(key), _) => format!("external [{key}]"),
                    (None, true) => format!("external ({})", m.source),
                    (None, false) => m.source.clone(),
                };
                rows.push(vec![
                    m.id.to_string(),
                    m.parent_id.to_string(),
                    m.mountpoint.clone(),
                    m.fstype.clone(),
                    source,
                    m.options.clone(),
                ]);
            }
            for line in table(&rows).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    if show.stats {
        out.push_str("\nstatistics\n");
        match &cp.dump_stats {
            Some(d) => {
                out.push_str(&format!(
                    "dump: freezing {}, frozen {}, memdump {}, memwrite {}\n",
                    common::ms(d.freezing_time_us),
                    common::ms(d.frozen_time_us),
                    common::ms(d.memdump_time_us),
                    common::ms(d.memwrite_time_us)
                ));
                out.push_str(&format!(
                    "      pages scanned {}, written {}, skipped (in parent) {}, lazy {}\n",
                    d.pages_scanned, d.pages_written, d.pages_skipped_parent, d.pages_lazy
                ));
            }
            None => out.push_str("dump: no stats-dump (it is in the dump's work directory)\n"),
        }
        if let Some(r) = &cp.restore_stats {
            out.push_str(&format!(
                "restore: forking {}, restore {}, pages restored {}, compared {}, shared copy-on-write {}\n",
                common::ms(r.forking_time_us),
                common::ms(r.restore_time_us),
                r.pages_restored,
                r.pages_compared,
                r.pages_skipped_cow
            ));
        }
    }
    if show.images {
        out.push_str("\nimage files\n");
        let mut rows = vec![row(&["NAME", "KIND", "SIZE"])];
        for i in &cp.images {
            rows.push(vec![i.name.clone(), i.kind.clone(), bytes(i.size)]);
        }
        out.push_str(&table(&rows));
    }
    out
}

/// Processes depth-first from the roots, with their depth and whether each
/// is its parent's last child.
fn tree_order(cp: &Checkpoint) -> Vec<(&crabmigrate_images::Process, usize, bool)> {
    use std::collections::{HashMap, HashSet};
    let pids: HashSet<u32> = cp.processes.iter().map(|p| p.pid).collect();
    let mut children: HashMap<u32, Vec<&crabmigrate_images::Process>> = HashMap::new();
    let mut roots = Vec::new();
    for p in &cp.processes {
        if p.ppid != p.pid && pids.contains(&p.ppid) {
            children.entry(p.ppid).or_default().push(p);
        } else {
            roots.push(p);
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(&crabmigrate_images::Process, usize, bool)> =
        roots.into_iter().rev().map(|p| (p, 0, true)).collect();
    while let Some((p, depth, last)) = stack.pop() {
        if !seen.insert(p.pid) {
            continue;
        }
        out.push((p, depth, last));
        if let Some(kids) = children.get(&p.pid) {
            for (i, k) in kids.iter().enumerate().rev() {
                stack.push((k, depth + 1, i + 1 == kids.len()));
            }
        }
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Bytes in binary units with one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tables() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(16 << 20), "16.0 MiB");
        let t = table(&[row(&["A", "BB"]), row(&["ccc", "d"])]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
