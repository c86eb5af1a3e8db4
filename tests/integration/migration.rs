//! Live migration through the CLI between two namespace "hosts": `src`
//! runs the workload and `crabmigrate migrate`, `dst` runs
//! `crabmigrate agent`; a veth joins them and both share the file system,
//! so the workload's state file shows which copy runs.
//!
//! The workload is pid 1 of its own pid namespace (`unshare --pid --fork`),
//! so the destination can restore it while the source still exists, and it
//! runs from a private copy of `crabmigrate-workload` (see
//! [`workload_program`]). Migrations here ask for stop-copy explicitly,
//! except one post-copy fault.
//!
//! Covered: a 64 MiB stop-copy that ends with the workload counting on in
//! `dst` and gone from `src`; a wrong key; junk and idle connections to the
//! agent; a peer that is not an agent; the agent killed mid-transfer (and,
//! in post-copy, right after the switch); the link cut mid-transfer; the
//! destination out of space (refused up front, and running out
//! mid-transfer); one byte altered in transit; bad command lines. After every failure the workload must still run on the
//! source, unfrozen, with the same memory, and nothing may run on the
//! destination.
//!
//! Everything a test starts is undone on drop, also when it panics: agents
//! and migrations are killed (SIGKILL) and reaped, the workload's pid-1
//! process is killed with SIGKILL (pid 1 of a namespace ignores SIGTERM),
//! tmpfs mounts are unmounted and the namespaces deleted. Durations are
//! printed (`--nocapture`), never asserted.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::{wait_until, Tick, Workload};

use crate::netns::{NetNs, TwoHosts};
use crate::page_server::{continued, workload_program, PATIENCE};

/// The agent's port. Every test has its own `dst` namespace, so a fixed
/// port cannot collide.
const PORT: u16 = 7070;

/// Whether the test demands that `migrate` gives up by itself when the link
/// to the agent dies mid-transfer. The connections now carry TCP keepalive
/// and a 30 s TCP_USER_TIMEOUT, so it does, after about 30 s; the test
/// keeps a [`CUT_BOUND`] of 10 s to stay fast, brings the link back and
/// checks that exactly one copy runs. Set this to `true` (with a bound
/// above 30 s) to demand the rollback.
const MIGRATE_TIMES_OUT_ON_A_DEAD_LINK: bool = false;

/// How long the link stays cut before the test looks at the outcome.
const CUT_BOUND: Duration = Duration::from_secs(10);

/// Whether a failure of the page stream on the destination (its page
/// server out of space, a frame altered in transit) reaches the user: the
/// agent watches the stream while it receives the images and refuses with
/// the cause, which the source reads when its dump fails with "Can't write
/// pages to socket: Broken pipe".
const DESTINATION_REPORTS_PAGE_STREAM_FAILURES: bool = true;

// ---------------------------------------------------------------------------
// Processes

/// `/proc/PID/stat` field 22: when the process started, in clock ticks
/// since boot. A pid with another start time is another process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// `/proc/PID/stat` field 3: R, S, D, t (traced, e.g. frozen by CRIU), Z...
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.chars().next()
}

/// The (device, inode) of a network namespace file.
fn netns_id(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether `pid` lives in `ns`.
fn runs_in(pid: u32, ns: &NetNs) -> bool {
    let theirs = netns_id(&PathBuf::from(format!("/proc/{pid}/ns/net")));
    theirs.is_some() && theirs == netns_id(&ns.path())
}

/// Every process in `ns` except `except`.
fn pids_in(ns: &NetNs, except: &[u32]) -> Vec<(u32, String)> {
    let Some(wanted) = netns_id(&ns.path()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if except.contains(&pid)
            || proc_state(pid) == Some('Z')
            || netns_id(&entry.path().join("ns/net")) != Some(wanted)
        {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        found.push((pid, cmdline));
    }
    found
}

/// SIGKILLs a process that is not our child on drop, if it is still the
/// same process (its pid may have been reused by then).
#[derive(Debug)]
struct PidGuard {
    pid: u32,
    started: Option<u64>,
}

impl PidGuard {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            started: start_time(pid),
        }
    }

    /// Whether the guarded process still exists (a zombie counts as gone).
    fn alive(&self) -> bool {
        self.started.is_some()
            && start_time(self.pid) == self.started
            && proc_state(self.pid) != Some('Z')
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if self.started.is_some() && start_time(self.pid) == self.started {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A child whose standard output and error are collected by reader threads;
/// killed (SIGKILL) and reaped on drop unless it has ended.
#[derive(Debug)]
struct Running {
    child: Option<Child>,
    out: Option<JoinHandle<String>>,
    err: Arc<Mutex<String>>,
    err_reader: Option<JoinHandle<()>>,
    started: Instant,
}

/// How a [`Running`] child ended.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Running {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("program starts");
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let mut stderr = child.stderr.take().unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&err);
        let err_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child: Some(child),
            out: Some(out),
            err,
            err_reader: Some(err_reader),
            started: Instant::now(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What it wrote on stderr so far.
    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Whether it still runs.
    fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Waits up to `limit` for the end; `None` if it still runs.
    fn wait(&mut self, limit: Duration) -> Option<Finished> {
        let child = self.child.as_mut().expect("not waited for yet");
        let status = wait_until(limit, || child.try_wait().ok().flatten())?;
        let took = self.started.elapsed();
        self.child = None;
        let stdout = self.out.take().unwrap().join().unwrap();
        self.err_reader.take().unwrap().join().unwrap();
        Some(Finished {
            status,
            stdout,
            stderr: self.stderr(),
            took,
        })
    }

    /// SIGKILLs it and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The two hosts, the agent and the workload

/// A test's hosts, keys and directories.
struct Lab {
    hosts: TwoHosts,
    tmp: tempfile::TempDir,
    /// The key both sides hold (mode 0600).
    key: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("crabmigrate-mig-{tag}-"))
            .tempdir()
            .unwrap();
        let key = tmp.path().join("key");
        keygen(&key);
        Self {
            hosts: TwoHosts::new(tag),
            tmp,
            key,
        }
    }

    /// A new directory in the test's temporary directory.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The agent's `ADDR:PORT` in `dst`.
    fn agent_addr(&self) -> String {
        format!("{}:{PORT}", self.hosts.veth.b_addr)
    }

    /// Starts an agent in `dst` with `key`, working in `work`.
    fn agent(&self, key: &Path, work: &Path) -> Agent {
        self.agent_with(key, work, &[])
    }

    /// [`Lab::agent`] with more agent arguments.
    fn agent_with(&self, key: &Path, work: &Path, args: &[&str]) -> Agent {
        Agent::start(
            &self.hosts.dst,
            &self.agent_addr(),
            key,
            work,
            self.tmp.path(),
            args,
        )
    }

    /// The workload (`mem_mib` MiB) as pid 1 of its own pid namespace in
    /// `src`. With `under_shell`, pid 1 is a shell whose child is the
    /// workload (a tree whose root holds little memory).
    fn source(&self, mem_mib: usize, under_shell: bool) -> Source {
        let dir = self.dir(&format!("workload-{mem_mib}-{under_shell}"));
        let state = dir.join("state");
        let program = workload_program(&dir);
        let mut cmd = self.hosts.src.command("unshare");
        cmd.args(["--pid", "--fork"]);
        let args = ["--setsid", "--mem-mib", &mem_mib.to_string(), "--out"];
        if under_shell {
            // setsid: pid 1 must lead its session for CRIU.
            cmd.args(["setsid", "sh", "-c", "\"$0\" \"$@\" & wait"])
                .arg(&program)
                .args(args)
                .arg(&state);
        } else {
            cmd.arg(&program).args(args).arg(&state);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let outer = Workload::spawn(cmd, &state);
        let children = format!("/proc/{0}/task/{0}/children", outer.pid());
        let inner: u32 = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no child in {children}"));
        let inner_guard = PidGuard::new(inner);
        let pid_in_ns = if under_shell { 2 } else { 1 };
        assert_eq!(
            outer.tick().pid,
            pid_in_ns,
            "the workload's pid in its namespace"
        );
        Source {
            inner_guard,
            outer,
            inner,
            state,
        }
    }

    /// `crabmigrate migrate --strategy stop-copy --pid PID --to TO
    /// --key-file KEY --work-dir WORK ARGS...`, started in `src`.
    fn migrate(&self, pid: u32, to: &str, key: &Path, args: &[&str]) -> Running {
        self.migrate_with("stop-copy", pid, to, key, args)
    }

    /// [`Lab::migrate`] with another strategy.
    fn migrate_with(
        &self,
        strategy: &str,
        pid: u32,
        to: &str,
        key: &Path,
        args: &[&str],
    ) -> Running {
        let work = self.dir("migrate-work");
        Running::start(
            self.hosts
                .src
                .command(testkit::program("crabmigrate"))
                .args(["migrate", "--strategy", strategy, "--pid"])
                .arg(pid.to_string())
                .args(["--to", to, "--key-file"])
                .arg(key)
                .arg("--work-dir")
                .arg(work)
                .args(args),
        )
    }
}

/// `crabmigrate keygen --out PATH`.
fn keygen(path: &Path) {
    let out = testkit::run(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `crabmigrate agent` running in a namespace.
struct Agent {
    run: Running,
    work: PathBuf,
    /// The agent's container state root.
    root: PathBuf,
}

impl Agent {
    fn start(ns: &NetNs, listen: &str, key: &Path, work: &Path, tmp: &Path, args: &[&str]) -> Self {
        let mut run = Running::start(
            ns.command(testkit::program("crabmigrate"))
                .args(["--log-level", "info", "--root"])
                .arg(tmp.join("agent-root"))
                .args(["agent", "--listen", listen, "--key-file"])
                .arg(key)
                .arg("--work-dir")
                .arg(work)
                .args(args),
        );
        let ready = wait_until(PATIENCE, || {
            (run.stderr().contains("agent listening on ") || !run.running()).then_some(())
        });
        assert!(
            ready.is_some() && run.running(),
            "the agent did not start listening on {listen}: {}",
            run.stderr()
        );
        Self {
            run,
            work: work.to_path_buf(),
            root: tmp.join("agent-root"),
        }
    }

    fn pid(&self) -> u32 {
        self.run.pid()
    }

    fn log(&self) -> String {
        self.run.stderr()
    }

    fn running(&mut self) -> bool {
        self.run.running()
    }

    /// The agent's session directories (one per migration in progress),
    /// and received bundles without a container.
    fn sessions(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.work.join("sessions"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.extend(
            std::fs::read_dir(self.work.join("bundles"))
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !self.root.join(p.file_name().unwrap_or_default()).exists()),
        );
        found
    }

    /// Waits until the agent has removed every session directory.
    fn wait_sessions_gone(&self) {
        let gone = wait_until(PATIENCE, || self.sessions().is_empty().then_some(()));
        assert!(
            gone.is_some(),
            "the agent left {:?} behind; log: {}",
            self.sessions(),
            self.log()
        );
    }
}

/// The workload in `src`: `outer` is the `unshare` (our child), `inner`
/// the pid-1 process of its namespace, the root of the tree to migrate.
struct Source {
    /// Declared first: kills the tree's root before `outer` is reaped.
    inner_guard: PidGuard,
    outer: Workload,
    inner: u32,
    state: PathBuf,
}

impl Source {
    fn tick(&self) -> Tick {
        Tick::read(&self.state).expect("state file readable")
    }

    /// Checks that the workload still runs on the source as before the
    /// failed migration `what`: same process, in `src`, not frozen, memory
    /// intact, and counting on.
    fn assert_still_on_source(&self, ns: &NetNs, before: &Tick, what: &str) {
        assert!(
            self.inner_guard.alive(),
            "{what}: the source process {} is gone",
            self.inner
        );
        assert!(runs_in(self.inner, ns), "{what}: {} left src", self.inner);
        let now = self.tick();
        let after = continued(&self.state, &now);
        assert_eq!(after.checksum, before.checksum, "{what}: memory changed");
        assert_eq!(
            after.pid, before.pid,
            "{what}: another process writes the state"
        );
        let state = proc_state(self.inner);
        assert!(
            matches!(state, Some('R' | 'S' | 'D')),
            "{what}: the source is in state {state:?} (frozen?)"
        );
    }
}

/// Waits until nothing but the agent runs in `dst` (a failed migration
/// leaves no restored copy, page server or CRIU behind).
fn assert_nothing_on(ns: &NetNs, agent: Option<u32>, what: &str) {
    let except: Vec<u32> = agent.into_iter().collect();
    let clear = wait_until(Duration::from_secs(20), || {
        pids_in(ns, &except).is_empty().then_some(())
    });
    assert!(
        clear.is_some(),
        "{what}: still running on the destination: {:?}",
        pids_in(ns, &except)
    );
}

/// Checks a failed `crabmigrate` run: exit status 1 and one line on stderr
/// (`crabmigrate: error: ...`) containing every one of `needles`; returns
/// that line.
fn assert_failed(done: &Finished, needles: &[&str], what: &str) -> String {
    let text = done.stderr.trim();
    assert_eq!(
        done.status.code(),
        Some(1),
        "{what}: exit status {}; stdout: {}; stderr: {text}",
        done.status,
        done.stdout
    );
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("crabmigrate: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{what}: one error line expected: {text}");
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "{what}: {needle:?} missing from the error: {}",
            errors[0]
        );
    }
    errors[0].to_owned()
}

/// Checks a rolled-back migration's message.
fn assert_rolled_back(done: &Finished, what: &str) -> String {
    assert_failed(
        done,
        &["rolled back", "the workload keeps running on the source"],
        what,
    )
}

/// Waits for a migration that must end, with a bound.
fn finish(run: &mut Running, what: &str) -> Finished {
    run.wait(PATIENCE * 2)
        .unwrap_or_else(|| panic!("{what}: migrate still runs after {:?}", PATIENCE * 2))
}

/// Runs a successful stop-copy migration of `src` and returns its JSON
/// report.
fn migrate_ok(lab: &Lab, src: &Source, agent: &Agent, what: &str) -> serde_json::Value {
    migrate_ok_with(lab, "stop-copy", src, agent, &[], what)
}

/// [`migrate_ok`] with another strategy and more arguments.
fn migrate_ok_with(
    lab: &Lab,
    strategy: &str,
    src: &Source,
    agent: &Agent,
    args: &[&str],
    what: &str,
) -> serde_json::Value {
    let args: Vec<&str> = ["--json"].iter().chain(args).copied().collect();
    let mut run = lab.migrate_with(strategy, src.inner, &lab.agent_addr(), &lab.key, &args);
    let done = finish(&mut run, what);
    assert!(
        done.status.success(),
        "{what}: migrate failed ({}): {}\nagent: {}",
        done.status,
        done.stderr,
        agent.log()
    );
    println!("{what}: migrated in {:?}", done.took);
    serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("{what}: the report is not JSON ({e}): {}", done.stdout))
}

/// After a successful migration: the source is gone, the copy runs in
/// `dst` at the reported pid and continues from `before` with the same
/// memory. Returns the guard of the restored process.
fn assert_moved(
    lab: &Lab,
    src: &mut Source,
    report: &serde_json::Value,
    before: &Tick,
    what: &str,
) -> PidGuard {
    let pid = report["destination_pid"].as_u64().unwrap_or(0) as u32;
    assert!(pid > 0, "{what}: destination_pid in {report}");
    let restored = PidGuard::new(pid);
    assert!(
        runs_in(pid, &lab.hosts.dst),
        "{what}: pid {pid} does not live in dst"
    );
    let nspid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .map(|l| l.split_whitespace().last().unwrap().to_owned());
    assert_eq!(
        nspid.as_deref(),
        Some("1"),
        "{what}: pid 1 of a restored pid namespace"
    );
    // The unshare parent sees its child killed and exits; the original
    // tree is gone.
    let outer = src.outer.child.as_mut().unwrap();
    let ended = wait_until(PATIENCE, || outer.try_wait().ok().flatten());
    assert!(ended.is_some(), "{what}: the source's unshare still runs");
    src.outer.reap();
    assert!(
        !src.inner_guard.alive(),
        "{what}: the source process {} still exists",
        src.inner
    );
    let first = continued(&src.state, before);
    let second = continued(&src.state, &first);
    assert_eq!(
        first.checksum, before.checksum,
        "{what}: memory arrived intact"
    );
    assert_eq!(
        second.checksum, before.checksum,
        "{what}: memory stays intact"
    );
    assert_eq!(second.pid, 1);
    restored
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// The name of the interface holding `addr` in `ns`.
fn device_with(ns: &NetNs, addr: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-o", "-4", "addr", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains(&format!(" {addr}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|d| d.split('@').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no interface with {addr} in {}: {text}", ns.name()))
}

/// Waits until the agent has a session receiving pages (its page server
/// wrote `pages-*.img`): the source is frozen and the page stream flows.
fn wait_page_stream(agent: &Agent, run: &mut Running, what: &str) {
    let flowing = wait_until(PATIENCE, || {
        let pages = agent.sessions().into_iter().any(|s| {
            std::fs::read_dir(s.join("images"))
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("pages-"))
                })
                .unwrap_or(false)
        });
        (pages || !run.running()).then_some(())
    });
    assert!(
        flowing.is_some() && run.running(),
        "{what}: no page stream began; migrate: {}; agent: {}",
        run.stderr(),
        agent.log()
    );
}

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

/// Checks a migration that ended in doubt (exit status 3) and returns its
/// resume and discard commands, as the message prints them.
fn assert_in_doubt(done: &Finished, what: &str) -> (String, String) {
    let text = done.stderr.trim();
    assert_eq!(
        done.status.code(),
        Some(3),
        "{what}: exit status {}; stderr: {text}",
        done.status
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("crabmigrate: error: "))
        .unwrap_or_else(|| panic!("{what}: no error line: {text}"));
    assert!(
        line.contains("in doubt") && line.contains("kept stopped"),
        "{what}: {line}"
    );
    let quoted: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
    let discard = quoted
        .iter()
        .find(|q| q.contains("--discard"))
        .unwrap_or_else(|| panic!("{what}: {line}"));
    let resume = quoted
        .iter()
        .find(|q| q.contains("--resume"))
        .unwrap_or_else(|| panic!("{what}: {line}"));
    ((*resume).to_owned(), (*discard).to_owned())
}

/// Runs a printed `crabmigrate recover ...` command line.
fn recover(command: &str, what: &str) {
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = testkit::crabmigrate().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: `{command}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// A TCP relay in a namespace that forwards to `upstream` and, in the
/// client-to-server direction of every connection, flips one byte in the
/// middle of the first frame (u16 length + Noise message) that ends past
/// `after` bytes of the stream. A relayed connection ends like a broken
/// TCP connection would: when one side fails, both sides are hung up on.
struct TamperingRelay {
    addr: String,
    stop: Arc<AtomicBool>,
    flipped: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl TamperingRelay {
    fn start(ns: &NetNs, upstream: String, after: usize) -> Self {
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flipped = Arc::new(AtomicUsize::new(0));
        let netns = std::fs::File::open(ns.path()).unwrap();
        let (stop2, flipped2) = (Arc::clone(&stop), Arc::clone(&flipped));
        let acceptor = std::thread::spawn(move || {
            // Outgoing connections must start in the namespace too.
            nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c_read, s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let flipped = Arc::clone(&flipped2);
                std::thread::spawn(move || tamper(c_read, s_write, after, &flipped));
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server, client);
                    match std::io::copy(&mut from, &mut to) {
                        Ok(_) => {
                            let _ = to.shutdown(Shutdown::Write);
                        }
                        Err(_) => hang_up(&from, &to),
                    }
                });
            }
        });
        Self {
            addr,
            stop,
            flipped,
            acceptor: Some(acceptor),
        }
    }
}

/// Ends both connections of a relayed pair, so that both directions stop
/// and close them.
fn hang_up(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Copies frames from `from` to `to`, flipping one byte once.
fn tamper(mut from: TcpStream, mut to: TcpStream, after: usize, flipped: &AtomicUsize) {
    let mut seen = 0usize;
    let mut done = false;
    let mut frame = vec![0u8; 65_537];
    // The plain greeting (magic and version) comes before the frames.
    let mut greeting = [0u8; 16];
    if from.read_exact(&mut greeting).is_err() || to.write_all(&greeting).is_err() {
        return hang_up(&from, &to);
    }
    loop {
        match from.read_exact(&mut frame[..2]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Err(_) => return hang_up(&from, &to),
        }
        let len = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
        if from.read_exact(&mut frame[2..2 + len]).is_err() {
            return hang_up(&from, &to);
        }
        seen += 2 + len;
        if !done && seen > after && len > 32 {
            frame[2 + len / 2] ^= 0x20;
            done = true;
            flipped.fetch_add(1, Ordering::Relaxed);
        }
        if to.write_all(&frame[..2 + len]).is_err() {
            return hang_up(&from, &to);
        }
    }
}

impl Drop for TamperingRelay {
    fn drop(&mut self) {
        // Relayed connections end with their ends (the migration and the
        // agent, killed by their guards).
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

#[test]
fn an_altered_byte_in_transit_rolls_back() {
    if testkit::real_criu("an_altered_byte_in_transit_rolls_back").is_none() {
        return;
    }
    let lab = Lab::new("mflip");
    let mut agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let src = lab.source(32, false);
    let before = src.outer.wait_tick(2, PATIENCE);
    let relay = TamperingRelay::start(&lab.hosts.src, lab.agent_addr(), 100 << 10);

    let mut run = lab.migrate(src.inner, &relay.addr, &lab.key, &[]);
    let done = finish(&mut run, "altered byte");
    assert_eq!(
        relay.flipped.load(Ordering::Relaxed),
        1,
        "the relay altered one byte"
    );
    let line = assert_rolled_back(&done, "altered byte");
    println!("altered byte: failed after {:?}: {line}", done.took);
    if DESTINATION_REPORTS_PAGE_STREAM_FAILURES {
        assert!(line.contains("altered in transit"), "{line}");
        assert!(
            agent.log().contains("altered in transit"),
            "{}",
            agent.log()
        );
    }
    println!("altered byte: agent log: {}", agent.log());
    src.assert_still_on_source(&lab.hosts.src, &before, "altered byte");
    assert!(agent.running(), "the agent died: {}", agent.log());
    agent.wait_sessions_gone();
    assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "altered byte");
    drop(relay);
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

#[path = "migration_strategies.rs"]
mod strategies;
