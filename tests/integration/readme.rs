//! The README and the docs' walkthroughs, run as a newcomer would paste
//! them: in a shell on a terminal, with the installed `crabmigrate`.
//!
//! A fenced block preceded by the line `<!-- runnable -->` is run; nothing
//! else is. In a `console` block every line starting with `# ` is a command
//! (a trailing `\` continues it on the next line) and the lines after it are
//! its expected output; in an `sh` block every line is a command and the
//! output is not checked. The runnable blocks of one file run in order in
//! one shell, so a later block sees what an earlier one made.
//!
//! A command that ends with `&` (a job sent to the background) is given a
//! second before the next one, as a person typing would give it.
//!
//! A command must exit 0, unless its expected output holds a line starting
//! `crabmigrate: error:`, then it must fail. Expected lines must appear in
//! the output in order (other lines may come between); in an expected line
//! `...` stands for any text and every number for any number, so pids,
//! sizes, times and versions may differ.
//!
//! Each file runs in a shell on a fresh pseudo-terminal (its controlling
//! terminal, as in a terminal emulator), in new mount, network (loopback
//! up) and pid namespaces with empty /tmp, /var/lib and /run/crabmigrate:
//! the walkthroughs' fixed paths, ports and names collide with nothing, and
//! every process they leave dies with the namespace. Containers they leave are force-deleted before that
//! (their cgroups are the host's). Runs of this test on one machine take
//! turns (a lock file), as the walkthroughs' container names are fixed.
//!
//! `crabmigrate` is the one on PATH (`make install` puts it in
//! /usr/local/bin; `make test` does that first), or
//! `$CRABMIGRATE_README_BIN`. Under CI=true a missing one fails the test.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long one file's walkthrough may take in all.
const LIMIT: Duration = Duration::from_secs(300);

/// The files whose runnable blocks run.
const FILES: &[&str] = &[
    "README.md",
    "docs/setup.md",
    "docs/processes.md",
    "docs/runtime.md",
    "docs/images.md",
    "docs/migration.md",
    "docs/troubleshooting.md",
];

/// One command of a walkthrough and what it should print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub command: String,
    pub expected: Vec<String>,
    /// Where it is written (file and line), for messages.
    pub at: String,
}

/// The runnable steps of a markdown text, in order.
pub fn steps(name: &str, text: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "<!-- runnable -->" {
            i += 1;
            continue;
        }
        let fence = lines.get(i + 1).map_or("", |l| l.trim());
        let console = fence == "```console";
        let sh = fence == "```sh" || fence == "```bash";
        assert!(
            console || sh,
            "{name}:{}: <!-- runnable --> must precede a console or sh block",
            i + 1
        );
        i += 2;
        let mut current: Option<Step> = None;
        while i < lines.len() && lines[i].trim_end() != "```" {
            let line = lines[i];
            let at = format!("{name}:{}", i + 1);
            if let Some(step) = current.as_mut().filter(|s| s.command.ends_with('\\')) {
                step.command.pop();
                step.command = format!("{} {}", step.command.trim_end(), line.trim());
            } else if sh {
                if !line.trim().is_empty() {
                    push_command(&mut out, &mut current, line, &at);
                }
            } else if let Some(cmd) = line.strip_prefix("# ") {
                push_command(&mut out, &mut current, cmd, &at);
            } else if let Some(step) = current.as_mut() {
                if !line.trim().is_empty() {
                    step.expected.push(line.trim_end().to_owned());
                }
            }
            i += 1;
        }
        out.extend(current.take());
        i += 1;
    }
    out
}

fn push_command(out: &mut Vec<Step>, current: &mut Option<Step>, command: &str, at: &str) {
    out.extend(current.take());
    *current = Some(Step {
        command: command.trim_end().to_owned(),
        expected: Vec::new(),
        at: at.to_owned(),
    });
}

/// One piece of an expected line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(char),
    /// One or more spaces (columns shift with the width of numbers).
    Spaces,
    AnyText,
    Number,
}

fn pieces(expected: &str) -> Vec<Piece> {
    let chars: Vec<char> = expected.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i..].starts_with(&['.', '.', '.']) {
            out.push(Piece::AnyText);
            i += 3;
        } else if chars[i].is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                // A trailing period ends a sentence, not the number.
                if chars[i] == '.' && !chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                    break;
                }
                i += 1;
            }
            out.push(Piece::Number);
        } else if chars[i] == ' ' {
            while i < chars.len() && chars[i] == ' ' {
                i += 1;
            }
            out.push(Piece::Spaces);
        } else {
            out.push(Piece::Text(chars[i]));
            i += 1;
        }
    }
    out
}

/// Whether `actual` matches the expected line's pieces, whole.
fn matches(pieces: &[Piece], actual: &[char]) -> bool {
    match pieces.split_first() {
        None => actual.is_empty(),
        Some((Piece::Text(c), rest)) => actual.first() == Some(c) && matches(rest, &actual[1..]),
        Some((Piece::AnyText, rest)) => (0..=actual.len()).any(|n| matches(rest, &actual[n..])),
        Some((Piece::Spaces, rest)) => {
            let spaces = actual.iter().take_while(|c| **c == ' ').count();
            (1..=spaces).any(|n| matches(rest, &actual[n..]))
        }
        Some((Piece::Number, rest)) => {
            let digits = actual
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == '.')
                .count();
            (1..=digits).any(|n| {
                actual[..n].first().is_some_and(char::is_ascii_digit) && matches(rest, &actual[n..])
            })
        }
    }
}

/// Whether `expected` lines appear in `actual` in order.
pub fn output_matches(expected: &[String], actual: &[String]) -> Result<(), String> {
    let mut at = 0;
    for want in expected {
        let p = pieces(want.trim_end());
        match actual[at..]
            .iter()
            .position(|a| matches(&p, &a.trim_end().chars().collect::<Vec<_>>()))
        {
            Some(n) => at += n + 1,
            None => return Err(format!("no line like {want:?}")),
        }
    }
    Ok(())
}

/// Drops ANSI escape sequences and carriage returns.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for n in chars.by_ref() {
                        if n.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The shell script for one file: private mounts, each step between
/// markers with its status, then the cleanup.
fn script(steps: &[Step], bin_dir: &Path) -> String {
    let mut s = String::new();
    s.push_str("set +e\n");
    // An installed binary under /tmp or /var/lib (make install PREFIX=...)
    // would vanish under the empty mounts: a copy goes to a tmpfs on /mnt.
    let hidden = bin_dir.starts_with("/tmp") || bin_dir.starts_with("/var/lib");
    let path_dir = if hidden {
        s.push_str(&format!(
            "mount -t tmpfs tmpfs /mnt && cp '{}/crabmigrate' /mnt/ || {{ echo '@@setup failed@@'; exit 1; }}\n",
            bin_dir.display()
        ));
        PathBuf::from("/mnt")
    } else {
        bin_dir.to_path_buf()
    };
    s.push_str("mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /var/lib && mkdir -p /run/crabmigrate && mount -t tmpfs tmpfs /run/crabmigrate && ip link set lo up || { echo '@@setup failed@@'; exit 1; }\n");
    s.push_str(&format!(
        "export PATH='{}':/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        path_dir.display()
    ));
    s.push_str("command -v crabmigrate >/dev/null || { echo '@@setup failed@@'; exit 1; }\n");
    s.push_str("cd /tmp\n");
    for (i, step) in steps.iter().enumerate() {
        s.push_str(&format!("printf '\\n@@begin {i}@@\\n'\n"));
        s.push_str(&step.command);
        s.push('\n');
        s.push_str(&format!("printf '\\n@@status {i} %d@@\\n' $?\n"));
        // A job started in the background gets the second a person typing
        // the next line would give it.
        if background(&step.command) {
            s.push_str("sleep 1\n");
        }
    }
    s.push_str("printf '\\n@@end@@\\n'\n");
    s.push_str(
        "for id in $(ls /run/crabmigrate 2>/dev/null); do crabmigrate delete --force \"$id\" >/dev/null 2>&1; done\n",
    );
    s
}

/// Whether a command ends by sending a job to the background (`... &`,
/// before any comment).
fn background(command: &str) -> bool {
    let code = match command.find(" #") {
        Some(i) => &command[..i],
        None => command,
    };
    let code = code.trim_end();
    code.ends_with('&') && !code.ends_with("&&")
}

/// In the child before exec: a new session whose controlling terminal is
/// the pty slave on descriptor 0.
fn take_terminal() -> std::io::Result<()> {
    // Descriptors the test process inherited from whatever started it
    // point into the outer mount namespace, which CRIU cannot resolve
    // inside the new one; a terminal emulator's shell has none of them.
    // SAFETY: close_range only closes descriptors of this (child) process,
    // which is about to exec; 0, 1 and 2 are kept.
    unsafe {
        nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); descriptor
    // 0 is the slave by now, and the call only changes kernel state.
    if unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `script` under a new pty in new namespaces; returns what the
/// terminal showed.
fn run_on_terminal(script: &str) -> String {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("close-on-exec");
    }
    let slave = |p: &OwnedFd| Stdio::from(p.try_clone().expect("dup the slave"));
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--net",
        "--pid",
        "--fork",
        "--mount-proc",
        "bash",
        "--noprofile",
        "--norc",
        "-c",
        script,
    ])
    .env("TERM", "xterm")
    .env_remove("RUST_LOG")
    .stdin(slave(&pty.slave))
    .stdout(slave(&pty.slave))
    .stderr(slave(&pty.slave));
    // SAFETY: `take_terminal` runs in the child between fork and exec and
    // makes only async-signal-safe system calls, allocating nothing.
    unsafe {
        cmd.pre_exec(take_terminal);
    }
    let mut child = cmd.spawn().expect("unshare runs");
    drop(cmd);
    drop(pty.slave);
    let mut seen = Vec::new();
    let until = Instant::now() + LIMIT;
    loop {
        let text = String::from_utf8_lossy(&seen);
        if text.contains("@@end@@") || text.contains("@@setup failed@@") {
            break;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the walkthrough did not finish in {LIMIT:?}; the terminal showed:\n{text}");
        }
        let mut fds = [PollFd::new(pty.master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(500u16)).unwrap_or(0) == 0 {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            continue;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&pty.master, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    // The cleanup runs after the end marker; the namespace dies with it.
    let done = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > done {
            let _ = child.kill();
            break;
        }
        // Keep the master drained so that the cleanup never blocks.
        let mut fds = [PollFd::new(pty.master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) > 0 {
            let mut buf = [0u8; 4096];
            let _ = nix::unistd::read(&pty.master, &mut buf);
        }
    }
    let _ = child.wait();
    plain(&String::from_utf8_lossy(&seen))
}

/// The output of each step (by index) and its exit status.
fn split(shown: &str) -> Vec<(Vec<String>, Option<i32>)> {
    let mut out: Vec<(Vec<String>, Option<i32>)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in shown.lines() {
        if let Some(i) = line
            .strip_prefix("@@begin ")
            .and_then(|r| r.strip_suffix("@@"))
            .and_then(|r| r.parse::<usize>().ok())
        {
            while out.len() <= i {
                out.push((Vec::new(), None));
            }
            current = Some(i);
        } else if let Some(rest) = line
            .strip_prefix("@@status ")
            .and_then(|r| r.strip_suffix("@@"))
        {
            let mut parts = rest.split_whitespace();
            let i: Option<usize> = parts.next().and_then(|p| p.parse().ok());
            let status: Option<i32> = parts.next().and_then(|p| p.parse().ok());
            if let Some(entry) = i.and_then(|i| out.get_mut(i)) {
                entry.1 = status;
            }
            current = None;
        } else if let Some(entry) = current.and_then(|i| out.get_mut(i)) {
            if !line.trim().is_empty() {
                entry.0.push(line.to_owned());
            }
        }
    }
    out
}

/// The installed crabmigrate's directory, or why there is none.
fn installed() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("CRABMIGRATE_README_BIN") {
        let bin = PathBuf::from(bin);
        return bin
            .is_file()
            .then(|| bin.parent().unwrap_or(Path::new("/")).to_path_buf())
            .ok_or_else(|| format!("$CRABMIGRATE_README_BIN {} is no file", bin.display()));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("crabmigrate").is_file())
        .ok_or_else(|| "no crabmigrate on PATH; run `make install` first".to_owned())
}

/// Takes turns with other runs of this test on the machine (the lock is
/// held while the returned guard lives).
fn lock() -> nix::fcntl::Flock<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/crabmigrate-readme-walkthroughs.lock")
        .expect("lock file");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock: {e}"))
}

#[test]
fn readme_and_docs_walkthroughs_run_on_a_terminal() {
    if testkit::real_criu("readme_and_docs_walkthroughs_run_on_a_terminal").is_none() {
        return;
    }
    let bin_dir = match installed() {
        Ok(dir) => dir,
        Err(why) => {
            assert!(!testkit::in_ci(), "under CI=true: {why}");
            println!("SKIPPED readme_and_docs_walkthroughs_run_on_a_terminal: {why}");
            return;
        }
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let _turn = lock();
    let mut failures = Vec::new();
    let mut total = 0;
    for file in FILES {
        let Ok(text) = fs::read_to_string(repo.join(file)) else {
            continue;
        };
        let steps = steps(file, &text);
        if steps.is_empty() {
            continue;
        }
        total += steps.len();
        let shown = run_on_terminal(&script(&steps, &bin_dir));
        assert!(
            !shown.contains("@@setup failed@@"),
            "{file}: the namespaces or the binary could not be set up:\n{shown}"
        );
        let outputs = split(&shown);
        for (i, step) in steps.iter().enumerate() {
            let (lines, status) = outputs.get(i).cloned().unwrap_or_default();
            let wants_error = step
                .expected
                .iter()
                .any(|l| l.starts_with("crabmigrate: error:"));
            let status_ok = match status {
                Some(0) => !wants_error,
                Some(_) => wants_error,
                None => false,
            };
            let output_ok = output_matches(&step.expected, &lines);
            if !status_ok || output_ok.is_err() {
                failures.push(format!(
                    "{}: `{}` exited {status:?}{}{}\n  it printed:\n    {}",
                    step.at,
                    step.command,
                    if wants_error {
                        " (a failure was expected)"
                    } else {
                        ""
                    },
                    output_ok
                        .err()
                        .map(|e| format!("; {e}"))
                        .unwrap_or_default(),
                    lines.join("\n    ")
                ));
            }
        }
    }
    assert!(total > 0, "no runnable block in {FILES:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn blocks_and_expected_output_are_read_as_documented() {
    let text = "intro\n\n<!-- runnable -->\n```console\n# echo hi\nhi\n# long \\\n  command\n# true\n```\n\n```console\n# not run\n```\n<!-- runnable -->\n```sh\nmkdir x   # a comment\n\ncd x\n```\n";
    let s = steps("T.md", text);
    let commands: Vec<&str> = s.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "echo hi",
            "long command",
            "true",
            "mkdir x   # a comment",
            "cd x"
        ]
    );
    assert_eq!(s[0].expected, ["hi"]);
    assert_eq!(s[0].at, "T.md:5");
    let lines = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let actual = lines(&[
        "checkpointed process 3206 into /var/lib/ckpt/1: 2101 pages written (8 MiB), frozen 41.2 ms",
        "  version             4.2.1 (supported)",
        "done.",
    ]);
    assert!(output_matches(
        &lines(&[
            "checkpointed process 77 into /var/lib/ckpt/1: 5 pages written (0 MiB), frozen 1.0 ms",
            "  version             4.1.1 (supported)",
            "done.",
        ]),
        &actual
    )
    .is_ok());
    assert!(output_matches(&lines(&["checkpointed process 1 into ...: ..."]), &actual).is_ok());
    assert!(output_matches(&lines(&["done.", "checkpointed ..."]), &actual).is_err());
    assert!(output_matches(&lines(&["restored ..."]), &actual).is_err());
    // Columns may shift with the width of a number.
    assert!(output_matches(
        &lines(&["counter   4242     running   ..."]),
        &lines(&["counter   14066    running   1796588042   /tmp/bb"])
    )
    .is_ok());
}
