//! What every migration test uses: the two namespace hosts, the agent,
//! the workload, `crabmigrate` runs and their checks.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(super) use testkit::{wait_until, Tick, Workload};

pub(super) use crate::netns::{NetNs, TwoHosts};
pub(super) use crate::page_server::{continued, workload_program, PATIENCE};

/// The agent's port. Every test has its own `dst` namespace, so a fixed
/// port cannot collide.
pub(super) const PORT: u16 = 7070;

/// Whether the test demands that `migrate` gives up by itself when the link
/// to the agent dies mid-transfer. The connections now carry TCP keepalive
/// and a 30 s TCP_USER_TIMEOUT, so it does, after about 30 s; the test
/// keeps a [`CUT_BOUND`] of 10 s to stay fast, brings the link back and
/// checks that exactly one copy runs. Set this to `true` (with a bound
/// above 30 s) to demand the rollback.
pub(super) const MIGRATE_TIMES_OUT_ON_A_DEAD_LINK: bool = false;

/// How long the link stays cut before the test looks at the outcome.
pub(super) const CUT_BOUND: Duration = Duration::from_secs(10);

/// Whether a failure of the page stream on the destination (its page
/// server out of space, a frame altered in transit) reaches the user: the
/// agent watches the stream while it receives the images and refuses with
/// the cause, which the source reads when its dump fails with "Can't write
/// pages to socket: Broken pipe".
pub(super) const DESTINATION_REPORTS_PAGE_STREAM_FAILURES: bool = true;

// ---------------------------------------------------------------------------
// Processes

/// `/proc/PID/stat` field 22: when the process started, in clock ticks
/// since boot. A pid with another start time is another process.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// `/proc/PID/stat` field 3: R, S, D, t (traced, e.g. frozen by CRIU), Z...
pub(super) fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.chars().next()
}

/// The (device, inode) of a network namespace file.
pub(super) fn netns_id(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether `pid` lives in `ns`.
pub(super) fn runs_in(pid: u32, ns: &NetNs) -> bool {
    let theirs = netns_id(&PathBuf::from(format!("/proc/{pid}/ns/net")));
    theirs.is_some() && theirs == netns_id(&ns.path())
}

/// Every process in `ns` except `except`.
pub(super) fn pids_in(ns: &NetNs, except: &[u32]) -> Vec<(u32, String)> {
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
pub(super) struct PidGuard {
    pub(super) pid: u32,
    pub(super) started: Option<u64>,
}

impl PidGuard {
    pub(super) fn new(pid: u32) -> Self {
        Self {
            pid,
            started: start_time(pid),
        }
    }

    /// Whether the guarded process still exists (a zombie counts as gone).
    pub(super) fn alive(&self) -> bool {
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
pub(super) struct Running {
    pub(super) child: Option<Child>,
    pub(super) out: Option<JoinHandle<String>>,
    pub(super) err: Arc<Mutex<String>>,
    pub(super) err_reader: Option<JoinHandle<()>>,
    pub(super) started: Instant,
}

/// How a [`Running`] child ended.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) status: ExitStatus,
    pub(super) stdout: String,
    pub(super) stderr: String,
    pub(super) took: Duration,
}

impl Running {
    pub(super) fn start(cmd: &mut Command) -> Self {
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

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What it wrote on stderr so far.
    pub(super) fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Whether it still runs.
    pub(super) fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Waits up to `limit` for the end; `None` if it still runs.
    pub(super) fn wait(&mut self, limit: Duration) -> Option<Finished> {
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
    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (it keeps running until it ends by itself).
    pub(super) fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
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
pub(super) struct Lab {
    pub(super) hosts: TwoHosts,
    pub(super) tmp: tempfile::TempDir,
    /// The key both sides hold (mode 0600).
    pub(super) key: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A committed tree's cgroup outlives a killed agent (the next agent
        // of the same work directory sweeps it): whatever still runs on
        // the destination is killed, then the agent's cgroups are swept.
        for (pid, _) in pids_in(&self.hosts.dst, &[]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = wait_until(Duration::from_secs(5), || {
            pids_in(&self.hosts.dst, &[]).is_empty().then_some(())
        });
        for work in ["agent-work", "agent-tmpfs"] {
            let dir = self.tmp.path().join(work);
            if dir.exists() {
                crabmigrate_migrate::cgroup::sweep(&crabmigrate_migrate::agent::scope_of(&dir));
            }
        }
    }
}

impl Lab {
    pub(super) fn new(tag: &str) -> Self {
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
    pub(super) fn dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The agent's `ADDR:PORT` in `dst`.
    pub(super) fn agent_addr(&self) -> String {
        format!("{}:{PORT}", self.hosts.veth.b_addr)
    }

    /// Starts an agent in `dst` with `key`, working in `work`.
    pub(super) fn agent(&self, key: &Path, work: &Path) -> Agent {
        self.agent_with(key, work, &[])
    }

    /// [`Lab::agent`] with more agent arguments.
    pub(super) fn agent_with(&self, key: &Path, work: &Path, args: &[&str]) -> Agent {
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
    pub(super) fn source(&self, mem_mib: usize, under_shell: bool) -> Source {
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
    pub(super) fn migrate(&self, pid: u32, to: &str, key: &Path, args: &[&str]) -> Running {
        self.migrate_with("stop-copy", pid, to, key, args)
    }

    /// [`Lab::migrate`] with another strategy.
    pub(super) fn migrate_with(
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
pub(super) fn keygen(path: &Path) {
    let out = testkit::run(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `crabmigrate agent` running in a namespace.
pub(super) struct Agent {
    pub(super) run: Running,
    pub(super) work: PathBuf,
    /// The agent's container state root.
    pub(super) root: PathBuf,
}

impl Agent {
    pub(super) fn start(
        ns: &NetNs,
        listen: &str,
        key: &Path,
        work: &Path,
        tmp: &Path,
        args: &[&str],
    ) -> Self {
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

    pub(super) fn pid(&self) -> u32 {
        self.run.pid()
    }

    pub(super) fn log(&self) -> String {
        self.run.stderr()
    }

    pub(super) fn running(&mut self) -> bool {
        self.run.running()
    }

    /// The agent's session directories (one per migration in progress),
    /// and received bundles without a container.
    pub(super) fn sessions(&self) -> Vec<PathBuf> {
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
    pub(super) fn wait_sessions_gone(&self) {
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
pub(super) struct Source {
    /// Declared first: kills the tree's root before `outer` is reaped.
    pub(super) inner_guard: PidGuard,
    pub(super) outer: Workload,
    pub(super) inner: u32,
    pub(super) state: PathBuf,
}

impl Source {
    pub(super) fn tick(&self) -> Tick {
        Tick::read(&self.state).expect("state file readable")
    }

    /// Checks that the workload still runs on the source as before the
    /// failed migration `what`: same process, in `src`, not frozen, memory
    /// intact, and counting on.
    pub(super) fn assert_still_on_source(&self, ns: &NetNs, before: &Tick, what: &str) {
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
pub(super) fn assert_nothing_on(ns: &NetNs, agent: Option<u32>, what: &str) {
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
pub(super) fn assert_failed(done: &Finished, needles: &[&str], what: &str) -> String {
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
pub(super) fn assert_rolled_back(done: &Finished, what: &str) -> String {
    assert_failed(
        done,
        &["rolled back", "the workload keeps running on the source"],
        what,
    )
}

/// Waits for a migration that must end, with a bound.
pub(super) fn finish(run: &mut Running, what: &str) -> Finished {
    run.wait(PATIENCE * 2)
        .unwrap_or_else(|| panic!("{what}: migrate still runs after {:?}", PATIENCE * 2))
}

/// Runs a successful stop-copy migration of `src` and returns its JSON
/// report.
pub(super) fn migrate_ok(lab: &Lab, src: &Source, agent: &Agent, what: &str) -> serde_json::Value {
    migrate_ok_with(lab, "stop-copy", src, agent, &[], what)
}

/// [`migrate_ok`] with another strategy and more arguments.
pub(super) fn migrate_ok_with(
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
pub(super) fn assert_moved(
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
pub(super) struct Tmpfs(pub(super) PathBuf);

impl Tmpfs {
    pub(super) fn mount(dir: &Path, size: &str) -> Self {
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
pub(super) fn device_with(ns: &NetNs, addr: &str) -> String {
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
pub(super) fn wait_page_stream(agent: &Agent, run: &mut Running, what: &str) {
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

/// Checks a migration that ended in doubt (exit status 3) and returns its
/// resume and discard commands, as the message prints them.
pub(super) fn assert_in_doubt(done: &Finished, what: &str) -> (String, String) {
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
    // With --json the same, typed, on standard output.
    if !done.stdout.trim().is_empty() {
        let json: serde_json::Value = serde_json::from_str(done.stdout.trim())
            .unwrap_or_else(|e| panic!("{what}: the failure is not JSON ({e}): {}", done.stdout));
        assert_eq!(json["runs_on_source"], false, "{what}: {json}");
        assert_eq!(json["in_doubt"]["resume"], *resume, "{what}: {json}");
        assert_eq!(json["in_doubt"]["discard"], *discard, "{what}: {json}");
    }
    ((*resume).to_owned(), (*discard).to_owned())
}

/// Runs a printed `crabmigrate recover ...` command line.
pub(super) fn recover(command: &str, what: &str) {
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = testkit::crabmigrate().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: `{command}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sessions of the in-doubt records in a migrate work directory.
pub(super) fn records(work: &Path) -> Vec<String> {
    std::fs::read_dir(work.join("in-doubt"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".json")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}
