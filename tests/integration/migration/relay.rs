//! A TCP relay that alters one byte of the stream.

use super::lab::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
