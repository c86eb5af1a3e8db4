//! The bad-input suite's table: every command with the mistakes a newcomer
//! makes (see `bad_input.rs` for what each case asserts).

use std::path::PathBuf;

use crate::bad_input::{refuse, usage, vanished_pid, Case, Fixture};

/// The table: every command, its classic mistakes.
pub(crate) fn cases(f: &Fixture) -> Vec<Case> {
    let w = f.workload.pid().to_string();
    let c = f.container.as_str();
    let p = |n: &str| f.path(n);
    let out = p("out");
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .to_owned();
    let vanished = vanished_pid().to_string();
    let me = std::process::id().to_string();
    let bundle = f.bundle.path().to_str().unwrap().to_owned();
    let mut page_server = refuse(
        &[
            "checkpoint",
            "--pid",
            &w,
            "--images-dir",
            &out,
            "--page-server",
            "127.0.0.1:1",
            "--leave-running",
        ],
        &["page server", "the workload keeps running"],
    );
    page_server.may_create = vec![PathBuf::from(&out)];
    let mut nobody = refuse(&["check"], &["not running as root", "as root"]);
    nobody.as_nobody = true;
    vec![
        // check
        refuse(
            &["check", "--criu", "/nonexistent/criu"],
            &["/nonexistent/criu"],
        ),
        nobody,
        usage(&["check", "--jsno"], &["--jsno"]),
        // checkpoint and pre-dump of a process tree
        usage(&["checkpoint", "--images-dir", &out], &["required"]),
        refuse(
            &["checkpoint", "--pid", "0", "--images-dir", &out],
            &["pid 0"],
        ),
        refuse(
            &["checkpoint", "--pid", &pid_max, "--images-dir", &out],
            &["pid_max"],
        ),
        refuse(
            &["checkpoint", "--pid", &vanished, "--images-dir", &out],
            &["does not exist"],
        ),
        refuse(
            &["checkpoint", "--pid", "1", "--images-dir", &out],
            &["process 1", "init"],
        ),
        refuse(
            &["checkpoint", "--pid", &me, "--images-dir", &out],
            &["one of its parents"],
        ),
        refuse(
            &["checkpoint", "--pid", "2", "--images-dir", &out],
            &["kernel thread"],
        ),
        usage(
            &["checkpoint", "--pid", "-5", "--images-dir", &out],
            &["-5"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--external",
                "garbage",
            ],
            &["\"garbage\"", "TYPE[ID]"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--external",
                "mnt[data]:k",
            ],
            &["mnt[/MOUNTPOINT]:KEY"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--external",
                "veth[eth0]:x",
            ],
            &["named at restore"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--page-server",
                "nohost",
            ],
            &["\"nohost\" is not HOST:PORT"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--page-server",
                "127.0.0.1:0",
            ],
            &["port 0"],
        ),
        refuse(
            &["checkpoint", "--pid", &w, "--images-dir", &p("file")],
            &["is not a directory"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &format!("{}/sub", p("file")),
            ],
            &["is a file"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--parent-dir",
                &p("nope"),
            ],
            &["parent images directory", "does not exist"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--lazy-pages",
                "--port",
                "0",
            ],
            &["--port 0"],
        ),
        usage(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--criu-log-level",
                "9",
            ],
            &["9"],
        ),
        refuse(
            &[
                "checkpoint",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--lazy-pages",
            ],
            &["--lazy-pages needs the port"],
        ),
        page_server,
        refuse(
            &[
                "pre-dump",
                "--pid",
                &w,
                "--images-dir",
                &out,
                "--external",
                "tty[zz:1]",
            ],
            &["in hex"],
        ),
        // checkpoint of a container
        refuse(
            &["checkpoint", "no-such-container", "--images-dir", &out],
            &["does not exist"],
        ),
        refuse(
            &["checkpoint", "../escape", "--images-dir", &out],
            &["invalid container ID"],
        ),
        refuse(
            &[
                "checkpoint",
                c,
                "--images-dir",
                &out,
                "--external",
                "mnt[]:x",
            ],
            &["FLAGS"],
        ),
        // restore
        refuse(
            &["restore", "--images-dir", &p("missing")],
            &["does not exist"],
        ),
        refuse(
            &["restore", "--images-dir", &p("empty")],
            &["no checkpoint", "inventory.img"],
        ),
        refuse(
            &["restore", "--images-dir", &p("empty-pstree")],
            &["lists no process"],
        ),
        refuse(
            &["restore", "--images-dir", &p("no-core")],
            &["core-", "is missing"],
        ),
        refuse(
            &["restore", "--images-dir", &p("cut-inventory")],
            &["damaged", "inventory.img"],
        ),
        refuse(
            &[
                "restore",
                "--images-dir",
                &p("good"),
                "--pid-file",
                &p("no/dir/pid"),
            ],
            &["--pid-file", "does not exist"],
        ),
        refuse(
            &[
                "restore",
                "--images-dir",
                &p("good"),
                "--external",
                "tty[8800:1a]",
            ],
            &["--inherit-fd"],
        ),
        refuse(
            &[
                "restore",
                "--images-dir",
                &p("good"),
                "--inherit-fd",
                "fd[99]:pipe:[1]",
            ],
            &["descriptor 99"],
        ),
        refuse(
            &[
                "restore",
                "--images-dir",
                &p("good"),
                "--inherit-fd",
                "nonsense",
            ],
            &["is not fd[N]:KEY"],
        ),
        usage(
            &["restore", "some-id", "--images-dir", &p("good")],
            &["required"],
        ),
        refuse(
            &[
                "restore",
                "new-id",
                "--bundle",
                &p("missing"),
                "--images-dir",
                &p("good"),
            ],
            &["bundle"],
        ),
        // create, start, run
        refuse(&["create", "x1", "--bundle", &p("missing")], &["bundle"]),
        refuse(
            &["create", "../x", "--bundle", &bundle],
            &["invalid container ID"],
        ),
        refuse(&["create", c, "--bundle", &bundle], &["already exists"]),
        refuse(
            &["run", "-d", "x2", "--bundle", &p("empty")],
            &["config.json"],
        ),
        refuse(&["start", "no-such-container"], &["does not exist"]),
        refuse(&["start", c], &["is running", "created"]),
        // state, list, ps
        refuse(&["state", "no-such-container"], &["does not exist"]),
        refuse(
            &["state", "broken"],
            &["not a valid container state", "delete --force"],
        ),
        usage(&["list", "--format", "table"], &["--format"]),
        refuse(&["ps", "no-such-container"], &["does not exist"]),
        // kill, delete, pause, resume
        refuse(&["kill", c, "SIGFOO"], &["\"SIGFOO\" is not a signal name"]),
        refuse(&["kill", c, "999"], &["999 is not a signal number"]),
        refuse(&["kill", "no-such-container"], &["does not exist"]),
        refuse(&["delete", c], &["is running", "--force"]),
        refuse(&["delete", "broken"], &["damaged", "delete --force broken"]),
        refuse(&["pause", "no-such-container"], &["does not exist"]),
        refuse(&["resume", c], &["needs it paused"]),
        // exec, update, events, features, spec (runc's command line)
        refuse(&["exec", "no-such-container", "true"], &["does not exist"]),
        refuse(
            &["update", "no-such-container", "--memory", "1"],
            &["does not exist"],
        ),
        usage(&["update", c, "--memory", "-5"], &["-5"]),
        refuse(&["events", "no-such-container"], &["does not exist"]),
        usage(&["features", "--jsno"], &["--jsno"]),
        refuse(&["spec", "--bundle", &bundle], &["config.json exists"]),
        // network
        refuse(
            &["network", "check", "no-such-container"],
            &["does not exist"],
        ),
        refuse(
            &["network", "ls", "--cni-config-dir", &p("missing")],
            &["--cni-config-dir", "missing"],
        ),
        usage(&["network", "frob"], &["frob"]),
        refuse(
            &[
                "run",
                "-d",
                "x3",
                "--bundle",
                &bundle,
                "--network",
                "no-such-net",
                "--cni-config-dir",
                &p("empty"),
            ],
            &["no CNI network named no-such-net"],
        ),
        // keygen, agent, migrate
        refuse(&["keygen", "--out", &p("key")], &["already exists"]),
        refuse(&["keygen", "--out", &p("no/dir/key")], &["no/dir/key"]),
        refuse(
            &["agent", "--listen", "nohost", "--key-file", &p("no-key")],
            &["no-key"],
        ),
        refuse(
            &[
                "migrate",
                "--pid",
                &w,
                "--to",
                "127.0.0.1:1",
                "--key-file",
                &p("no-key"),
            ],
            &["no-key"],
        ),
        usage(
            &["migrate", "--pid", &w, "--key-file", &p("key")],
            &["required"],
        ),
        // recover
        refuse(
            &[
                "recover",
                "--work-dir",
                &p("empty"),
                "--resume",
                "0123456789abcdef",
            ],
            &["no in-doubt migration", "crabmigrate recover --work-dir"],
        ),
        refuse(
            &["recover", "--work-dir", &p("empty"), "--discard", "../x"],
            &["invalid session name"],
        ),
        usage(
            &["recover", "--resume", "a", "--discard", "b"],
            &["cannot be used with"],
        ),
        // page-server, lazy-pages
        refuse(
            &["page-server", "--images-dir", &p("file"), "--port", "1"],
            &["not a directory"],
        ),
        refuse(
            &[
                "lazy-pages",
                "--images-dir",
                &p("good"),
                "--page-server",
                "nohost",
            ],
            &["\"nohost\" is not HOST:PORT"],
        ),
        refuse(
            &[
                "lazy-pages",
                "--images-dir",
                &p("good"),
                "--page-server",
                "127.0.0.1:0",
            ],
            &["port 0"],
        ),
        // inspect, export, import
        refuse(&["inspect", &p("missing")], &["missing"]),
        refuse(&["inspect", &p("empty")], &["no checkpoint"]),
        refuse(
            &["export", "--images-dir", &p("missing"), "-o", &out],
            &["missing"],
        ),
        refuse(
            &[
                "export",
                "--images-dir",
                &p("good"),
                "-o",
                &p("no/dir/a.tar"),
            ],
            &["--output", "does not exist"],
        ),
        refuse(
            &["export", "no-such-container", "-o", &out],
            &["does not exist"],
        ),
        refuse(
            &["import", &p("not-a-tar"), "--images-dir", &out],
            &["is not a tar archive"],
        ),
        refuse(
            &["import", &p("evil\x1b[2J.tar"), "--images-dir", &out],
            &["evil\\u{1b}[2J.tar"],
        ),
        refuse(
            &["import", &p("missing"), "--images-dir", &out],
            &["missing"],
        ),
        usage(&["frobnicate"], &["frobnicate"]),
    ]
}
