//! Process trees holding sockets and files, through the CLI and a real CRIU
//! (4.2 or newer): a TCP echo server whose client, in another network
//! namespace, keeps one connection through checkpoint and restore; a UDP
//! service; `--tcp-close`, `--ext-unix-sk`, `--file-locks` and
//! `--link-remap`; and the refusals around them, each leaving the workload
//! running (or the checkpoint restorable).
//!
//! The server runs in the "server" namespace of a [`TwoHosts`] pair, and so
//! does crabmigrate (CRIU must share the tree's network namespace, or it
//! would dump the namespace itself); the client runs in the other one.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use testkit::{KillOnDrop, Workload};

use crate::netns::{NetNs, TwoHosts};

/// Generous: CRIU is slow on a busy machine.
const LIMIT: Duration = Duration::from_secs(30);
/// Time between two requests of a client.
const INTERVAL: Duration = Duration::from_millis(3);

/// A workload started with `extra` arguments from a private copy, in `ns`
/// or (None) in our own network namespace.
fn workload(ns: Option<&NetNs>, dir: &Path, extra: &[&str]) -> Workload {
    let state = dir.join("state");
    let program = testkit::private_copy("crabmigrate-workload", dir);
    let mut cmd = match ns {
        Some(ns) => ns.command(program),
        None => Command::new(program),
    };
    cmd.args(["--setsid", "--interval-ms", "20", "--out"])
        .arg(&state)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Workload::spawn(cmd, &state)
}

/// `crabmigrate ARGS` inside `ns`, or in our own network namespace.
fn crabmigrate(ns: Option<&NetNs>, args: &[&str]) -> Output {
    let program = testkit::program("crabmigrate");
    let mut cmd = match ns {
        Some(ns) => ns.command(program),
        None => Command::new(program),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("crabmigrate runs")
}

/// A test's scratch directory, with the checkpoint's images and the pid
/// file of the restore.
struct Scratch {
    tmp: tempfile::TempDir,
    images: String,
    pid_file: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("images").to_str().unwrap().to_owned();
        let pid_file = tmp.path().join("restored.pid");
        Self {
            tmp,
            images,
            pid_file,
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `checkpoint --pid PID --images-dir IMAGES FLAGS`.
    fn checkpoint(&self, ns: Option<&NetNs>, pid: u32, flags: &[&str]) -> Output {
        let pid = pid.to_string();
        let args = ["checkpoint", "--pid", &pid, "--images-dir", &self.images];
        crabmigrate(ns, &[&args[..], flags].concat())
    }

    /// `restore --images-dir IMAGES --detach --pid-file F FLAGS`.
    fn restore(&self, ns: Option<&NetNs>, flags: &[&str]) -> Output {
        let pid_file = self.pid_file.to_str().unwrap();
        let args = [
            "restore",
            "--images-dir",
            &self.images,
            "--detach",
            "--pid-file",
            pid_file,
        ];
        crabmigrate(ns, &[&args[..], flags].concat())
    }

    /// The restored root, killed on drop.
    fn restored(&self) -> KillOnDrop {
        let pid = std::fs::read_to_string(&self.pid_file).expect("pid file written");
        KillOnDrop(pid.trim().parse().expect("a pid"))
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a refusal: exit status 1 and a one-line error naming `needle`.
fn refused(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected a refusal: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("crabmigrate: error:"), "{err}");
    assert!(first.contains(needle), "{needle:?} not in {first:?}");
}

/// Whether `pid` names a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// A server workload (`--tcp-echo` or `--udp-echo` on the server host's
/// address and `port`) with a client on the other host.
struct Service {
    scratch: Scratch,
    hosts: TwoHosts,
    server: SocketAddr,
    workload: Workload,
    client: Client,
}

impl Service {
    fn start(tag: &str, echo: &str, port: u16) -> Self {
        let scratch = Scratch::new();
        let hosts = TwoHosts::new(tag);
        let server: SocketAddr = format!("{}:{port}", hosts.veth.a_addr).parse().unwrap();
        let workload = workload(
            Some(&hosts.src),
            scratch.dir(),
            &[echo, &server.to_string()],
        );
        let client = match echo {
            "--udp-echo" => Client::start(&hosts.dst, udp_client(server)),
            _ => Client::start(&hosts.dst, tcp_client(server)),
        };
        Self {
            scratch,
            hosts,
            server,
            workload,
            client,
        }
    }

    fn checkpoint(&self, flags: &[&str]) -> Output {
        self.scratch
            .checkpoint(Some(&self.hosts.src), self.workload.pid(), flags)
    }

    fn restore(&self, flags: &[&str]) -> Output {
        self.scratch.restore(Some(&self.hosts.src), flags)
    }
}

/// What a client saw.
#[derive(Debug, Default)]
struct ClientReport {
    replies: u64,
    largest_gap: Duration,
    error: Option<String>,
}

/// A client thread in a network namespace, sending a numbered request every
/// [`INTERVAL`] and checking each reply; stopped and joined by `finish`.
struct Client {
    stop: Arc<AtomicBool>,
    replies: Arc<AtomicU64>,
    thread: Option<JoinHandle<ClientReport>>,
}

impl Client {
    fn start(
        ns: &NetNs,
        body: impl FnOnce(&AtomicBool, &AtomicU64) -> ClientReport + Send + 'static,
    ) -> Self {
        let netns = File::open(ns.path()).expect("netns opens");
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), replies.clone());
        let thread = std::thread::spawn(move || {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            body(&s, &r)
        });
        Self {
            stop,
            replies,
            thread: Some(thread),
        }
    }

    fn replies(&self) -> u64 {
        self.replies.load(Ordering::SeqCst)
    }

    /// Waits until `n` replies arrived (panics with the client's error if it
    /// stopped first).
    fn wait_replies(&mut self, n: u64) {
        let done = testkit::wait_until(LIMIT, || {
            let finished = self.thread.as_ref().is_some_and(JoinHandle::is_finished);
            (self.replies() >= n || finished).then_some(())
        });
        if self.replies() < n {
            let report = self.finish();
            panic!(
                "the client got {} of {n} replies ({done:?}): {report:?}",
                report.replies
            );
        }
    }

    fn finish(&mut self) -> ClientReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("client thread"))
            .unwrap_or_default()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One TCP connection: a writer sends `req N` every [`INTERVAL`] without
/// waiting for answers (so requests are in flight while the server is
/// checkpointed: without CRIU's network lock, their retransmissions would
/// meet a host with no socket and be reset); the reader checks that reply
/// N is `SERVED req N`, SERVED going up by exactly one each time (one
/// process served every line, nothing lost, repeated or reordered). On stop
/// the writer stops and the reader waits for the last answer.
fn tcp_client(target: SocketAddr) -> impl FnOnce(&AtomicBool, &AtomicU64) -> ClientReport {
    move |stop, replies| {
        let mut report = ClientReport::default();
        let conn = match TcpStream::connect_timeout(&target, LIMIT) {
            Ok(c) => c,
            Err(e) => {
                report.error = Some(format!("connect: {e}"));
                return report;
            }
        };
        let _ = conn.set_read_timeout(Some(LIMIT));
        let mut writer = conn.try_clone().expect("clone");
        let sent = AtomicU64::new(0);
        let writer_done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    if writer.write_all(format!("req {n}\n").as_bytes()).is_err() {
                        break;
                    }
                    sent.store(n, Ordering::SeqCst);
                    std::thread::sleep(INTERVAL);
                }
                writer_done.store(true, Ordering::SeqCst);
            });
            let mut reader = BufReader::new(&conn);
            let mut served_before = None;
            let mut last = Instant::now();
            let mut n = 0u64;
            loop {
                // Read only answers to requests sent (a request is counted
                // once written), so the end never waits for one that was not.
                let done = writer_done.load(Ordering::SeqCst);
                if n >= sent.load(Ordering::SeqCst) {
                    if done {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                n += 1;
                let mut line = String::new();
                let error = match reader.read_line(&mut line) {
                    Ok(0) => Some(format!("connection closed before reply {n}")),
                    Ok(_) => check_reply(&line, n, &mut served_before),
                    Err(e) => Some(format!("reply {n}: {e}")),
                };
                if error.is_some() {
                    report.error = error;
                    stop.store(true, Ordering::SeqCst);
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    break;
                }
                report.largest_gap = report.largest_gap.max(last.elapsed());
                last = Instant::now();
                report.replies += 1;
                replies.store(report.replies, Ordering::SeqCst);
            }
        });
        report
    }
}

/// Checks reply `n`: `SERVED req N`, SERVED one more than the last one.
fn check_reply(line: &str, n: u64, served_before: &mut Option<u64>) -> Option<String> {
    let Some((served, rest)) = line.trim_end().split_once(' ') else {
        return Some(format!("reply {n} malformed: {line:?}"));
    };
    let Ok(served) = served.parse::<u64>() else {
        return Some(format!("reply {n} malformed: {line:?}"));
    };
    if rest != format!("req {n}") {
        return Some(format!("reply {n} is for {rest:?}"));
    }
    if let Some(before) = *served_before {
        if served != before + 1 {
            return Some(format!("served count went {before} -> {served}"));
        }
    }
    *served_before = Some(served);
    None
}

#[test]
fn a_tcp_client_stays_connected_through_checkpoint_and_restore() {
    let test = "a_tcp_client_stays_connected_through_checkpoint_and_restore";
    if testkit::real_criu(test).is_none() {
        return;
    }
    let mut svc = Service::start("tcpcr", "--tcp-echo", 7070);
    svc.client.wait_replies(50);

    // Without --tcp-established CRIU refuses, names the flag, and the server
    // keeps serving.
    refused(&svc.checkpoint(&[]), "--tcp-established");
    let served = svc.client.replies();
    svc.client.wait_replies(served + 20);

    let said = succeeded(
        &svc.checkpoint(&["--tcp-established"]),
        "checkpoint --tcp-established",
    );
    assert!(said.contains("network locked with iptables"), "{said}");
    let pid = svc.workload.pid();
    svc.workload.reap();
    let at_checkpoint = svc.client.replies();

    // Refused before CRIU starts: no --tcp-established, and a namespace
    // without the server's address.
    refused(&svc.restore(&[]), "--tcp-established");
    let elsewhere = svc
        .scratch
        .restore(Some(&svc.hosts.dst), &["--tcp-established"]);
    refused(
        &elsewhere,
        &format!("needs the address {}", svc.server.ip()),
    );
    assert!(
        !svc.scratch.pid_file.exists(),
        "a refused restore wrote a pid file"
    );
    assert!(!alive(pid), "a refused restore started the tree");

    succeeded(
        &svc.restore(&["--tcp-established"]),
        "restore --tcp-established",
    );
    let _restored = svc.scratch.restored();
    svc.client.wait_replies(at_checkpoint + 200);
    let report = svc.client.finish();
    assert!(report.error.is_none(), "the client saw {report:?}");
    println!(
        "{test}: {} replies, largest gap {:.0} ms (across checkpoint and restore)",
        report.replies,
        report.largest_gap.as_secs_f64() * 1000.0
    );
}

/// Datagrams `req N`, answered `SERVED req N` with SERVED rising (datagrams
/// sent while the server is checkpointed may be lost).
fn udp_client(target: SocketAddr) -> impl FnOnce(&AtomicBool, &AtomicU64) -> ClientReport {
    move |stop, replies| {
        let mut report = ClientReport::default();
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.connect(target).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut served_before = 0u64;
        let mut last = Instant::now();
        let mut n = 0u64;
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let _ = socket.send(format!("req {n}").as_bytes());
            let Ok(len) = socket.recv(&mut buf) else {
                continue; // lost while the server was away: ask again
            };
            let reply = String::from_utf8_lossy(&buf[..len]).into_owned();
            let Some((served, rest)) = reply.split_once(' ') else {
                report.error = Some(format!("malformed reply {reply:?}"));
                return report;
            };
            let served: u64 = served.parse().unwrap_or(0);
            if served <= served_before || !rest.starts_with("req ") {
                report.error = Some(format!("reply {reply:?} after served {served_before}"));
                return report;
            }
            served_before = served;
            report.largest_gap = report.largest_gap.max(last.elapsed());
            last = Instant::now();
            report.replies += 1;
            replies.store(report.replies, Ordering::SeqCst);
            std::thread::sleep(INTERVAL);
        }
        report
    }
}

#[test]
fn a_udp_service_answers_on_after_checkpoint_and_restore() {
    let test = "a_udp_service_answers_on_after_checkpoint_and_restore";
    if testkit::real_criu(test).is_none() {
        return;
    }
    let mut svc = Service::start("udpcr", "--udp-echo", 7071);
    svc.client.wait_replies(50);
    succeeded(&svc.checkpoint(&[]), "checkpoint of a UDP service");
    svc.workload.reap();
    let at_checkpoint = svc.client.replies();
    succeeded(&svc.restore(&[]), "restore of a UDP service");
    let _restored = svc.scratch.restored();
    // The served count goes on from where it was: the same process, restored.
    svc.client.wait_replies(at_checkpoint + 100);
    let report = svc.client.finish();
    assert!(report.error.is_none(), "the client saw {report:?}");
    println!(
        "{test}: {} replies, largest gap {:.0} ms",
        report.replies,
        report.largest_gap.as_secs_f64() * 1000.0
    );
}

#[test]
fn tcp_close_gives_connections_back_closed_and_the_listener_serves() {
    let test = "tcp_close_gives_connections_back_closed_and_the_listener_serves";
    if testkit::real_criu(test).is_none() {
        return;
    }
    let mut svc = Service::start("tcpclose", "--tcp-echo", 7072);
    svc.client.wait_replies(20);
    succeeded(&svc.checkpoint(&["--tcp-close"]), "checkpoint --tcp-close");
    svc.workload.reap();
    // The checkpoint says how it was taken: the restore must say so too.
    refused(&svc.restore(&["--tcp-established"]), "--tcp-close");
    succeeded(&svc.restore(&["--tcp-close"]), "restore --tcp-close");
    let _restored = svc.scratch.restored();

    // The old connection is gone (reset or closed), a new one is served.
    let report = svc.client.finish();
    assert!(
        report.error.is_some(),
        "the old connection survived: {report:?}"
    );
    let target = svc.server;
    let fresh = svc.hosts.dst.run(|| {
        let mut conn = TcpStream::connect_timeout(&target, LIMIT).expect("connect after restore");
        conn.set_read_timeout(Some(LIMIT)).unwrap();
        conn.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        line
    });
    assert!(fresh.ends_with(" hello\n"), "{fresh:?}");
}

/// A workload in our own network namespace holding what `extra` asks for:
/// its checkpoint without `flag` is refused naming the flag and the
/// workload ticks on; with `flag` it checkpoints, and restores with `flag`.
/// Returns the scratch directory and the restored root.
fn refused_without_then_restored(
    extra: &[&str],
    flag: &str,
    scratch: Scratch,
) -> (Scratch, KillOnDrop) {
    let mut workload = workload(None, scratch.dir(), extra);
    refused(&scratch.checkpoint(None, workload.pid(), &[]), flag);
    let before = workload.tick().counter;
    workload.wait_tick(before + 2, LIMIT);
    succeeded(
        &scratch.checkpoint(None, workload.pid(), &[flag]),
        &format!("checkpoint {flag}"),
    );
    workload.reap();
    succeeded(&scratch.restore(None, &[flag]), &format!("restore {flag}"));
    let restored = scratch.restored();
    (scratch, restored)
}

#[test]
fn ext_unix_sk_keeps_a_socket_connected_to_a_process_outside_the_tree() {
    let test = "ext_unix_sk_keeps_a_socket_connected_to_a_process_outside_the_tree";
    if testkit::real_criu(test).is_none() {
        return;
    }
    let scratch = Scratch::new();
    let path = scratch.dir().join("peer.sock");
    let peer = std::os::unix::net::UnixDatagram::bind(&path).expect("bind unix");
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let (_scratch, restored) = refused_without_then_restored(
        &["--unix-dgram", path.to_str().unwrap()],
        "--ext-unix-sk",
        scratch,
    );
    // The restored workload sends its ticks to the same peer (skip what the
    // original sent before it was dumped).
    let mut buf = [0u8; 256];
    let from_restored = testkit::wait_until(LIMIT, || {
        let len = peer.recv(&mut buf).ok()?;
        let tick = testkit::Tick::parse(std::str::from_utf8(&buf[..len]).ok()?)?;
        (tick.pid as i32 == restored.0).then_some(tick)
    });
    assert!(
        from_restored.is_some(),
        "no datagram from the restored workload"
    );
}

#[test]
fn file_locks_are_refused_without_the_flag_and_held_again_after_restore() {
    let test = "file_locks_are_refused_without_the_flag_and_held_again_after_restore";
    if testkit::real_criu(test).is_none() {
        return;
    }
    let scratch = Scratch::new();
    let lock = scratch.dir().join("lock");
    let (_scratch, _restored) = refused_without_then_restored(
        &["--flock", lock.to_str().unwrap()],
        "--file-locks",
        scratch,
    );
    assert!(locked(&lock), "the restored process does not hold its lock");
}

/// Whether someone holds a flock on `path` (our own try fails).
fn locked(path: &Path) -> bool {
    let file = File::open(path).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

#[test]
fn link_remap_dumps_an_open_file_deleted_under_another_name() {
    let test = "link_remap_dumps_an_open_file_deleted_under_another_name";
    if testkit::real_criu(test).is_none() {
        return;
    }
    let scratch = Scratch::new();
    let file = scratch.dir().join("data");
    let state = scratch.dir().join("state");
    let (_scratch, _restored) = refused_without_then_restored(
        &["--open-unlinked", file.to_str().unwrap()],
        "--link-remap",
        scratch,
    );
    // The workload checks every tick that its file reads back, and exits
    // otherwise: ticking on means the file came back.
    let after = testkit::Tick::read(&state).expect("a state line").counter;
    testkit::wait_until(LIMIT, || {
        testkit::Tick::read(&state).filter(|t| t.counter > after + 2)
    })
    .expect("the restored workload ticks on with its file");
}
