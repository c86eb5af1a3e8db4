//! The cut-over itself: Commit lost, the link cut right after Commit (a
//! relay that speaks the protocol, [`super::mitm`]), a tree outside a pid
//! namespace stopped, resumed and discarded as a whole, and a restored
//! tree's cgroup killed as a whole — escaped daemons included — by the
//! agent's kill and by its watchdog.

use std::process::{Command, Stdio};
use std::time::Duration;

use crabmigrate_migrate::cgroup::TreeCgroup;
use crabmigrate_migrate::port::{Tree, Watchdog};
use crabmigrate_migrate::watchdog::TreeWatchdog;

use super::faults::{Case, Kind, Subject};
use super::lab::*;
use super::mitm::{Mitm, Rule};
use crate::container_cr::{wait_continues, Count};

fn real(name: &str) -> bool {
    testkit::real_criu(name).is_some()
}

/// Commit never reaches the agent: it drops its copy, and the source ends
/// in the documented in-doubt state — no copy runs, the source stopped and
/// intact — until the resume command.
fn commit_lost(kind: Kind, tag: &str) {
    let mut case = Case::new(tag, kind, 16, &[]);
    let relay = Mitm::start(
        &case.lab.hosts.src,
        &case.lab.agent_addr(),
        &case.lab.key,
        Rule::DropCommit,
    );
    let mut run = case.migrate_to(&relay.addr, "stop-copy", &[]);
    let done = finish(&mut run, tag);
    assert_eq!(
        relay.acted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "{tag}: Commit dropped"
    );
    let (resume, _) = assert_in_doubt(&done, tag);
    case.destination_empty();
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
            assert_eq!(b.rt.state(&b.id)["status"], "running");
        }
        Subject::Plain(_) => {}
    }
    case.source_clean();
    let _ = &mut case;
}

#[test]
fn commit_lost_ends_in_doubt_with_no_copy_and_resumes() {
    if !real("commit_lost_ends_in_doubt_with_no_copy_and_resumes") {
        return;
    }
    commit_lost(Kind::Tree, "clost");
    commit_lost(Kind::Container, "clostc");
}

#[test]
fn the_link_cut_after_the_commit_leaves_one_copy_on_the_destination() {
    if !real("the_link_cut_after_the_commit_leaves_one_copy_on_the_destination") {
        return;
    }
    // The health check holds Committed back until the link is gone.
    let mut case = Case::new("ccut", Kind::Tree, 16, &["--health-check", "slow=sleep 2"]);
    let relay = Mitm::start(
        &case.lab.hosts.src,
        &case.lab.agent_addr(),
        &case.lab.key,
        Rule::CutAfterCommit,
    );
    let mut run = case.migrate_to(&relay.addr, "stop-copy", &["--health-check", "slow"]);
    let done = finish(&mut run, "ccut");
    let (_, discard) = assert_in_doubt(&done, "ccut");
    // The agent committed: its copy runs; the source is stopped, and the
    // discard command ends it.
    case.runs_on_destination();
    case.source_stopped();
    case.recover(&discard);
    if let Subject::Tree(src) = &case.subject {
        let gone = wait_until(PATIENCE, || (!src.inner_guard.alive()).then_some(()));
        assert!(gone.is_some(), "ccut: the discarded source still exists");
    }
    case.runs_on_destination();
    case.source_clean();
}

#[test]
fn a_tree_outside_a_pid_namespace_is_stopped_resumed_and_discarded_whole() {
    if !real("a_tree_outside_a_pid_namespace_is_stopped_resumed_and_discarded_whole") {
        return;
    }
    // The destination cannot restore this tree on the same machine (its
    // pids are taken); the relay turns the refusal into `Restored`, so the
    // source commits, and drops the Commit: in doubt.
    let case = Case::new("cplain", Kind::Plain, 8, &[]);
    let Subject::Plain(plain) = &case.subject else {
        unreachable!()
    };
    let pids = plain.pids();
    assert_eq!(pids.len(), 3, "sh and two workloads: {pids:?}");
    for round in ["resume", "discard"] {
        let relay = Mitm::start(
            &case.lab.hosts.src,
            &case.lab.agent_addr(),
            &case.lab.key,
            Rule::ForgeRestored,
        );
        let mut run = case.migrate_to(&relay.addr, "stop-copy", &[]);
        let done = finish(&mut run, "cplain");
        assert!(
            relay.acted.load(std::sync::atomic::Ordering::Relaxed) >= 2,
            "{round}: forged and dropped"
        );
        let (resume, discard) = assert_in_doubt(&done, "cplain");
        case.source_stopped();
        case.destination_empty();
        if round == "resume" {
            case.recover(&resume);
            case.runs_on_source(None);
        } else {
            case.recover(&discard);
            for pid in &pids {
                let gone = wait_until(PATIENCE, || {
                    (proc_state(*pid).is_none() || proc_state(*pid) == Some('Z')).then_some(())
                });
                assert!(gone.is_some(), "discarded: {pid} is {:?}", proc_state(*pid));
            }
        }
        case.source_clean();
    }
}

/// Starts `script` inside the cgroup whose `cgroup.procs` files are
/// `procs` (the shell writes itself in, then runs the script).
fn spawn_in(procs: &[std::path::PathBuf], script: &str) -> std::process::Child {
    let enter: String = procs
        .iter()
        .map(|p| format!("echo $$ > '{}'; ", p.display()))
        .collect();
    Command::new("sh")
        .arg("-c")
        .arg(format!("{enter}exec sh -c '{script}'"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A tree with a daemon that escaped its parent (double fork, new
/// session): a kill from a /proc snapshot of the root's descendants would
/// miss it.
const TREE: &str = "sleep 600 & (setsid sleep 600 &); sleep 600";

/// The parent of `pid`.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_restored_tree_is_killed_whole_by_the_agent_and_by_its_watchdog() {
    if !real("a_restored_tree_is_killed_whole_by_the_agent_and_by_its_watchdog") {
        return;
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = |what: &str| {
        format!(
            "test{}{what}{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    };
    for (what, by_watchdog) in [("kill", false), ("watchdog", true)] {
        let tree = TreeCgroup::create_session(&name(what)).unwrap();
        let mut root = spawn_in(&tree.procs_files(), TREE);
        let members = wait_until(PATIENCE, || {
            let m = tree.members();
            (m.len() >= 4).then_some(m)
        })
        .unwrap_or_else(|| panic!("{what}: the tree did not start: {:?}", tree.members()));
        // The root's parent is this test; the escaped daemon's is neither
        // this test nor a member.
        let me = std::process::id();
        let escaped = members
            .iter()
            .any(|&p| ppid(p).is_some_and(|pp| pp != me && !members.contains(&pp)));
        assert!(escaped, "{what}: no process escaped the tree: {members:?}");
        if by_watchdog {
            let dog = TreeWatchdog::arm(&tree).unwrap();
            // Dropped unreleased: as if the agent died.
            drop(dog);
        } else {
            tree.kill().unwrap();
        }
        let empty = wait_until(Duration::from_secs(10), || {
            tree.members().is_empty().then_some(())
        });
        assert!(empty.is_some(), "{what}: still alive: {:?}", tree.members());
        let _ = root.wait();
        tree.release();
        for p in tree.procs_files() {
            assert!(
                !p.parent().unwrap().exists(),
                "{what}: the cgroup was removed"
            );
        }
    }
    // A released watchdog leaves the tree alone.
    let tree = TreeCgroup::create_session(&name("released")).unwrap();
    let mut root = spawn_in(&tree.procs_files(), "sleep 600");
    wait_until(PATIENCE, || (!tree.members().is_empty()).then_some(())).unwrap();
    Box::new(TreeWatchdog::arm(&tree).unwrap()).release();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!tree.members().is_empty(), "released: the tree lives");
    tree.kill().unwrap();
    let _ = root.wait();
    tree.release();
}
