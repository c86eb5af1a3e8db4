//! A workload for checkpoint/restore tests: holds memory of known content
//! and counts, so a test can tell that a restored process continued where it
//! left off with its memory intact.
//!
//! `crabmigrate-workload [--mem-mib N] [--out FILE | --stdout] [--interval-ms M] [--setsid]`
//! `crabmigrate-workload --udp-echo PORT`
//!
//! Each tick it writes `COUNTER CHECKSUM PID` (to FILE, replaced atomically,
//! or as a line on stdout). The checksum covers the whole held memory and is
//! recomputed every tick.
//!
//! With `--udp-echo PORT` it is a UDP echo service instead: each datagram
//! comes back prefixed with a token drawn at start (`TOKEN PAYLOAD`), so a
//! client can tell that the same process answers after a restore.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

struct Args {
    mem_mib: usize,
    out: Option<PathBuf>,
    interval: Duration,
    setsid: bool,
    udp_echo: Option<u16>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        mem_mib: 0,
        out: None,
        interval: Duration::from_millis(100),
        setsid: false,
        udp_echo: None,
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
            "--udp-echo" => {
                args.udp_echo = Some(value()?.parse().map_err(|e| format!("--udp-echo: {e}"))?)
            }
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
    if let Some(port) = args.udp_echo {
        udp_echo(port);
    }
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

/// Echoes datagrams on `port`, each prefixed with this process's token.
fn udp_echo(port: u16) -> ! {
    let socket = match std::net::UdpSocket::bind(("0.0.0.0", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crabmigrate-workload: cannot bind UDP port {port}: {e}");
            std::process::exit(2);
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let token = format!("{:08x}", nanos ^ std::process::id().rotate_left(16));
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let mut reply = format!("{token} ").into_bytes();
        reply.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&reply, peer);
    }
}
