//! A workload for checkpoint/restore tests: holds memory of known content
//! and counts, so a test can tell that a restored process continued where it
//! left off with its memory intact.
//!
//! `crabmigrate-workload [--mem-mib N] [--out FILE | --stdout] [--interval-ms M] [--setsid]
//!  [--tcp-echo ADDR:PORT] [--udp-echo ADDR:PORT] [--flock FILE] [--unix-dgram PATH]
//!  [--open-unlinked FILE]`
//!
//! Each tick it writes `COUNTER CHECKSUM PID` (to FILE, replaced atomically,
//! or as a line on stdout). The checksum covers the whole held memory and is
//! recomputed every tick.
//!
//! What it holds besides, for the socket and file tests:
//! - `--tcp-echo`: a TCP listener; every line received on a connection is
//!   answered with `SERVED LINE`, SERVED counting every line the process
//!   answered (so a restart, unlike a restore, starts over at 1);
//! - `--udp-echo`: a UDP socket answering each datagram with `SERVED DATA`;
//! - `--flock`: an exclusive flock on FILE (created if missing);
//! - `--unix-dgram`: a unix datagram socket connected to PATH (bound by
//!   someone else), sent each tick's line;
//! - `--open-unlinked`: FILE created with a second hard link `FILE.link`,
//!   opened, then FILE unlinked; each tick checks the open file still reads
//!   back (exit status 4 if not).

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Args {
    mem_mib: usize,
    out: Option<PathBuf>,
    interval: Duration,
    setsid: bool,
    tcp_echo: Option<String>,
    udp_echo: Option<String>,
    flock: Option<PathBuf>,
    unix_dgram: Option<PathBuf>,
    open_unlinked: Option<PathBuf>,
}

/// What every held resource needs to stay alive until the process ends.
struct Held {
    unix: Option<std::os::unix::net::UnixDatagram>,
    unlinked: Option<std::fs::File>,
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

const UNLINKED_CONTENT: &[u8] = b"still here after the restore";

fn hold(args: &Args) -> Result<Held, String> {
    let served = Arc::new(AtomicU64::new(0));
    if let Some(addr) = &args.tcp_echo {
        let listener = TcpListener::bind(addr).map_err(|e| format!("--tcp-echo {addr}: {e}"))?;
        let served = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let served = served.clone();
                std::thread::spawn(move || echo_tcp(conn, &served));
            }
        });
    }
    if let Some(addr) = &args.udp_echo {
        let socket = UdpSocket::bind(addr).map_err(|e| format!("--udp-echo {addr}: {e}"))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let count = served.fetch_add(1, Ordering::SeqCst) + 1;
                let mut reply = format!("{count} ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, peer);
            }
        });
    }
    let lock = match &args.flock {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| format!("--flock {}: {e}", path.display()))?;
            Some(
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| format!("--flock {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let unix = match &args.unix_dgram {
        Some(path) => {
            let socket = std::os::unix::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
            socket
                .connect(path)
                .map_err(|e| format!("--unix-dgram {}: {e}", path.display()))?;
            // A peer that reads slowly must not stop the ticks.
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            Some(socket)
        }
        None => None,
    };
    let unlinked = match &args.open_unlinked {
        Some(path) => {
            let bad = |e: std::io::Error| format!("--open-unlinked {}: {e}", path.display());
            std::fs::write(path, UNLINKED_CONTENT).map_err(bad)?;
            let link = path.with_extension("link");
            let _ = std::fs::remove_file(&link);
            std::fs::hard_link(path, &link).map_err(bad)?;
            let file = std::fs::File::open(path).map_err(bad)?;
            std::fs::remove_file(path).map_err(bad)?;
            Some(file)
        }
        None => None,
    };
    Ok(Held {
        unix,
        unlinked,
        _lock: lock,
    })
}

fn echo_tcp(conn: TcpStream, served: &AtomicU64) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let count = served.fetch_add(1, Ordering::SeqCst) + 1;
        if writer
            .write_all(format!("{count} {line}\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        mem_mib: 0,
        out: None,
        interval: Duration::from_millis(100),
        setsid: false,
        tcp_echo: None,
        udp_echo: None,
        flock: None,
        unix_dgram: None,
        open_unlinked: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--mem-mib" => {
                args.mem_mib = value()?.parse().map_err(|e| format!("--mem-mib: {e}"))?
            }
            "--out" => args.out = Some(PathBuf::from(value()?)),
            "--stdout" => args.out = None,
            "--interval-ms" => {
                args.interval = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--interval-ms: {e}"))?,
                )
            }
            "--setsid" => args.setsid = true,
            "--tcp-echo" => args.tcp_echo = Some(value()?),
            "--udp-echo" => args.udp_echo = Some(value()?),
            "--flock" => args.flock = Some(PathBuf::from(value()?)),
            "--unix-dgram" => args.unix_dgram = Some(PathBuf::from(value()?)),
            "--open-unlinked" => args.open_unlinked = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crabmigrate-workload: {e}");
            std::process::exit(2);
        }
    };
    if args.setsid {
        let _ = nix::unistd::setsid();
    }
    let mut held = match hold(&args) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("crabmigrate-workload: {e}");
            std::process::exit(2);
        }
    };
    // Pseudo-random content (xorshift), so pages are neither zero nor alike.
    let words = args.mem_mib * (1 << 20) / 8;
    let mut memory = vec![0u64; words];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    for w in memory.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *w = x;
    }
    let pid = std::process::id();
    let mut counter: u64 = 0;
    loop {
        counter += 1;
        let checksum = memory.iter().fold(0u64, |acc, w| acc.rotate_left(5) ^ w);
        let line = format!("{counter} {checksum:016x} {pid}\n");
        if let Some(socket) = &held.unix {
            // The peer may be gone for a while (a test restarts it): keep on.
            let _ = socket.send(line.as_bytes());
        }
        if let Some(file) = held.unlinked.as_mut() {
            let mut content = Vec::new();
            if file
                .rewind()
                .and_then(|()| file.read_to_end(&mut content))
                .is_err()
                || content != UNLINKED_CONTENT
            {
                std::process::exit(4);
            }
        }
        match &args.out {
            Some(path) => {
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, &line)
                    .and_then(|()| std::fs::rename(&tmp, path))
                    .is_err()
                {
                    std::process::exit(3);
                }
            }
            None => {
                let mut stdout = std::io::stdout().lock();
                if stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    std::process::exit(3);
                }
            }
        }
        std::thread::sleep(args.interval);
    }
}
