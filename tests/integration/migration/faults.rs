//! The fault matrix with real CRIU: the source's `crabmigrate migrate`
//! killed (SIGKILL) or stopped (SIGTERM) at each phase, the agent killed at
//! each phase, CRIU killed mid-dump, the destination's disk full in the
//! middle of the page stream — for a process tree in its own pid
//! namespace, a tree outside one, and a container.
//!
//! Phases are seen from outside: `migrate --events FILE` (`round`,
//! `frozen`, `phase-started`, `committing`) and the agent's log. Each case
//! asserts the outcome the design promises — exactly one running copy, or
//! the documented in-doubt state (no copy runs, the source stopped and
//! intact, and the printed `crabmigrate recover` command resumes it) — and
//! that nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::lab::*;
use crate::container_cr::{counter_bundle, wait_continues, Count};

/// What moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A process tree, pid 1 of its own pid namespace.
    Tree,
    /// A shell and two workloads outside a private pid namespace (the
    /// restore cannot work on the same machine: only faults before the
    /// restore, or with a forged `Restored`, use it).
    Plain,
    /// A busybox counter container.
    Container,
}

/// A tree outside a private pid namespace: `sh` with two workloads.
#[derive(Debug)]
pub(super) struct Plain {
    pub(super) shell: testkit::Workload,
    pub(super) states: Vec<PathBuf>,
}

impl Drop for Plain {
    fn drop(&mut self) {
        // The workloads first (the shell's guard only kills the shell).
        for pid in self.pids().into_iter().skip(1) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

impl Plain {
    /// Every pid of the tree (the shell first).
    pub(super) fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.shell.pid()];
        let children = format!("/proc/{0}/task/{0}/children", self.shell.pid());
        pids.extend(
            std::fs::read_to_string(children)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
        pids
    }
}

/// The container's parts.
#[derive(Debug)]
pub(super) struct Boxed {
    pub(super) rt: testkit::Runtime,
    pub(super) bundle: testkit::BusyboxBundle,
    pub(super) id: String,
    pub(super) target: String,
    pub(super) before: Count,
}

/// The workload of a case.
pub(super) enum Subject {
    Tree(Source),
    Plain(Plain),
    Container(Boxed),
}

/// One case: two hosts, an agent, a workload.
pub(super) struct Case {
    /// Fields drop in this order: the workload, the agent, the tmpfs, and
    /// only then the lab's directory.
    pub(super) subject: Subject,
    pub(super) agent: Agent,
    #[allow(dead_code)] // dropped, never read
    pub(super) tmpfs: Option<Tmpfs>,
    pub(super) lab: Lab,
    pub(super) events: PathBuf,
    pub(super) what: String,
}

impl Drop for Case {
    fn drop(&mut self) {
        // A copy the destination runs (and the agent): killed, so that
        // their cgroups can go with the lab.
        for (pid, _) in pids_in(&self.lab.hosts.dst, &[]) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = wait_until(Duration::from_secs(5), || {
            pids_in(&self.lab.hosts.dst, &[]).is_empty().then_some(())
        });
        // A container the destination runs, force-deleted.
        if let Subject::Container(b) = &self.subject {
            let _ = testkit::crabmigrate()
                .arg("--root")
                .arg(&self.agent.root)
                .args(["delete", "--force", &b.target])
                .stdin(Stdio::null())
                .output();
        }
    }
}

impl Case {
    pub(super) fn new(tag: &str, kind: Kind, mem_mib: usize, agent_args: &[&str]) -> Self {
        let lab = Lab::new(tag);
        let agent = lab.agent_with(&lab.key, &lab.dir("agent-work"), agent_args);
        let subject = match kind {
            Kind::Tree => Subject::Tree(lab.source(mem_mib, false)),
            Kind::Plain => Subject::Plain(plain(&lab, mem_mib)),
            Kind::Container => Subject::Container(container(&lab, tag)),
        };
        if let Subject::Tree(src) = &subject {
            src.outer.wait_tick(2, PATIENCE);
        }
        let events = lab.tmp.path().join("events.jsonl");
        Self {
            tmpfs: None,
            lab,
            agent,
            subject,
            events,
            what: tag.to_owned(),
        }
    }

    /// `crabmigrate migrate --strategy STRATEGY --json --events FILE ...`
    /// of the subject, in `src`.
    pub(super) fn migrate(&self, strategy: &str, args: &[&str]) -> Running {
        self.migrate_to(&self.lab.agent_addr(), strategy, args)
    }

    /// [`Case::migrate`] to another address (a relay).
    pub(super) fn migrate_to(&self, to: &str, strategy: &str, args: &[&str]) -> Running {
        let mut cmd = self.lab.hosts.src.command(testkit::program("crabmigrate"));
        if let Subject::Container(b) = &self.subject {
            cmd.arg("--root").arg(b.rt.root.path());
        }
        cmd.arg("migrate");
        match &self.subject {
            Subject::Tree(src) => {
                cmd.args(["--pid", &src.inner.to_string()]);
            }
            Subject::Plain(p) => {
                cmd.args(["--pid", &p.shell.pid().to_string()]);
            }
            Subject::Container(b) => {
                cmd.args([&b.id, "--target-id", &b.target]);
            }
        }
        cmd.args(["--strategy", strategy, "--to", to, "--key-file"])
            .arg(&self.lab.key)
            .arg("--work-dir")
            .arg(self.work())
            .arg("--json")
            .arg("--events")
            .arg(&self.events)
            .args(args);
        Running::start(&mut cmd)
    }

    /// The source's migrate work directory (in-doubt records live there).
    pub(super) fn work(&self) -> PathBuf {
        self.lab.dir("migrate-work")
    }

    /// Waits until the events file holds `needle` (`"event":"frozen"`,
    /// `"phase":"memory"`), or migrate ended.
    pub(super) fn wait_event(&self, run: &mut Running, needle: &str) {
        let event = needle;
        let seen = wait_until(PATIENCE, || {
            let text = std::fs::read_to_string(&self.events).unwrap_or_default();
            (text.contains(needle) || !run.running()).then_some(())
        });
        assert!(
            seen.is_some() && run.running(),
            "{}: no {event} event; migrate: {}; agent: {}",
            self.what,
            run.stderr(),
            self.agent.log()
        );
    }

    /// Waits until the agent logged `line` (or migrate ended).
    pub(super) fn wait_agent(&self, run: &mut Running, line: &str) {
        let seen = wait_until(PATIENCE, || {
            (self.agent.log().contains(line) || !run.running()).then_some(())
        });
        assert!(
            seen.is_some() && run.running(),
            "{}: the agent never logged {line:?}; migrate: {}; agent: {}",
            self.what,
            run.stderr(),
            self.agent.log()
        );
    }

    /// The workload runs on the source only, as before, and nothing is
    /// left on the destination.
    pub(super) fn runs_on_source(&self, before: Option<&Tick>) {
        let what = &self.what;
        match &self.subject {
            Subject::Tree(src) => {
                let before = before.cloned().unwrap_or_else(|| src.tick());
                src.assert_still_on_source(&self.lab.hosts.src, &before, what);
            }
            Subject::Plain(p) => {
                for pid in p.pids() {
                    let state = wait_until(PATIENCE, || {
                        proc_state(pid).filter(|s| matches!(s, 'R' | 'S' | 'D'))
                    });
                    assert!(state.is_some(), "{what}: {pid} is {:?}", proc_state(pid));
                }
                for state in &p.states {
                    let now = Tick::read(state).expect("a state file");
                    let after = continued(state, &now);
                    assert_eq!(after.checksum, now.checksum, "{what}: memory intact");
                }
            }
            Subject::Container(b) => {
                let rootfs = b.bundle.rootfs();
                let state = b.rt.state(&b.id);
                assert_eq!(state["status"], "running", "{what}: {state}");
                let now = Count::read(&rootfs).expect("the counter");
                wait_continues(&rootfs, &now);
            }
        }
        self.destination_empty();
    }

    /// Nothing of the workload on the destination: no process, no
    /// container, no session or bundle left.
    pub(super) fn destination_empty(&self) {
        assert_nothing_on(&self.lab.hosts.dst, Some(self.agent.pid()), &self.what);
        if let Subject::Container(b) = &self.subject {
            let gone = wait_until(PATIENCE, || {
                (!self.agent.root.join(&b.target).exists()).then_some(())
            });
            assert!(
                gone.is_some(),
                "{}: the destination keeps {}",
                self.what,
                b.target
            );
        }
        self.agent.wait_sessions_gone();
    }

    /// The workload runs on the destination only.
    pub(super) fn runs_on_destination(&mut self) {
        let what = self.what.clone();
        match &mut self.subject {
            Subject::Tree(src) => {
                // The copy there writes the shared state file as pid 1 of
                // its namespace; the source's tree is gone or stopped.
                let now = Tick::read(&src.state).expect("the state file");
                let after = continued(&src.state, &now);
                assert_eq!(after.pid, 1, "{what}");
                let copy = pids_in(&self.lab.hosts.dst, &[self.agent.pid()]);
                assert!(!copy.is_empty(), "{what}: nothing runs on the destination");
                assert!(
                    !src.inner_guard.alive() || proc_state(src.inner) == Some('T'),
                    "{what}: the source runs too: {:?}",
                    proc_state(src.inner)
                );
            }
            Subject::Container(b) => {
                let dest = self.agent.root.join(&b.target);
                assert!(dest.exists(), "{what}: no container {} there", b.target);
                let rootfs = self
                    .agent
                    .work
                    .join("bundles")
                    .join(&b.target)
                    .join("rootfs");
                wait_continues(&rootfs, &b.before);
            }
            Subject::Plain(_) => panic!("{what}: a plain tree cannot move on one machine"),
        }
    }

    /// The source is stopped (in doubt): no task runs or counts.
    pub(super) fn source_stopped(&self) {
        let what = &self.what;
        match &self.subject {
            Subject::Tree(src) => {
                let stopped = wait_until(PATIENCE, || {
                    (proc_state(src.inner) == Some('T')).then_some(())
                });
                assert!(
                    stopped.is_some(),
                    "{what}: the source is {:?}",
                    proc_state(src.inner)
                );
            }
            Subject::Plain(p) => {
                for pid in p.pids() {
                    let stopped =
                        wait_until(PATIENCE, || (proc_state(pid) == Some('T')).then_some(()));
                    assert!(stopped.is_some(), "{what}: {pid} is {:?}", proc_state(pid));
                }
            }
            Subject::Container(b) => {
                let rootfs = b.bundle.rootfs();
                let last = Count::read(&rootfs);
                std::thread::sleep(Duration::from_millis(500));
                assert_eq!(
                    Count::read(&rootfs),
                    last,
                    "{what}: the source container counts"
                );
            }
        }
    }

    /// Runs the printed recover command.
    pub(super) fn recover(&self, command: &str) {
        recover(command, &self.what);
        let left = records(&self.work());
        assert!(left.is_empty(), "{}: records left: {left:?}", self.what);
    }

    /// What a migrate killed with SIGKILL left, the next `recover` (or
    /// `migrate`) sweeps.
    pub(super) fn sweep(&self) {
        let out = testkit::crabmigrate()
            .args(["recover", "--work-dir"])
            .arg(self.work())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: recover: {}",
            self.what,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The source's work directory holds nothing but in-doubt records.
    pub(super) fn source_clean(&self) {
        let left: Vec<_> = std::fs::read_dir(self.work())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let stray: Vec<_> = left.iter().filter(|p| !p.ends_with("in-doubt")).collect();
        assert!(stray.is_empty(), "{}: the source left {stray:?}", self.what);
    }
}

/// `sh` with two workloads, in its own session, outside a pid namespace.
fn plain(lab: &Lab, mem_mib: usize) -> Plain {
    let dir = lab.dir("plain");
    let program = workload_program(&dir);
    let states = vec![dir.join("state-1"), dir.join("state-2")];
    let mem = mem_mib.to_string();
    let mut cmd = lab.hosts.src.command("setsid");
    cmd.args([
        "sh",
        "-c",
        "\"$0\" --mem-mib \"$1\" --out \"$2\" & \"$0\" --mem-mib \"$1\" --out \"$3\" & wait",
    ])
    .arg(&program)
    .arg(&mem)
    .args(&states)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let shell = testkit::Workload::spawn(cmd, &states[0]);
    let ticking = wait_until(PATIENCE, || {
        Tick::read(&states[1]).filter(|t| t.counter >= 2)
    });
    assert!(ticking.is_some(), "the second workload ticks");
    Plain { shell, states }
}

/// A counter container run by a runtime of its own.
fn container(lab: &Lab, tag: &str) -> Boxed {
    let rt = testkit::Runtime::new();
    let bundle = counter_bundle();
    let id = testkit::container_id(tag);
    let status = rt
        .command(&[
            "run",
            "-d",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "run -d {id} failed ({status})");
    let before = crate::container_cr::wait_count(&bundle.rootfs(), "reached 3", |c| c.n >= 3);
    let _ = lab;
    Boxed {
        rt,
        bundle,
        target: format!("{id}-dst"),
        id,
        before,
    }
}

/// The CRIU (swrk) process `migrate` started.
fn criu_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .get(stat.rfind(')')? + 2..)?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == parent && String::from_utf8_lossy(&cmdline).contains("swrk")).then_some(pid)
    })
}

fn real(name: &str) -> bool {
    testkit::real_criu(name).is_some()
}

// ---------------------------------------------------------------------------
// The source's migrate killed or stopped

/// `migrate` ends by `signal` once `event` appears; the workload must run
/// on the source only.
fn source_signalled_at(case: Case, strategy: &str, event: &str, signal: Signal) {
    let mut case = case;
    let before = match &case.subject {
        Subject::Tree(src) => Some(src.tick()),
        _ => None,
    };
    let mut run = case.migrate(strategy, &[]);
    case.wait_event(&mut run, event);
    run.signal(signal);
    let done = finish(&mut run, &case.what);
    if signal == Signal::SIGTERM {
        let line = assert_rolled_back(&done, &case.what);
        assert!(
            line.contains("interrupted by SIGTERM"),
            "{}: {line}",
            case.what
        );
    } else {
        assert!(!done.status.success(), "{}: {}", case.what, done.status);
    }
    println!(
        "{}: {} at {event}: {}",
        case.what,
        signal,
        done.stderr.trim()
    );
    case.runs_on_source(before.as_ref());
    if signal == Signal::SIGKILL {
        case.sweep();
    }
    case.source_clean();
    let _ = &mut case;
}

#[test]
fn source_killed_during_pre_copy_rounds() {
    if !real("source_killed_during_pre_copy_rounds") {
        return;
    }
    source_signalled_at(
        Case::new("fskround", Kind::Tree, 32, &[]),
        "pre-copy",
        r#""event":"round""#,
        Signal::SIGKILL,
    );
}

#[test]
fn source_stopped_with_sigterm_during_pre_copy_rounds_rolls_back() {
    if !real("source_stopped_with_sigterm_during_pre_copy_rounds_rolls_back") {
        return;
    }
    source_signalled_at(
        Case::new("fstround", Kind::Tree, 32, &[]),
        "pre-copy",
        r#""event":"round""#,
        Signal::SIGTERM,
    );
}

#[test]
fn source_killed_while_frozen_leaves_the_tree_running() {
    if !real("source_killed_while_frozen_leaves_the_tree_running") {
        return;
    }
    // A tree outside a private pid namespace: every task must run on.
    source_signalled_at(
        Case::new("fskfrz", Kind::Plain, 8, &[]),
        "stop-copy",
        r#""event":"frozen""#,
        Signal::SIGKILL,
    );
}

#[test]
fn source_killed_while_frozen_thaws_the_container() {
    if !real("source_killed_while_frozen_thaws_the_container") {
        return;
    }
    // CRIU dies with migrate and leaves the freezer frozen: the source's
    // watchdog thaws it.
    source_signalled_at(
        Case::new("fskfrzc", Kind::Container, 0, &[]),
        "stop-copy",
        r#""event":"frozen""#,
        Signal::SIGKILL,
    );
}

#[test]
fn source_stopped_with_sigterm_during_the_page_stream_rolls_back() {
    if !real("source_stopped_with_sigterm_during_the_page_stream_rolls_back") {
        return;
    }
    source_signalled_at(
        Case::new("fstmem", Kind::Tree, 64, &[]),
        "stop-copy",
        r#""phase":"memory""#,
        Signal::SIGTERM,
    );
    source_signalled_at(
        Case::new("fstmemc", Kind::Container, 0, &[]),
        "stop-copy",
        r#""event":"frozen""#,
        Signal::SIGTERM,
    );
}

#[test]
fn source_killed_during_the_restore_leaves_one_copy() {
    if !real("source_killed_during_the_restore_leaves_one_copy") {
        return;
    }
    // A relay holds Restored back, so the source surely waits for the
    // restore when it dies.
    let mut case = Case::new("fskrst", Kind::Tree, 64, &[]);
    let before = match &case.subject {
        Subject::Tree(src) => src.tick(),
        _ => unreachable!(),
    };
    let relay = super::mitm::Mitm::start(
        &case.lab.hosts.src,
        &case.lab.agent_addr(),
        &case.lab.key,
        super::mitm::Rule::DelayRestored,
    );
    let mut run = case.migrate_to(&relay.addr, "stop-copy", &[]);
    case.wait_agent(&mut run, "restored, held until the source commits");
    run.signal(Signal::SIGKILL);
    let _ = finish(&mut run, &case.what);
    // Killed before the commit (the source had not stopped its tree): the
    // agent's connection broke, so it dropped its copy; CRIU died and the
    // tree runs on.
    case.runs_on_source(Some(&before));
    case.sweep();
    case.source_clean();
    let _ = &mut case;
}

/// `migrate` ends by `signal` right after it committed (the agent's health
/// check holds Committed back for seconds).
fn source_signalled_after_the_commit(kind: Kind, tag: &str, signal: Signal) {
    let mut case = Case::new(tag, kind, 16, &["--health-check", "slow=sleep 3"]);
    let mut run = case.migrate("stop-copy", &["--health-check", "slow"]);
    case.wait_event(&mut run, r#""event":"committing""#);
    run.signal(signal);
    let done = finish(&mut run, &case.what);
    println!("{tag}: {signal} after the commit: {}", done.stderr.trim());
    if signal == Signal::SIGTERM {
        // Noted, and the cut-over finished first.
        assert!(done.status.success(), "{tag}: {}", done.stderr);
        case.runs_on_destination();
        case.source_clean();
        return;
    }
    // Killed after the commit: the destination runs the workload; the
    // source's tree stays stopped (the SIGSTOP came before Commit) with
    // its record, which the discard command ends.
    case.runs_on_destination();
    case.source_stopped();
    case.sweep();
    let records = records(&case.work());
    assert_eq!(records.len(), 1, "{tag}: one in-doubt record");
    let (_, discard) = testkit_commands(&case.work(), &records[0]);
    case.recover(&discard);
    match &case.subject {
        Subject::Tree(src) => {
            let gone = wait_until(PATIENCE, || (!src.inner_guard.alive()).then_some(()));
            assert!(gone.is_some(), "{tag}: the discarded source still exists");
        }
        Subject::Container(b) => {
            assert!(
                !b.rt.run(&["state", &b.id]).status.success(),
                "{tag}: the source container remains"
            );
        }
        Subject::Plain(_) => {}
    }
    case.runs_on_destination();
    case.source_clean();
}

/// The commands `crabmigrate recover` takes for a record.
fn testkit_commands(work: &Path, session: &str) -> (String, String) {
    let dir = work.display();
    (
        format!("crabmigrate recover --work-dir {dir} --resume {session}"),
        format!("crabmigrate recover --work-dir {dir} --discard {session}"),
    )
}

#[test]
fn source_killed_after_the_commit_keeps_its_copy_stopped() {
    if !real("source_killed_after_the_commit_keeps_its_copy_stopped") {
        return;
    }
    source_signalled_after_the_commit(Kind::Tree, "fskcom", Signal::SIGKILL);
    source_signalled_after_the_commit(Kind::Container, "fskcomc", Signal::SIGKILL);
}

#[test]
fn source_stopped_with_sigterm_after_the_commit_finishes_the_cut_over() {
    if !real("source_stopped_with_sigterm_after_the_commit_finishes_the_cut_over") {
        return;
    }
    source_signalled_after_the_commit(Kind::Tree, "fstcom", Signal::SIGTERM);
}

// ---------------------------------------------------------------------------
// The agent killed

#[test]
fn agent_killed_during_pre_copy_rounds() {
    if !real("agent_killed_during_pre_copy_rounds") {
        return;
    }
    let mut case = Case::new("fakround", Kind::Tree, 32, &[]);
    let before = match &case.subject {
        Subject::Tree(src) => src.tick(),
        _ => unreachable!(),
    };
    let mut run = case.migrate("pre-copy", &[]);
    case.wait_agent(&mut run, "pre-copy round received");
    case.agent.run.kill();
    let done = finish(&mut run, &case.what);
    assert!(!done.status.success(), "{}", done.stdout);
    assert_nothing_on(&case.lab.hosts.dst, None, &case.what);
    match &case.subject {
        Subject::Tree(src) => src.assert_still_on_source(&case.lab.hosts.src, &before, &case.what),
        _ => unreachable!(),
    }
    case.source_clean();
    let _ = &mut case;
}

/// The agent dies after the source committed, before it said Committed:
/// its watchdog kills its copy; the source ends in doubt, stopped, and
/// the resume command brings it back.
fn agent_killed_after_the_commit(kind: Kind, tag: &str) {
    let mut case = Case::new(tag, kind, 16, &["--health-check", "slow=sleep 5"]);
    let mut run = case.migrate("stop-copy", &["--health-check", "slow"]);
    case.wait_agent(&mut run, "commit received");
    case.agent.run.kill();
    let done = finish(&mut run, &case.what);
    let (resume, _) = assert_in_doubt(&done, &case.what);
    assert_nothing_on(&case.lab.hosts.dst, None, &case.what);
    case.source_stopped();
    case.recover(&resume);
    match &case.subject {
        Subject::Tree(src) => {
            let now = src.tick();
            let after = continued(&src.state, &now);
            assert_eq!(after.checksum, now.checksum, "{tag}: memory intact");
            assert!(matches!(proc_state(src.inner), Some('R' | 'S' | 'D')));
        }
        Subject::Container(b) => {
            let now = Count::read(&b.bundle.rootfs()).unwrap();
            wait_continues(&b.bundle.rootfs(), &now);
        }
        Subject::Plain(_) => {}
    }
    case.source_clean();
}

#[test]
fn agent_killed_during_the_health_check_ends_in_doubt_and_resumes() {
    if !real("agent_killed_during_the_health_check_ends_in_doubt_and_resumes") {
        return;
    }
    agent_killed_after_the_commit(Kind::Tree, "fakhealth");
    agent_killed_after_the_commit(Kind::Container, "fakhealthc");
}

#[test]
fn agent_killed_at_the_post_restore_hold() {
    if !real("agent_killed_at_the_post_restore_hold") {
        return;
    }
    // A relay holds Commit back for seconds, so the agent is surely at its
    // post-restore hold when it dies: its CRIU and the held copy die with
    // it (the watchdog kills the cgroup); the source, which sent Commit,
    // cannot know: in doubt, and the resume command brings it back.
    let mut case = Case::new("fakhold", Kind::Tree, 16, &[]);
    let relay = super::mitm::Mitm::start(
        &case.lab.hosts.src,
        &case.lab.agent_addr(),
        &case.lab.key,
        super::mitm::Rule::DelayCommit,
    );
    let mut run = case.migrate_to(&relay.addr, "stop-copy", &[]);
    case.wait_agent(&mut run, "restored, held until the source commits");
    case.agent.run.kill();
    let done = finish(&mut run, &case.what);
    assert_nothing_on(&case.lab.hosts.dst, None, &case.what);
    let (resume, _) = assert_in_doubt(&done, &case.what);
    case.source_stopped();
    case.recover(&resume);
    match &case.subject {
        Subject::Tree(src) => {
            let now = src.tick();
            let after = continued(&src.state, &now);
            assert_eq!(after.checksum, now.checksum, "memory intact");
            assert!(matches!(proc_state(src.inner), Some('R' | 'S' | 'D')));
        }
        _ => unreachable!(),
    }
    case.source_clean();
    let _ = &mut case;
}

// ---------------------------------------------------------------------------
// CRIU killed, the destination's disk full

fn criu_killed_mid_dump(kind: Kind, tag: &str) {
    let mut case = Case::new(tag, kind, 64, &[]);
    let mut run = case.migrate("stop-copy", &[]);
    case.wait_event(&mut run, r#""phase":"memory""#);
    let criu = wait_until(PATIENCE, || criu_of(run.pid()));
    let criu = criu.unwrap_or_else(|| panic!("{tag}: no CRIU under migrate"));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(criu as i32), Signal::SIGKILL);
    let done = finish(&mut run, &case.what);
    let line = assert_rolled_back(&done, &case.what);
    println!("{tag}: CRIU killed: {line}");
    case.runs_on_source(None);
    case.source_clean();
    let _ = &mut case;
}

#[test]
fn criu_killed_mid_dump_rolls_back_and_thaws() {
    if !real("criu_killed_mid_dump_rolls_back_and_thaws") {
        return;
    }
    criu_killed_mid_dump(Kind::Tree, "fcriu");
    criu_killed_mid_dump(Kind::Container, "fcriuc");
}

#[test]
fn the_destination_disk_filling_mid_transfer_rolls_back() {
    if !real("the_destination_disk_filling_mid_transfer_rolls_back") {
        return;
    }
    let lab = Lab::new("ffull");
    let work = lab.tmp.path().join("agent-tmpfs");
    // The space check passes (2 x 128 MiB + 64 MiB estimated); once the
    // migration is prepared, a filler takes most of it.
    let tmpfs = Tmpfs::mount(&work, "400m");
    let agent = lab.agent(&lab.key, &work);
    let src = lab.source(128, false);
    let before = src.outer.wait_tick(2, PATIENCE);
    let mut case = Case {
        tmpfs: Some(tmpfs),
        lab,
        agent,
        subject: Subject::Tree(src),
        events: PathBuf::new(),
        what: "ffull".into(),
    };
    case.events = case.lab.tmp.path().join("events.jsonl");
    let mut run = case.migrate("stop-copy", &[]);
    case.wait_agent(&mut run, "migration prepared");
    let filled = Command::new("fallocate")
        .args(["-l", "340m"])
        .arg(work.join("filler"))
        .status()
        .unwrap();
    assert!(filled.success(), "fallocate");
    let done = finish(&mut run, &case.what);
    let line = assert_rolled_back(&done, &case.what);
    println!("disk full: {line}");
    assert!(
        line.contains("is full"),
        "{line}; agent: {}",
        case.agent.log()
    );
    case.runs_on_source(Some(&before));
    case.source_clean();
    let _ = std::fs::remove_file(work.join("filler"));
}

#[test]
fn post_copy_with_a_failing_health_check_keeps_the_source() {
    if !real("post_copy_with_a_failing_health_check_keeps_the_source") {
        return;
    }
    // Every page may reach the destination before its health check fails:
    // the destination then drops its copy and the source, stopped for the
    // commit, continues — its CRIU must never take the lazy stream's end
    // for "every page served".
    let mut case = Case::new(
        "fphealth",
        Kind::Tree,
        64,
        &["--health-check", "failing=exit 1"],
    );
    let before = match &case.subject {
        Subject::Tree(src) => src.tick(),
        _ => unreachable!(),
    };
    let mut run = case.migrate("post-copy", &["--health-check", "failing"]);
    let done = finish(&mut run, &case.what);
    let line = assert_rolled_back(&done, &case.what);
    assert!(line.contains("health check failed"), "{line}");
    case.runs_on_source(Some(&before));
    case.source_clean();
    let _ = &mut case;
}
