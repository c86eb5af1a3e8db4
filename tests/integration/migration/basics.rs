//! Migrations that work, peers that are not crabmigrate, refusals before
//! anything freezes, bad command lines.

use super::lab::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Tests

#[test]
fn stop_copy_moves_a_64_mib_process_to_the_other_host() {
    if testkit::real_criu("stop_copy_moves_a_64_mib_process_to_the_other_host").is_none() {
        return;
    }
    let lab = Lab::new("mstop");
    let agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let mut src = lab.source(64, false);
    src.outer.wait_tick(3, PATIENCE);
    let before = src.tick();

    let report = migrate_ok(&lab, &src, &agent, "stop-copy");
    assert_eq!(report["strategy"], "stop-copy", "{report}");
    assert!(
        report["page_bytes"].as_u64().unwrap() >= 64 << 20,
        "the 64 MiB went through the page stream: {report}"
    );
    assert!(report["downtime_ms"].as_f64().unwrap() > 0.0, "{report}");
    println!("stop-copy report: {report}");
    let restored = assert_moved(&lab, &mut src, &report, &before, "stop-copy");
    assert!(restored.alive());

    // Both sides cleaned up their images.
    agent.wait_sessions_gone();
    let left: Vec<_> = std::fs::read_dir(lab.dir("migrate-work"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the source left {left:?}");
}

#[test]
fn wrong_key_is_refused_and_the_agent_serves_the_right_one() {
    if testkit::real_criu("wrong_key_is_refused_and_the_agent_serves_the_right_one").is_none() {
        return;
    }
    let lab = Lab::new("mkey");
    let mut agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let mut src = lab.source(16, false);
    let before = src.outer.wait_tick(2, PATIENCE);
    let other = lab.tmp.path().join("other-key");
    keygen(&other);

    let mut run = lab.migrate(src.inner, &lab.agent_addr(), &other, &[]);
    let done = finish(&mut run, "wrong key");
    let line = assert_failed(&done, &["another key"], "wrong key");
    println!("wrong key: failed after {:?}: {line}", done.took);
    src.assert_still_on_source(&lab.hosts.src, &before, "wrong key");
    assert!(agent.running(), "the agent died: {}", agent.log());
    let logged = wait_until(PATIENCE, || {
        agent
            .log()
            .contains("could not be authenticated")
            .then_some(())
    });
    assert!(
        logged.is_some(),
        "the agent logs the refusal: {}",
        agent.log()
    );
    assert!(agent.sessions().is_empty(), "no session for a stranger");
    assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "wrong key");

    let report = migrate_ok(&lab, &src, &agent, "right key after a wrong one");
    let _restored = assert_moved(&lab, &mut src, &report, &before, "right key");
}

/// Sends `bytes` to `addr` from inside `ns` and closes.
fn send_junk(ns: &NetNs, addr: &str, bytes: &[u8]) {
    ns.run(|| {
        let mut conn = TcpStream::connect(addr).expect("connect to the agent");
        let _ = conn.write_all(bytes);
        let _ = conn.shutdown(Shutdown::Write);
        // Whatever the agent does (reads, answers, hangs up), wait for it.
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
    });
}

#[test]
fn junk_and_idle_connections_do_not_disturb_the_agent() {
    if testkit::real_criu("junk_and_idle_connections_do_not_disturb_the_agent").is_none() {
        return;
    }
    let lab = Lab::new("mjunk");
    let mut agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let addr = lab.agent_addr();
    // An HTTP request, random bytes, a frame header promising 64 KiB that
    // never comes, a Noise-sized first message of zeros, and nothing at
    // all; from src and from dst itself.
    let mut random = vec![0u8; 70_000];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    let mut zeros = vec![0u8; 2 + 48];
    zeros[1] = 48;
    let junk: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: agent\r\n\r\n",
        &random,
        b"\xff\xffshort",
        &zeros,
        b"",
    ];
    for bytes in junk {
        send_junk(&lab.hosts.src, &addr, bytes);
    }
    send_junk(&lab.hosts.dst, &addr, &random[..1000]);
    // A connection that stays open and silent during the next migration.
    let idle = lab
        .hosts
        .src
        .run(|| TcpStream::connect(addr.as_str()).expect("connect"));
    assert!(agent.running(), "the agent died: {}", agent.log());
    assert!(agent.sessions().is_empty(), "junk made a session");

    let mut src = lab.source(16, false);
    let before = src.outer.wait_tick(2, PATIENCE);
    let report = migrate_ok(&lab, &src, &agent, "after junk");
    let _restored = assert_moved(&lab, &mut src, &report, &before, "after junk");
    assert!(agent.running(), "the agent died: {}", agent.log());
    drop(idle);
}

#[test]
fn a_peer_that_is_not_an_agent_is_refused() {
    if testkit::real_criu("a_peer_that_is_not_an_agent_is_refused").is_none() {
        return;
    }
    let lab = Lab::new("mfake");
    let src = lab.source(16, false);
    let before = src.outer.wait_tick(2, PATIENCE);
    let stop = Arc::new(AtomicBool::new(false));
    // In dst: one listener that answers every connection with junk, one
    // that accepts and says nothing.
    let b_addr = lab.hosts.veth.b_addr.clone();
    let (chatty, silent) = lab.hosts.dst.run(|| {
        (
            TcpListener::bind((b_addr.as_str(), PORT)).unwrap(),
            TcpListener::bind((b_addr.as_str(), PORT + 1)).unwrap(),
        )
    });
    let stop_chatty = Arc::clone(&stop);
    let chatty = std::thread::spawn(move || {
        for conn in chatty.incoming() {
            if stop_chatty.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            // A frame of 48 bytes that is no Noise message; then wait for
            // the source to hang up (closing first could reset the
            // connection before the source reads the frame).
            let _ = conn.write_all(b"\x00\x30SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n........");
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = conn.read_to_end(&mut Vec::new());
        }
    });
    let stop_silent = Arc::clone(&stop);
    let silent = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            if stop_silent.load(Ordering::Relaxed) {
                break;
            }
            held.extend(conn.ok());
        }
    });

    let mut run = lab.migrate(src.inner, &lab.agent_addr(), &lab.key, &[]);
    let done = finish(&mut run, "a peer answering junk");
    let line = assert_failed(
        &done,
        &["does not speak the crabmigrate protocol"],
        "junk peer",
    );
    println!("junk peer: failed after {:?}: {line}", done.took);
    src.assert_still_on_source(&lab.hosts.src, &before, "junk peer");

    let to = format!("{b_addr}:{}", PORT + 1);
    let mut run = lab.migrate(src.inner, &to, &lab.key, &[]);
    let done = finish(&mut run, "a silent peer");
    let line = assert_failed(&done, &["did not complete the handshake"], "silent peer");
    println!("silent peer: failed after {:?}: {line}", done.took);
    src.assert_still_on_source(&lab.hosts.src, &before, "silent peer");

    stop.store(true, Ordering::Relaxed);
    for port in [PORT, PORT + 1] {
        let target = format!("{b_addr}:{port}");
        let _ = lab.hosts.src.run(|| TcpStream::connect(target.as_str()));
    }
    chatty.join().unwrap();
    silent.join().unwrap();
}

#[test]
fn agent_killed_mid_transfer_rolls_back() {
    if testkit::real_criu("agent_killed_mid_transfer_rolls_back").is_none() {
        return;
    }
    let lab = Lab::new("mkill");
    let mut agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let src = lab.source(128, false);
    let before = src.outer.wait_tick(2, PATIENCE);

    let mut run = lab.migrate(src.inner, &lab.agent_addr(), &lab.key, &[]);
    wait_page_stream(&agent, &mut run, "agent killed");
    agent.run.kill();
    let killed_at = Instant::now();
    let done = finish(&mut run, "agent killed");
    let line = assert_rolled_back(&done, "agent killed");
    println!(
        "agent killed: migrate failed {:?} later: {line}",
        killed_at.elapsed()
    );
    src.assert_still_on_source(&lab.hosts.src, &before, "agent killed");
    assert_nothing_on(&lab.hosts.dst, None, "agent killed");
}

#[test]
fn post_copy_agent_killed_after_the_switch_ends_in_doubt_with_no_copy_running() {
    if testkit::real_criu(
        "post_copy_agent_killed_after_the_switch_ends_in_doubt_with_no_copy_running",
    )
    .is_none()
    {
        return;
    }
    let lab = Lab::new("mpkill");
    let mut agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let src = lab.source(256, false);
    let before = src.outer.wait_tick(2, PATIENCE);

    // Once the destination runs the workload, most pages are still on the
    // source; the agent (and its lazy-pages daemon) dies then. Its
    // watchdog kills the destination's copy; the source cannot know that,
    // so it keeps its copy stopped (in doubt) until told: the resume
    // command then brings it back intact.
    let mut run = lab.migrate_with(
        "post-copy",
        src.inner,
        &lab.agent_addr(),
        &lab.key,
        &["--json"],
    );
    let committed = wait_until(PATIENCE, || {
        (agent.log().contains("migration committed") || !run.running()).then_some(())
    });
    assert!(
        committed.is_some() && run.running(),
        "post-copy did not reach the switch; migrate: {}; agent: {}",
        run.stderr(),
        agent.log()
    );
    // The destination's copy, in case it outlives the test.
    let _copy = agent
        .log()
        .lines()
        .find(|l| l.contains("migration committed"))
        .and_then(|l| {
            l.split("pid=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .map(PidGuard::new);
    agent.run.kill();
    let killed_at = Instant::now();
    let done = finish(&mut run, "post-copy agent killed");
    let (resume, _discard) = assert_in_doubt(&done, "post-copy agent killed");
    println!(
        "post-copy agent killed: migrate ended {:?} later, in doubt",
        killed_at.elapsed()
    );
    assert_nothing_on(&lab.hosts.dst, None, "post-copy agent killed");
    let stopped = wait_until(PATIENCE, || {
        (proc_state(src.inner) == Some('T')).then_some(())
    });
    assert!(
        stopped.is_some(),
        "the source is stopped: {:?}",
        proc_state(src.inner)
    );
    recover(&resume, "post-copy agent killed");
    src.assert_still_on_source(&lab.hosts.src, &before, "post-copy agent killed, resumed");
}

#[test]
fn link_cut_mid_transfer_loses_nothing() {
    if testkit::real_criu("link_cut_mid_transfer_loses_nothing").is_none() {
        return;
    }
    let lab = Lab::new("mcut");
    let agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let mut src = lab.source(128, false);
    let before = src.outer.wait_tick(2, PATIENCE);
    let dev = device_with(&lab.hosts.src, &lab.hosts.veth.a_addr);

    let mut run = lab.migrate(src.inner, &lab.agent_addr(), &lab.key, &["--json"]);
    wait_page_stream(&agent, &mut run, "link cut");
    crate::netns::ip(&["-n", lab.hosts.src.name(), "link", "set", &dev, "down"]);
    let cut_at = Instant::now();
    if let Some(done) = run.wait(CUT_BOUND) {
        let line = assert_rolled_back(&done, "link cut");
        println!(
            "link cut: migrate failed {:?} later: {line}",
            cut_at.elapsed()
        );
        src.assert_still_on_source(&lab.hosts.src, &before, "link cut");
        return;
    }
    let frozen = proc_state(src.inner);
    println!(
        "link cut: migrate still runs {:?} after the cut (source in state {frozen:?}); \
         no timeout on a dead link yet, bringing the link back",
        cut_at.elapsed()
    );
    if MIGRATE_TIMES_OUT_ON_A_DEAD_LINK {
        panic!("migrate did not give up within {CUT_BOUND:?} of the link dying");
    }
    crate::netns::ip(&["-n", lab.hosts.src.name(), "link", "set", &dev, "up"]);
    let done = finish(&mut run, "link restored");
    println!(
        "link cut: migrate ended {:?} after the link came back ({})",
        cut_at.elapsed().saturating_sub(CUT_BOUND),
        done.status
    );
    // Exactly one copy runs: moved, or rolled back.
    if done.status.success() {
        let report: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
        let _restored = assert_moved(&lab, &mut src, &report, &before, "link restored");
    } else {
        assert_rolled_back(&done, "link restored");
        src.assert_still_on_source(&lab.hosts.src, &before, "link restored");
        assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "link restored");
    }
}

#[test]
fn destination_without_space_refuses_up_front() {
    if testkit::real_criu("destination_without_space_refuses_up_front").is_none() {
        return;
    }
    let lab = Lab::new("mfull");
    let work = lab.tmp.path().join("agent-tmpfs");
    let _tmpfs = Tmpfs::mount(&work, "8m");
    let mut agent = lab.agent(&lab.key, &work);
    let src = lab.source(64, false);
    let before = src.outer.wait_tick(2, PATIENCE);

    let mut run = lab.migrate(src.inner, &lab.agent_addr(), &lab.key, &[]);
    let done = finish(&mut run, "no space");
    let line = assert_failed(&done, &["refused", "not enough space"], "no space");
    println!("no space: refused after {:?}: {line}", done.took);
    src.assert_still_on_source(&lab.hosts.src, &before, "no space");
    assert!(agent.running(), "the agent died: {}", agent.log());
    agent.wait_sessions_gone();
    assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "no space");
    drop(agent);
}

#[test]
fn space_check_counts_the_whole_tree() {
    if testkit::real_criu("space_check_counts_the_whole_tree").is_none() {
        return;
    }
    let lab = Lab::new("mfill");
    let work = lab.tmp.path().join("agent-tmpfs");
    // A shell of a few MiB whose child holds 128 MiB: the space check must
    // count the child too (it once counted the root only, and the transfer
    // then ran out of space half way).
    let _tmpfs = Tmpfs::mount(&work, "100m");
    let mut agent = lab.agent(&lab.key, &work);
    let src = lab.source(128, true);
    let before = src.outer.wait_tick(2, PATIENCE);

    let mut run = lab.migrate(src.inner, &lab.agent_addr(), &lab.key, &[]);
    let done = finish(&mut run, "tree too big");
    let line = assert_failed(&done, &["refused", "not enough space"], "tree too big");
    println!("tree too big: refused after {:?}: {line}", done.took);
    src.assert_still_on_source(&lab.hosts.src, &before, "tree too big");
    assert!(agent.running(), "the agent died: {}", agent.log());
    agent.wait_sessions_gone();
    assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "tree too big");
    drop(agent);
}

// ---------------------------------------------------------------------------
// Bad command lines

/// Runs `crabmigrate ARGS` and checks it fails with one error line holding
/// every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let mut run = Running::start(testkit::crabmigrate().args(args));
    let done = run.wait(PATIENCE).expect("crabmigrate ends");
    assert_failed(&done, needles, &args.join(" "))
}

#[test]
fn bad_key_files_and_addresses_are_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    keygen(&key);
    let key_s = key.to_str().unwrap();
    let missing = tmp.path().join("missing");
    let missing_s = missing.to_str().unwrap();
    let work = tmp.path().join("work");
    let work_s = work.to_str().unwrap();

    for args in [
        &["migrate", "--pid", "1", "--to", "127.0.0.1:9"][..],
        &["agent", "--listen", "127.0.0.1:0", "--work-dir", work_s][..],
    ] {
        let mut with_key = args.to_vec();
        with_key.extend(["--key-file", missing_s]);
        refused(&with_key, &["does not exist", "keygen"]);
    }

    let open = tmp.path().join("open-key");
    std::fs::copy(&key, &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open_s = open.to_str().unwrap();
    refused(
        &[
            "migrate",
            "--pid",
            "1",
            "--to",
            "127.0.0.1:9",
            "--key-file",
            open_s,
        ],
        &["can be read by others", &format!("chmod 600 {open_s}")],
    );
    refused(
        &[
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            open_s,
            "--work-dir",
            work_s,
        ],
        &["chmod 600"],
    );

    let garbage = tmp.path().join("garbage-key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &[
            "migrate",
            "--pid",
            "1",
            "--to",
            "127.0.0.1:9",
            "--key-file",
            garbage.to_str().unwrap(),
        ],
        &["64 hex digits", "keygen"],
    );

    for listen in [
        "nonsense",
        "127.0.0.1",
        "host.example:7070",
        "127.0.0.1:99999",
    ] {
        refused(
            &[
                "agent",
                "--listen",
                listen,
                "--key-file",
                key_s,
                "--work-dir",
                work_s,
            ],
            &["is not ADDR:PORT"],
        );
    }
}

#[test]
fn a_missing_process_or_agent_is_refused() {
    if testkit::real_criu("a_missing_process_or_agent_is_refused").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    keygen(&key);
    let key_s = key.to_str().unwrap();
    let work = tmp.path().join("work");
    let work_s = work.to_str().unwrap();

    refused(
        &[
            "migrate",
            "--pid",
            "4000000",
            "--to",
            "127.0.0.1:9",
            "--key-file",
            key_s,
            "--work-dir",
            work_s,
        ],
        &["process 4000000 does not exist"],
    );

    // Nothing listens in a fresh namespace. The target is a process of
    // ours that nothing could harm: the connection fails first.
    let ns = NetNs::new("mnone");
    let mut target = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = target.id().to_string();
    let mut run = Running::start(
        ns.command(testkit::program("crabmigrate"))
            .args([
                "migrate",
                "--pid",
                &pid,
                "--to",
                "127.0.0.1:7070",
                "--key-file",
                key_s,
            ])
            .args(["--work-dir", work_s]),
    );
    let done = run.wait(PATIENCE).expect("migrate ends");
    let _ = target.kill();
    let _ = target.wait();
    assert_failed(
        &done,
        &["cannot connect to the agent at 127.0.0.1:7070", "refused"],
        "nothing listens",
    );
}

#[test]
fn health_check_decides_the_cut_over() {
    if testkit::real_criu("health_check_decides_the_cut_over").is_none() {
        return;
    }
    let lab = Lab::new("mhealth");
    let mut agent = lab.agent_with(
        &lab.key,
        &lab.dir("agent-work"),
        &["--health-check", "failing=exit 3"],
    );

    // A failing check: the destination drops its copy, the source resumes.
    let src = lab.source(16, false);
    let before = src.outer.wait_tick(2, PATIENCE);
    let mut run = lab.migrate(
        src.inner,
        &lab.agent_addr(),
        &lab.key,
        &["--health-check", "failing"],
    );
    let done = finish(&mut run, "failing health check");
    let line = assert_rolled_back(&done, "failing health check");
    assert!(line.contains("health check failed"), "{line}");
    src.assert_still_on_source(&lab.hosts.src, &before, "failing health check");
    assert!(agent.running(), "the agent died: {}", agent.log());
    agent.wait_sessions_gone();
    assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "failing health check");
    drop(src);
    drop(agent);

    // A passing check: the migration commits (a fresh lab: the first
    // workload's executable copy may still be busy).
    let lab = Lab::new("mhealthy");
    let agent = lab.agent_with(
        &lab.key,
        &lab.dir("agent-work"),
        &["--health-check", "ready=kill -0 \"$CRABMIGRATE_PID\""],
    );
    let mut src = lab.source(16, false);
    src.outer.wait_tick(2, PATIENCE);
    let before = src.tick();
    let mut run = lab.migrate(
        src.inner,
        &lab.agent_addr(),
        &lab.key,
        &["--health-check", "ready", "--json"],
    );
    let done = finish(&mut run, "passing health check");
    assert!(
        done.status.success(),
        "passing health check: {}\nagent: {}",
        done.stderr,
        agent.log()
    );
    let report: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let restored = assert_moved(&lab, &mut src, &report, &before, "passing health check");
    assert!(restored.alive());
}
