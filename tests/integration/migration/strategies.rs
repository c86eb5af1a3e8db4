//! Successful migrations by strategy, between the same two namespace hosts
//! as the rest of `migration` (whose helpers this module uses):
//!
//! - a busybox counter container moves with stop-copy, pre-copy and
//!   post-copy: the counter goes on in the destination's copy of the rootfs,
//!   the destination's runtime lists the container as running, and the
//!   source has neither the container nor a counting process;
//! - a 256 MiB process moves with post-copy and its memory checksum is
//!   intact once every page has arrived;
//! - pre-copy on this kernel (no soft-dirty tracking) takes the
//!   content-hash path and sends far less in its final round than in its
//!   first, because the workload dirties little;
//! - a restore that fails on the destination (a pid the frozen source still
//!   holds) rolls back with CRIU's cause;
//! - a container holding a TCP listener moves with `--tcp-established`
//!   (CRIU 4.2, which setup provides, dumps inet sockets on Linux 6.16+)
//!   and runs on the destination only.
//!
//! The source container is created in the host's network namespace (it has
//! its own anyway); `crabmigrate migrate` runs in `src`, the agent in `dst`.
//! On one machine both "hosts" share the cgroup tree, so the container is
//! renamed on the way (`--target-id`): the frozen source and the held
//! destination copy must not share a cgroup.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::lab::*;
use crate::container_cr::{counter_bundle, wait_continues, Count};
use testkit::Runtime;

/// Force-deletes a container of the agent's state root on drop.
struct DestinationContainer {
    root: PathBuf,
    id: String,
}

impl DestinationContainer {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = testkit::crabmigrate();
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }
}

impl Drop for DestinationContainer {
    fn drop(&mut self) {
        let _ = self.command(&["delete", "--force", &self.id]).output();
    }
}

/// A counting container on the source, an agent, and the name it gets on
/// the destination.
struct ContainerLab {
    /// First: fields drop in order, and the destination's container must be
    /// deleted while the agent's state root (in `lab`) still exists.
    dest: DestinationContainer,
    lab: Lab,
    agent: Agent,
    rt: Runtime,
    bundle: testkit::BusyboxBundle,
    id: String,
    target: String,
    /// The counter once it reached 3.
    before: Count,
}

impl ContainerLab {
    /// Runs `bundle` as a container on the source and waits for it to count.
    fn start(tag: &str, bundle: testkit::BusyboxBundle) -> Self {
        let lab = Lab::new(tag);
        let agent = lab.agent(&lab.key, &lab.dir("agent-work"));
        let rt = Runtime::new();
        let id = testkit::container_id(tag);
        let target = format!("{id}-dst");
        let bundle_arg = bundle.path().to_str().unwrap().to_owned();
        let status = rt
            .command(&["run", "-d", "--bundle", &bundle_arg, &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "run -d {id} failed ({status})");
        let dest = DestinationContainer {
            root: lab.tmp.path().join("agent-root"),
            id: target.clone(),
        };
        let before = crate::container_cr::wait_count(&bundle.rootfs(), "reached 3", |c| c.n >= 3);
        Self {
            lab,
            agent,
            rt,
            bundle,
            id,
            target,
            dest,
            before,
        }
    }

    /// `crabmigrate --root SRC migrate ID --target-id ID-dst --to AGENT ...
    /// ARGS`, started in `src`.
    fn migrate(&self, args: &[&str]) -> Running {
        Running::start(
            self.lab
                .hosts
                .src
                .command(testkit::program("crabmigrate"))
                .arg("--root")
                .arg(self.rt.root.path())
                .args(["migrate", &self.id, "--target-id", &self.target])
                .args(["--to", &self.lab.agent_addr(), "--key-file"])
                .arg(&self.lab.key)
                .arg("--work-dir")
                .arg(self.lab.dir("migrate-work"))
                .args(args),
        )
    }

    /// The destination's copy of the rootfs.
    fn dst_rootfs(&self) -> PathBuf {
        self.agent
            .work
            .join("bundles")
            .join(&self.target)
            .join("rootfs")
    }
}

fn container_moves(strategy: &str, tag: &str) {
    let c = ContainerLab::start(tag, counter_bundle());
    let events_file = c.lab.tmp.path().join("events.jsonl");
    let mut run = c.migrate(&[
        "--strategy",
        strategy,
        "--json",
        "--events",
        events_file.to_str().unwrap(),
    ]);
    let done = finish(&mut run, strategy);
    assert!(
        done.status.success(),
        "{strategy}: migrate failed ({}): {}\nagent: {}",
        done.status,
        done.stderr,
        c.agent.log()
    );
    let report: serde_json::Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("{strategy}: the report is not JSON ({e}): {}", done.stdout));
    println!("container {strategy}: {:?}: {report}", done.took);
    assert_eq!(report["workload"], "container", "{report}");
    assert_eq!(report["strategy"], strategy, "{report}");

    // The destination runs it, from its own copy of the rootfs.
    let state: serde_json::Value = serde_json::from_slice(
        &c.dest
            .command(&["state", &c.target])
            .output()
            .expect("state runs")
            .stdout,
    )
    .unwrap_or_default();
    assert_eq!(state["status"], "running", "{strategy}: {state}");
    assert_eq!(
        state["pid"].as_u64(),
        report["destination_pid"].as_u64(),
        "{strategy}: {state} vs {report}"
    );
    let after = wait_continues(&c.dst_rootfs(), &c.before);
    println!(
        "container {strategy}: counted on from {:?} to {after:?}",
        c.before
    );

    // The source has nothing left: no state, no counting.
    let gone = c.rt.run(&["state", &c.id]);
    assert!(
        !gone.status.success(),
        "{strategy}: the source still lists {}: {}",
        c.id,
        String::from_utf8_lossy(&gone.stdout)
    );
    let src_rootfs = c.bundle.rootfs();
    let last = Count::read(&src_rootfs).expect("the source's counter file");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        Count::read(&src_rootfs),
        Some(last),
        "{strategy}: the source still counts"
    );

    // The events file tells the story in order.
    let events = std::fs::read_to_string(&events_file).unwrap();
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for wanted in ["strategy", "phase-started", "frozen", "cut-over"] {
        assert!(
            kinds.iter().any(|k| k == wanted),
            "{strategy}: no {wanted} event in {events}"
        );
    }
    assert!(!kinds.iter().any(|k| k == "rollback"), "{events}");

    let ContainerLab { agent, dest, .. } = c;
    drop(dest);
    agent.wait_sessions_gone();
}

#[test]
fn container_moves_with_stop_copy() {
    if testkit::real_criu("container_moves_with_stop_copy").is_none() {
        return;
    }
    container_moves("stop-copy", "mcstop");
}

#[test]
fn container_moves_with_pre_copy() {
    if testkit::real_criu("container_moves_with_pre_copy").is_none() {
        return;
    }
    container_moves("pre-copy", "mcpre");
}

#[test]
fn container_moves_with_post_copy() {
    if testkit::real_criu("container_moves_with_post_copy").is_none() {
        return;
    }
    container_moves("post-copy", "mcpost");
}

#[test]
fn post_copy_moves_256_mib_with_its_checksum_intact() {
    if testkit::real_criu("post_copy_moves_256_mib_with_its_checksum_intact").is_none() {
        return;
    }
    let lab = Lab::new("mpost");
    let agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let mut src = lab.source(256, false);
    src.outer.wait_tick(2, PATIENCE);
    let before = src.tick();
    let report = migrate_ok_with(&lab, "post-copy", &src, &agent, &[], "post-copy");
    println!("post-copy 256 MiB: {report}");
    assert_eq!(report["strategy"], "post-copy");
    assert!(
        report["page_bytes"].as_u64().unwrap() >= 200 << 20,
        "most pages came lazily: {report}"
    );
    assert!(report["dependent_ms"].as_f64().is_some(), "{report}");
    // The checksum covers all 256 MiB: every page arrived intact.
    let restored = assert_moved(&lab, &mut src, &report, &before, "post-copy");
    assert!(restored.alive());
    agent.wait_sessions_gone();
}

#[test]
fn pre_copy_final_round_is_smaller_than_the_first() {
    if testkit::real_criu("pre_copy_final_round_is_smaller_than_the_first").is_none() {
        return;
    }
    let lab = Lab::new("mprec");
    let agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let mut src = lab.source(64, false);
    src.outer.wait_tick(2, PATIENCE);
    let before = src.tick();
    let report = migrate_ok_with(
        &lab,
        "pre-copy",
        &src,
        &agent,
        &["--max-rounds", "3"],
        "pre-copy",
    );
    println!("pre-copy 64 MiB: {report}");
    assert_eq!(report["strategy"], "pre-copy");
    let rounds = report["rounds"].as_array().expect("rounds");
    assert!(rounds.len() >= 2, "{report}");
    let first = rounds[0]["bytes_sent"].as_u64().unwrap();
    let last = rounds.last().unwrap();
    assert_eq!(last["last"], true, "{report}");
    let final_sent = last["bytes_sent"].as_u64().unwrap();
    assert!(
        first >= 64 << 20,
        "the first round carries the memory: {report}"
    );
    assert!(
        final_sent * 10 < first,
        "the final round sends under a tenth of the first: {report}"
    );
    let restored = assert_moved(&lab, &mut src, &report, &before, "pre-copy");
    assert!(restored.alive());
    agent.wait_sessions_gone();
}

#[test]
fn a_restore_failing_on_the_destination_rolls_back() {
    if testkit::real_criu("a_restore_failing_on_the_destination_rolls_back").is_none() {
        return;
    }
    let lab = Lab::new("mrfail");
    let mut agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    // No pid namespace: on one machine the frozen source still holds the
    // pid the destination's CRIU must give the copy, so the restore there
    // fails for real ("pid in use").
    let dir = lab.dir("plain");
    let state = dir.join("state");
    let mut cmd = lab.hosts.src.command(workload_program(&dir));
    cmd.args(["--setsid", "--mem-mib", "16", "--out"])
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let workload = Workload::spawn(cmd, &state);
    let pid = workload.pid();
    let before = workload.wait_tick(2, PATIENCE);

    let mut run = lab.migrate(pid, &lab.agent_addr(), &lab.key, &["--json"]);
    let done = finish(&mut run, "restore fails");
    let line = assert_rolled_back(&done, "restore fails");
    assert!(
        line.contains("restore failed on the destination"),
        "the cause reaches the user: {line}"
    );
    // The report says the same, typed: CRIU's recognised failure on the
    // destination travels to the source.
    let report: serde_json::Value = serde_json::from_str(done.stdout.trim())
        .unwrap_or_else(|e| panic!("restore fails: no JSON ({e}): {}", done.stdout));
    assert_eq!(report["runs_on_source"], true, "{report}");
    assert_eq!(report["known_failure"], "pid-in-use", "{report}");
    assert!(report["in_doubt"].is_null(), "{report}");
    println!("restore fails: {line}");
    let after = continued(&state, &before);
    assert_eq!(after.checksum, before.checksum, "memory intact");
    assert_eq!(after.pid, before.pid, "the same process counts on");
    assert!(
        matches!(proc_state(pid), Some('R' | 'S' | 'D')),
        "the source is not frozen: {:?}",
        proc_state(pid)
    );
    assert!(agent.running(), "the agent died: {}", agent.log());
    agent.wait_sessions_gone();
    assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "restore fails");
}

#[test]
fn a_container_with_a_tcp_socket_moves_and_never_runs_twice() {
    if testkit::real_criu("a_container_with_a_tcp_socket_moves_and_never_runs_twice").is_none() {
        return;
    }
    // A listening TCP socket beside the counter, moved with
    // --tcp-established: CRIU 4.2 dumps inet sockets on Linux 6.16+ (setup
    // provides it; 4.1.1 could not). The container must run on the
    // destination only.
    let script = format!(
        "nc -l -p 7777 </dev/null >/dev/null 2>&1 & {}",
        crate::container_cr::COUNTER
    );
    let bundle = testkit::BusyboxBundle::new(&["sh", "-c", &script]);
    for applet in ["mv", "rm"] {
        std::os::unix::fs::symlink("busybox", bundle.rootfs().join("bin").join(applet)).unwrap();
    }
    let c = ContainerLab::start("mctcp", bundle);
    let mut run = c.migrate(&["--tcp-established", "--strategy", "stop-copy", "--json"]);
    let done = finish(&mut run, "tcp");
    assert!(
        done.status.success(),
        "tcp: the container with a TCP listener must move ({}): {}\nagent: {}",
        done.status,
        done.stderr,
        c.agent.log()
    );
    println!("tcp: moved: {}", done.stdout);
    wait_continues(&c.dst_rootfs(), &c.before);
    let state: serde_json::Value = serde_json::from_slice(
        &c.dest
            .command(&["state", &c.target])
            .output()
            .expect("state runs")
            .stdout,
    )
    .unwrap_or_default();
    assert_eq!(state["status"], "running", "tcp: {state}");
    assert!(
        !c.rt.run(&["state", &c.id]).status.success(),
        "tcp: the source keeps the container"
    );
    let src_rootfs = c.bundle.rootfs();
    let last = Count::read(&src_rootfs);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        Count::read(&src_rootfs),
        last,
        "tcp: the source still counts"
    );
}
