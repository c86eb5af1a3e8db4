//! A relay that speaks the protocol: it holds the key, so it terminates
//! the channel with the source and opens its own to the agent, and can
//! act at an exact message — drop Commit, cut the link right after it, or
//! turn the destination's refused restore into a `Restored` (so a tree
//! that cannot be restored on the same machine still reaches the commit).
//! Data connections are relayed frame by frame, unread.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crabmigrate_migrate::channel::{ChannelError, SecureChannel};
use crabmigrate_migrate::key::Key;
use crabmigrate_migrate::protocol::{Body, Envelope, Restored, Step, PROTOCOL_VERSION};

use super::lab::NetNs;

/// What the relay does at the cut-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// Commit never reaches the agent; both connections end.
    DropCommit,
    /// Commit reaches the agent, then both connections end (Committed is
    /// lost).
    CutAfterCommit,
    /// A refused restore reaches the source as `Restored`; then as
    /// `DropCommit`.
    ForgeRestored,
    /// Commit reaches the agent three seconds late (it waits at its
    /// post-restore hold meanwhile).
    DelayCommit,
    /// Restored reaches the source three seconds late (it waits for the
    /// restore meanwhile).
    DelayRestored,
}

/// The relay, listening on loopback in a namespace.
#[derive(Debug)]
pub(super) struct Mitm {
    pub(super) addr: String,
    /// How many times the rule acted.
    pub(super) acted: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn key_of(path: &Path) -> Key {
    Key::load(path).expect("the test key loads")
}

impl Mitm {
    /// Starts the relay in `ns`, relaying to `upstream` with the key at
    /// `key`.
    pub(super) fn start(ns: &NetNs, upstream: &str, key: &Path, rule: Rule) -> Self {
        let key = key_of(key);
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap().to_string();
        let acted = Arc::new(AtomicUsize::new(0));
        let netns = std::fs::File::open(ns.path()).unwrap();
        // Outgoing connections start in the namespace too: every runtime
        // thread enters it first.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns");
            })
            .build()
            .unwrap();
        let (upstream, a) = (upstream.to_owned(), Arc::clone(&acted));
        listener.set_nonblocking(true).unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                let (key, upstream, acted) = (key.clone(), upstream.clone(), Arc::clone(&a));
                tokio::spawn(async move {
                    if let Err(e) = relay(client, &upstream, &key, rule, &acted).await {
                        eprintln!("mitm: a relayed connection ended: {e}");
                    }
                });
            }
        });
        Self {
            addr,
            acted,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Ends both connections at once (the peers read end of stream).
fn cut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

async fn relay(
    client: tokio::net::TcpStream,
    upstream: &str,
    key: &Key,
    rule: Rule,
    acted: &AtomicUsize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = client.into_std()?;
    let server = std::net::TcpStream::connect(upstream)?;
    // Copies to cut the connections with, whoever owns them by then.
    let (client_cut, server_cut) = (client.try_clone()?, server.try_clone()?);
    client.set_nonblocking(true)?;
    server.set_nonblocking(true)?;
    let down = SecureChannel::accept(
        Box::new(tokio::net::TcpStream::from_std(client)?),
        key,
        PROTOCOL_VERSION,
    )
    .await?;
    let mut up = SecureChannel::connect(
        Box::new(tokio::net::TcpStream::from_std(server)?),
        key,
        PROTOCOL_VERSION,
    )
    .await?;
    let (mut dtx, mut drx) = down.split();
    let first = drx.recv_frame().await?;
    up.send_frame(&first).await?;
    let control = matches!(Envelope::decode_checked(&first), Ok(Body::Hello(_)));
    let (mut utx, mut urx) = up.split();
    let to_agent = async {
        loop {
            let frame = match drx.recv_frame().await {
                Ok(f) => f,
                // The source ended its direction: so does the relay.
                Err(ChannelError::Closed) => {
                    let _ = utx.shutdown().await;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            if control
                && rule == Rule::DelayCommit
                && matches!(Envelope::decode_checked(&frame), Ok(Body::Commit(_)))
            {
                acted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                utx.send_frame(&frame).await?;
                continue;
            }
            if control && matches!(Envelope::decode_checked(&frame), Ok(Body::Commit(_))) {
                acted.fetch_add(1, Ordering::Relaxed);
                if rule == Rule::CutAfterCommit {
                    utx.send_frame(&frame).await?;
                    // Let the agent read it before the end.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                cut(&client_cut, &server_cut);
                return Ok::<(), Box<dyn std::error::Error + Send + Sync>>(());
            }
            utx.send_frame(&frame).await?;
        }
    };
    let to_source = async {
        loop {
            let mut frame = match urx.recv_frame().await {
                Ok(f) => f,
                Err(ChannelError::Closed) => {
                    let _ = dtx.shutdown().await;
                    return Ok::<(), Box<dyn std::error::Error + Send + Sync>>(());
                }
                Err(e) => return Err(e.into()),
            };
            if control
                && rule == Rule::DelayRestored
                && matches!(Envelope::decode_checked(&frame), Ok(Body::Restored(_)))
            {
                acted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            if control && rule == Rule::ForgeRestored {
                if let Ok(Body::Refuse(r)) = Envelope::decode_checked(&frame) {
                    if r.refused_step() == Step::Restore {
                        acted.fetch_add(1, Ordering::Relaxed);
                        frame = Envelope::new(Body::Restored(Restored {
                            pid: 1,
                            restore_time_us: 1,
                        }))
                        .encode_checked()?;
                    }
                }
            }
            dtx.send_frame(&frame).await?;
        }
    };
    tokio::try_join!(to_agent, to_source).map(|_| ())
}
