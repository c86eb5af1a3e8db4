//! A stand-in for CRIU: speaks the swrk protocol and answers `check` like
//! CRIU 4.1.1 on the project's machines, or misbehaves on purpose.
//!
//! Usage: `criu-standin SCENARIO [criu arguments]`; tests put it behind a
//! small wrapper script so the client starts it like a real `criu`. When
//! `CRIU_STANDIN_RECORD` names a file, the stand-in appends `pid N` when it
//! starts serving and `req HEX` for every message it receives (the encoded
//! `criu_req`, acknowledgements included), so tests can decode exactly what
//! the client sent.
//!
//! Scenarios:
//! - `criu-4.1.1`: a working CRIU 4.1.1 (no soft-dirty, lazy pages work);
//!   DUMP, RESTORE and PRE_DUMP succeed without doing anything, sending the
//!   notifications real CRIU sends when asked to
//! - `soft-dirty`: the same on a kernel with soft-dirty memory tracking
//! - `criu-3.17`: the same, but reporting version 3.17.1
//! - `exit-now`: prints an error and exits with status 1 before reading
//! - `crash`: reads the request, then dies from SIGABRT
//! - `hang`: reads the request and never answers
//! - `big-error`: fails every request with a 100 KiB error message
//! - `wrong-type`: answers every request with a DUMP answer
//! - `notify-fd`: sends a NOTIFY carrying a descriptor before answering

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use criu_proto::rpc::{CriuFeatures, CriuNotify, CriuReq, CriuReqType, CriuResp, CriuVersion};
use nix::sys::socket::{recv, send, sendmsg, ControlMessage, MsgFlags};
use prost::Message;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((scenario, rest)) = args.split_first() else {
        eprintln!("usage: criu-standin SCENARIO [criu arguments]");
        return ExitCode::from(2);
    };
    if scenario == "exit-now" {
        eprintln!("Error (criu/crtools.c:1): stand-in refuses to start");
        return ExitCode::from(1);
    }
    let rest: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--no-default-config")
        .collect();
    match rest.as_slice() {
        ["--version"] | ["-V"] => {
            println!("Version: {}", version_text(scenario));
            ExitCode::SUCCESS
        }
        ["check"] => {
            println!("Warn  (criu/kerndat.c:1285): Can't keep kdat cache on non-tempfs");
            println!("Looks good.");
            ExitCode::SUCCESS
        }
        ["check", "--feature", name] => check_feature(name),
        ["swrk", fd] => match fd.parse::<RawFd>() {
            Ok(fd) => serve(scenario, fd),
            Err(_) => ExitCode::from(2),
        },
        _ => {
            eprintln!("criu-standin: unsupported arguments {rest:?}");
            ExitCode::from(2)
        }
    }
}

fn version_text(scenario: &str) -> &'static str {
    if scenario == "criu-3.17" {
        "3.17.1"
    } else {
        "4.1.1"
    }
}

fn check_feature(name: &str) -> ExitCode {
    match name {
        "mem_dirty_track" => {
            println!("Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.");
            ExitCode::from(1)
        }
        "uffd" | "uffd-noncoop" => {
            println!("{name} is supported");
            ExitCode::SUCCESS
        }
        _ => {
            println!("Error (criu/cr-check.c:1): unknown feature {name}");
            ExitCode::from(1)
        }
    }
}

fn serve(scenario: &str, fd: RawFd) -> ExitCode {
    // SAFETY: the client placed the RPC socket at this number for us; nothing
    // else in this process uses it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    record_line(&format!("pid {}", std::process::id()));
    loop {
        let Some(req) = read_request(&socket) else {
            // EOF: the client closed a keep-open session, as CRIU does.
            return ExitCode::from(255);
        };
        record(&req);
        let kind = req.r#type();
        match scenario {
            "crash" => std::process::abort(),
            "hang" => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            _ => {}
        }
        let resp = match scenario {
            "big-error" => CriuResp {
                r#type: kind as i32,
                success: false,
                cr_errno: Some(22),
                cr_errmsg: Some(format!("huge failure {}", "x".repeat(100 * 1024))),
                ..Default::default()
            },
            "wrong-type" => CriuResp {
                r#type: CriuReqType::Dump as i32,
                success: true,
                ..Default::default()
            },
            _ => answer(scenario, &req),
        };
        let mut resp = resp;
        let notify_scripts = req.opts.as_ref().is_some_and(|o| o.notify_scripts());
        if notify_scripts {
            match notify_all(&socket, kind) {
                None => return ExitCode::from(1),
                Some(true) => {}
                Some(false) => {
                    resp = CriuResp {
                        r#type: kind as i32,
                        success: false,
                        cr_errmsg: Some("stand-in: an action script failed".into()),
                        ..Default::default()
                    };
                }
            }
        }
        if scenario == "notify-fd" && !notify_with_fd(&socket) {
            return ExitCode::from(1);
        }
        if !write(&socket, &resp) {
            return ExitCode::from(1);
        }
        // PRE_DUMP keeps the session open by itself, as in CRIU.
        let keep_open = kind == CriuReqType::PreDump
            || matches!(
                kind,
                CriuReqType::Version
                    | CriuReqType::FeatureCheck
                    | CriuReqType::CpuinfoDump
                    | CriuReqType::CpuinfoCheck
                    | CriuReqType::PageServer
                    | CriuReqType::PageServerChld
            ) && req.keep_open();
        if !keep_open {
            return if resp.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
    }
}

fn answer(scenario: &str, req: &CriuReq) -> CriuResp {
    let mut resp = CriuResp {
        r#type: req.r#type,
        success: true,
        ..Default::default()
    };
    match req.r#type() {
        CriuReqType::Version => {
            let (major, minor, sublevel) = if scenario == "criu-3.17" {
                (3, 17, 1)
            } else {
                (4, 1, 1)
            };
            resp.version = Some(CriuVersion {
                major_number: major,
                minor_number: minor,
                sublevel: Some(sublevel),
                ..Default::default()
            });
        }
        CriuReqType::FeatureCheck => match &req.features {
            // Like CRIU: a feature that was not asked for comes back false.
            Some(asked) => {
                resp.features = Some(CriuFeatures {
                    mem_track: Some(scenario == "soft-dirty" && asked.mem_track()),
                    lazy_pages: Some(asked.lazy_pages()),
                    pidfd_store: Some(asked.pidfd_store()),
                })
            }
            None => resp.success = false,
        },
        CriuReqType::PreDump | CriuReqType::SinglePreDump => {}
        CriuReqType::Dump | CriuReqType::Restore => {
            resp.restore = (req.r#type() == CriuReqType::Restore)
                .then_some(criu_proto::rpc::CriuRestoreResp { pid: 4242 });
        }
        _ => {
            resp.success = false;
            resp.cr_errno = Some(56);
            resp.cr_errmsg = Some("stand-in: request not supported".into());
        }
    }
    resp
}

/// The notifications real CRIU 4.1.1 sends for a plain process.
fn scripts_for(kind: CriuReqType) -> &'static [(&'static str, Option<i32>)] {
    match kind {
        CriuReqType::Dump => &[
            ("pre-dump", None),
            ("query-ext-files", None),
            ("post-dump", None),
        ],
        CriuReqType::Restore => &[
            ("pre-restore", None),
            ("post-restore", Some(4242)),
            ("pre-resume", None),
            ("post-resume", None),
        ],
        _ => &[],
    }
}

/// Sends each notification and waits for its ack; false if one was refused
/// (as CRIU, the stand-in then fails the request).
fn notify_all(socket: &OwnedFd, kind: CriuReqType) -> Option<bool> {
    for (script, pid) in scripts_for(kind) {
        let notify = CriuResp {
            r#type: CriuReqType::Notify as i32,
            success: true,
            notify: Some(CriuNotify {
                script: Some((*script).into()),
                pid: *pid,
            }),
            ..Default::default()
        };
        if !write(socket, &notify) {
            return None;
        }
        let ack = read_request(socket)?;
        record(&ack);
        if ack.r#type() != CriuReqType::Notify || !ack.notify_success() {
            return Some(false);
        }
    }
    Some(true)
}

fn read_request(socket: &OwnedFd) -> Option<CriuReq> {
    let mut buf = vec![0u8; 1 << 20];
    let n = recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    if n == 0 {
        return None;
    }
    CriuReq::decode(&buf[..n]).ok()
}

fn write(socket: &OwnedFd, resp: &CriuResp) -> bool {
    let bytes = resp.encode_to_vec();
    send(socket.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL).is_ok()
}

/// Sends an orphan-pts-master style notification carrying the write end of a
/// pipe whose read end holds "from-standin", then waits for the ack.
fn notify_with_fd(socket: &OwnedFd) -> bool {
    let Ok((read_end, write_end)) = nix::unistd::pipe() else {
        return false;
    };
    if nix::unistd::write(&write_end, b"from-standin").is_err() {
        return false;
    }
    drop(write_end);
    let notify = CriuResp {
        r#type: CriuReqType::Notify as i32,
        success: true,
        notify: Some(CriuNotify {
            script: Some("orphan-pts-master".into()),
            pid: None,
        }),
        ..Default::default()
    };
    let bytes = notify.encode_to_vec();
    let fds = [read_end.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(&bytes)];
    if sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .is_err()
    {
        return false;
    }
    matches!(read_request(socket), Some(ack) if ack.r#type() == CriuReqType::Notify && ack.notify_success())
}

fn record_line(line: &str) {
    if let Some(path) = std::env::var_os("CRIU_STANDIN_RECORD") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

fn record(req: &CriuReq) {
    let hex: String = req
        .encode_to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    record_line(&format!("req {hex}"));
}
