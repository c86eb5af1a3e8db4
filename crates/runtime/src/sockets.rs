//! Sockets and CRIU: which network lock to use, and a real probe of whether
//! this CRIU can dump a process that holds TCP and UDP sockets.
//!
//! `criu check` never tries a socket, and CRIU 4.1 passes it on Linux 6.16+
//! while failing on every inet socket (`Can't get 1:16 opt`). So the probe
//! dumps a throwaway process for real: it holds a TCP listener, both ends of
//! an established loopback connection with unread data queued each way, and
//! a connected UDP socket. Everything happens in a network namespace of the
//! probing thread's own, which vanishes with the probe, together with the
//! lock rules CRIU leaves for the dumped connections.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criu_rpc::{feature, Criu, DumpOptions, DumpRequest, NetworkLock};
use serde::Serialize;

use crate::host;

/// What the holder prints once its sockets are in place.
const READY: &str = "sockets ready";
/// How long a holder lives at most, should its prober vanish.
const HOLDER_LIFETIME: Duration = Duration::from_secs(60);

/// The network lock CRIU should use here, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkLockChoice {
    /// The method, or none when neither works.
    pub method: Option<NetworkLock>,
    /// Why this one.
    pub why: String,
}

/// Picks CRIU's network lock: iptables (CRIU's default) when
/// `iptables-restore` is installed, else nftables when this CRIU can lock
/// with it (`criu check --feature network_lock_nftables`).
pub fn choose_network_lock(criu: &Criu) -> NetworkLockChoice {
    if let Some(path) = host::find_tool("iptables-restore") {
        return NetworkLockChoice {
            method: Some(NetworkLock::Iptables),
            why: format!("iptables-restore is at {}", path.display()),
        };
    }
    match criu.check_feature(feature::NETWORK_LOCK_NFTABLES) {
        Ok(probe) if probe.ok => NetworkLockChoice {
            method: Some(NetworkLock::Nftables),
            why: "iptables-restore is missing and this CRIU locks with nftables".into(),
        },
        Ok(probe) => NetworkLockChoice {
            method: None,
            why: format!(
                "iptables-restore is missing and CRIU cannot lock with nftables ({}); install iptables",
                probe.reason().unwrap_or("no reason given")
            ),
        },
        Err(e) => NetworkLockChoice {
            method: None,
            why: format!("iptables-restore is missing and CRIU could not be asked about nftables ({e}); install iptables"),
        },
    }
}

/// Why the socket probe could not dump its process.
#[derive(Debug, thiserror::Error)]
pub enum SocketProbeError {
    /// The probe's own network namespace could not be made.
    #[error("cannot make a network namespace for the probe")]
    Namespace(#[source] nix::Error),
    /// Loopback would not come up in it.
    #[error("cannot bring up loopback in the probe's network namespace")]
    Loopback(#[source] std::io::Error),
    /// The holder process did not start or set up its sockets.
    #[error("the socket-holding process did not start")]
    Holder(#[source] std::io::Error),
    /// The holder said something else than ready.
    #[error("the socket-holding process failed: {0}")]
    HolderFailed(String),
    /// A temporary images directory could not be made.
    #[error("cannot make a temporary images directory")]
    Images(#[source] std::io::Error),
    /// CRIU failed to dump it.
    #[error("CRIU cannot dump a process holding TCP and UDP sockets")]
    Dump(#[source] criu_rpc::DumpError),
    /// The probe's thread died.
    #[error("the probe's thread panicked")]
    Panicked,
}

impl SocketProbeError {
    /// CRIU's own words when the dump failed (its first logged error),
    /// without our remedy or the log's path: the probe's log is gone.
    pub fn criu_words(&self) -> Option<String> {
        let Self::Dump(e) = self else { return None };
        let criu_rpc::RequestError::Call(criu_rpc::CallError::Failed(failure)) = &e.source else {
            return None;
        };
        failure
            .log_errors
            .first()
            .or(failure.errmsg.as_ref())
            .map(|words| words.trim().to_owned())
    }
}

/// Dumps (with tcp-established, into a temporary directory that is then
/// removed) a process started from `holder` that runs
/// [`hold_sockets`]. Runs on a thread of its own in a fresh network
/// namespace, where CRIU is started too.
pub fn probe(
    criu: &Criu,
    holder: Command,
    lock: Option<NetworkLock>,
) -> Result<(), SocketProbeError> {
    std::thread::scope(|s| {
        s.spawn(move || probe_in_own_netns(criu, holder, lock))
            .join()
            .unwrap_or(Err(SocketProbeError::Panicked))
    })
}

fn probe_in_own_netns(
    criu: &Criu,
    mut holder: Command,
    lock: Option<NetworkLock>,
) -> Result<(), SocketProbeError> {
    // Only this thread moves; the thread ends with the probe, so nothing
    // else of the process ever runs in the namespace.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(SocketProbeError::Namespace)?;
    loopback_up().map_err(SocketProbeError::Loopback)?;
    let images = tempfile::Builder::new()
        .prefix("crabmigrate-socket-probe.")
        .tempdir()
        .map_err(SocketProbeError::Images)?;
    let images_dir = std::fs::File::open(images.path()).map_err(SocketProbeError::Images)?;
    let mut child = KillOnDrop(
        holder
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(SocketProbeError::Holder)?,
    );
    wait_ready(&mut child.0)?;
    let mut request = DumpRequest::new(child.0.id(), images_dir.as_fd());
    request.options = DumpOptions {
        tcp_established: true,
        network_lock: lock,
        ..Default::default()
    };
    criu.dump(&request, None).map_err(SocketProbeError::Dump)?;
    Ok(())
}

/// Reads the holder's first line: ready, or its error.
fn wait_ready(child: &mut Child) -> Result<(), SocketProbeError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SocketProbeError::HolderFailed("no standard output".into()))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(SocketProbeError::Holder)?;
    if line.trim_end() == READY {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    let said = stderr.lines().next().unwrap_or("it exited without a word");
    Err(SocketProbeError::HolderFailed(said.to_owned()))
}

/// Kills and reaps the holder however the probe ends (CRIU has usually
/// killed it already).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Brings `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // Any inet socket serves for the ioctl.
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    host::set_interface_up(socket.as_fd(), "lo")
}

/// Closes every descriptor above the standard streams.
fn close_inherited_descriptors() -> std::io::Result<()> {
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in open {
        // The directory's own descriptor is closed by now; EBADF is fine.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// The holder's body: sets up the sockets, says [`READY`] on standard
/// output, then waits to be dumped (and killed). Exits by itself after a
/// minute, should the prober have vanished. Run it in a process of its own.
pub fn hold_sockets() -> std::io::Result<Infallible> {
    // Whatever the caller left open (descriptors into other mount
    // namespaces, pipes) is not ours to carry into the dump: CRIU would
    // refuse some of them ("Can't lookup mount") and blame the sockets.
    close_inherited_descriptors()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    // Unread bytes each way: CRIU must carry both queues.
    (&client).write_all(b"ping")?;
    (&server).write_all(b"pong")?;
    let udp_peer = UdpSocket::bind("127.0.0.1:0")?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    udp.connect(udp_peer.local_addr()?)?;
    udp.send(b"datagram")?;
    // CRIU dumps a tree that leads its own session.
    nix::unistd::setsid()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}")?;
    out.flush()?;
    drop(out);
    // Our standard streams are the prober's pipes: let go of them so the
    // dumped tree holds nothing but its sockets and /dev/null.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    std::thread::sleep(HOLDER_LIFETIME);
    drop((listener, client, server, udp, udp_peer));
    Err(std::io::Error::other(
        "nobody dumped the socket holder within a minute",
    ))
}
