//! One running `criu swrk` process and the SOCK_SEQPACKET socket to it.
//!
//! Framing is one protobuf message per packet. Each answer is sized with
//! `MSG_PEEK | MSG_TRUNC` before it is read (no fixed buffer), and every read
//! takes ancillary data, so a descriptor CRIU sends (orphan-pts-master) is
//! never lost. The process dies with its owner: a parent-death signal covers
//! a crash of the caller, `Drop` kills and reaps it otherwise.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IoSliceMut, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuReq, CriuResp};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{
    recv, recvmsg, send, setsockopt, socketpair, sockopt, AddressFamily, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use prost::Message;

use crate::cancel::CancelToken;
use crate::error::TransportError;
use crate::launcher::{LaunchSpec, Launcher, PassFd};

/// The number of the RPC socket in CRIU's descriptor table.
pub(crate) const SWRK_FD: RawFd = 3;
/// How many descriptors one message may carry (CRIU sends at most one).
const MAX_FDS_PER_MESSAGE: usize = 4;
/// How much of CRIU's output an error quotes.
const OUTPUT_TAIL: u64 = 4096;
/// How long to wait for CRIU to exit once it has closed the socket.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// A message from CRIU with the descriptors that came with it.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub resp: CriuResp,
    pub fds: Vec<OwnedFd>,
}

/// A running `criu swrk`.
#[derive(Debug)]
pub(crate) struct Swrk {
    socket: OwnedFd,
    child: Option<Child>,
    output: File,
    program: PathBuf,
    /// Children of CRIU that must not outlive this session (child-mode page
    /// servers). They are killed before CRIU, while CRIU still holds them
    /// unreaped, so their pids cannot have been reused.
    dependents: Vec<u32>,
}

impl Swrk {
    /// Starts `program [global_args] swrk 3`, with `fds` placed at their
    /// target numbers (which must be above [`SWRK_FD`]).
    pub fn start(
        launcher: &dyn Launcher,
        program: &Path,
        global_args: &[OsString],
        fds: Vec<PassFd<'_>>,
    ) -> Result<Self, TransportError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| TransportError::Setup(e.into()))?;
        let output = memfd_create(c"criu-output", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| TransportError::Setup(e.into()))?;
        let output = File::from(output);

        let mut args = global_args.to_vec();
        args.push("swrk".into());
        args.push(SWRK_FD.to_string().into());
        let mut pass = vec![PassFd {
            fd: theirs.as_fd(),
            target: SWRK_FD,
        }];
        pass.extend(fds);
        let child = launcher
            .launch(LaunchSpec {
                program,
                args,
                fds: pass,
                output: output.as_fd(),
            })
            .map_err(|source| TransportError::Spawn {
                program: program.to_path_buf(),
                source,
            })?;
        // Only CRIU may hold the other end, so that its exit reads as EOF.
        drop(theirs);
        tracing::debug!(program = %program.display(), pid = child.id(), "started criu swrk");
        Ok(Self {
            socket: ours,
            child: Some(child),
            output,
            program: program.to_path_buf(),
            dependents: Vec::new(),
        })
    }

    /// Kills `pid`, a child CRIU started, when this session is killed or
    /// dropped.
    pub fn adopt(&mut self, pid: u32) {
        self.dependents.push(pid);
    }

    /// Stops tracking `pid` (CRIU has reaped it).
    pub fn release(&mut self, pid: u32) {
        self.dependents.retain(|&p| p != pid);
    }

    /// CRIU's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends one request.
    pub fn send(&mut self, request: &'static str, req: &CriuReq) -> Result<(), TransportError> {
        let bytes = req.encode_to_vec();
        let sent = match send(self.socket.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            // The default send buffer (~208 KiB) caps one packet; a request
            // with many externals can exceed it, so grow the buffer once.
            Err(Errno::EMSGSIZE) => {
                let wanted = bytes.len().saturating_mul(2).max(1 << 20);
                setsockopt(&self.socket, sockopt::SndBuf, &wanted)
                    .and_then(|()| send(self.socket.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL))
            }
            other => other,
        };
        match sent {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(_) => Err(TransportError::Send {
                request,
                source: io::Error::new(io::ErrorKind::WriteZero, "short write"),
            }),
            // CRIU has gone: report how it ended rather than the broken pipe.
            Err(Errno::EPIPE | Errno::ECONNRESET) => Err(self.exited()),
            Err(e) => Err(TransportError::Send {
                request,
                source: e.into(),
            }),
        }
    }

    /// Receives one message, waiting at most until `deadline`.
    pub fn recv(
        &mut self,
        deadline: Option<(Instant, Duration)>,
        cancel: Option<&CancelToken>,
    ) -> Result<Incoming, TransportError> {
        self.wait_readable(deadline, cancel)?;
        // Peek with MSG_TRUNC to learn the packet's full size. No control
        // buffer here: a peek would install duplicate descriptors.
        let size = match recv(
            self.socket.as_raw_fd(),
            &mut [],
            MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
        ) {
            Ok(0) | Err(Errno::ECONNRESET) => return Err(self.exited()),
            Ok(n) => n,
            Err(e) => return Err(TransportError::Receive(e.into())),
        };
        let mut buf = vec![0u8; size];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
        let (len, flags, raw_fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(|e| TransportError::Receive(e.into()))?;
            let mut raw_fds = Vec::new();
            for c in msg.cmsgs().map_err(|e| TransportError::Receive(e.into()))? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    raw_fds.extend(fds);
                }
            }
            (msg.bytes, msg.flags, raw_fds)
        };
        let fds: Vec<OwnedFd> = raw_fds
            .into_iter()
            // SAFETY: SCM_RIGHTS installed these descriptors in our table for
            // this message only; nothing else refers to them, so each is
            // owned exactly once, here.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        if flags.contains(MsgFlags::MSG_TRUNC) || len != size {
            return Err(TransportError::Truncated { what: "message" });
        }
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(TransportError::Truncated {
                what: "descriptors",
            });
        }
        let resp = CriuResp::decode(&buf[..len]).map_err(TransportError::Decode)?;
        Ok(Incoming { resp, fds })
    }

    /// Waits for CRIU's next message, its deadline or a cancellation; the
    /// latter two kill CRIU.
    fn wait_readable(
        &mut self,
        deadline: Option<(Instant, Duration)>,
        cancel: Option<&CancelToken>,
    ) -> Result<(), TransportError> {
        loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some((at, total)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.kill();
                        return Err(TransportError::TimedOut { timeout: total });
                    }
                    let ms = left.as_millis().clamp(1, 60_000);
                    PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = vec![PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            if let Some(token) = cancel {
                fds.push(PollFd::new(token.fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(TransportError::Receive(e.into())),
            }
            let cancelled = fds
                .get(1)
                .and_then(PollFd::revents)
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
            if cancelled {
                self.kill();
                return Err(TransportError::Cancelled);
            }
            return Ok(());
        }
    }

    /// Waits for CRIU to exit after its final answer and returns its status.
    pub fn finish(&mut self) -> Option<ExitStatus> {
        self.reap(EXIT_GRACE)
    }

    /// The error for "CRIU went away": its exit status and last words.
    fn exited(&mut self) -> TransportError {
        let status = self.reap(EXIT_GRACE);
        let output = self.output_tail();
        match status {
            Some(status) => TransportError::Exited {
                program: self.program.clone(),
                status,
                output,
            },
            None => TransportError::Receive(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "CRIU closed the RPC socket",
            )),
        }
    }

    /// The last lines CRIU printed, on one line.
    pub fn output_tail(&mut self) -> String {
        let mut text = String::new();
        let len = self.output.seek(SeekFrom::End(0)).unwrap_or(0);
        if self
            .output
            .seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL)))
            .is_ok()
        {
            let mut bytes = Vec::new();
            let _ = self.output.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }

    /// Waits up to `grace` for the process to exit, then kills it.
    fn reap(&mut self, grace: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let until = Instant::now() + grace;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
                Ok(None) => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        self.child = None;
        // CRIU is gone, its children reparented: their pids are no longer
        // safe to signal.
        self.dependents.clear();
        status
    }

    /// Kills CRIU's dependent children and CRIU at once, and reaps CRIU.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            for pid in self.dependents.drain(..) {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Swrk {
    fn drop(&mut self) {
        if self.child.is_some() {
            tracing::debug!(pid = self.pid(), "stopping criu swrk");
            self.kill();
        }
    }
}
