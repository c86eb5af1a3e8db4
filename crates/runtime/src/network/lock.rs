//! Locking a container's network namespace: traffic to and from the
//! container's addresses is dropped (iptables rules inside the namespace)
//! until the restored sockets are in place.
//!
//! Why: a restore recreates the namespace, and the addresses are up before
//! CRIU has put the TCP sockets back. A client's retransmission reaching
//! the empty stack then gets a RST and the connection dies. CRIU does not
//! lock a namespace it did not create (an external one), so the runtime
//! does: locked before the interfaces exist, unlocked in CRIU's
//! `network-unlock` notification.
//!
//! The rules live in two chains of their own, hooked into INPUT and
//! OUTPUT, so unlocking removes exactly them.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::netns;

/// The chain dropping traffic to the container's addresses.
pub const CHAIN_IN: &str = "CRABMIGRATE-LOCK-IN";
/// The chain dropping traffic from them.
pub const CHAIN_OUT: &str = "CRABMIGRATE-LOCK-OUT";

/// Why a namespace could not be locked or unlocked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("cannot run {program} in the network namespace {netns}; install iptables (scripts/setup.sh does)")]
    Spawn {
        program: &'static str,
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed to {action} the network namespace {netns}: {output}")]
    Failed {
        program: &'static str,
        action: &'static str,
        netns: PathBuf,
        output: String,
    },
}

/// Drops every packet to or from `addresses` in the namespace at `netns`.
pub fn lock(netns: &Path, addresses: &[IpAddr]) -> Result<(), LockError> {
    for (program, family) in families(addresses) {
        let mut rules = format!("*filter\n:{CHAIN_IN} - [0:0]\n:{CHAIN_OUT} - [0:0]\n");
        for a in &family {
            let bits = if a.is_ipv4() { 32 } else { 128 };
            rules.push_str(&format!("-A {CHAIN_IN} -d {a}/{bits} -j DROP\n"));
            rules.push_str(&format!("-A {CHAIN_OUT} -s {a}/{bits} -j DROP\n"));
        }
        rules.push_str(&format!(
            "-I INPUT 1 -j {CHAIN_IN}\n-I OUTPUT 1 -j {CHAIN_OUT}\nCOMMIT\n"
        ));
        restore(netns, program, "lock", &rules)?;
    }
    Ok(())
}

/// Removes the rules [`lock`] added.
pub fn unlock(netns: &Path, addresses: &[IpAddr]) -> Result<(), LockError> {
    for (program, _) in families(addresses) {
        let rules = format!(
            "*filter\n-D INPUT -j {CHAIN_IN}\n-D OUTPUT -j {CHAIN_OUT}\n\
             -F {CHAIN_IN}\n-F {CHAIN_OUT}\n-X {CHAIN_IN}\n-X {CHAIN_OUT}\nCOMMIT\n"
        );
        restore(netns, program, "unlock", &rules)?;
    }
    Ok(())
}

/// The restore program for each address family present.
fn families(addresses: &[IpAddr]) -> Vec<(&'static str, Vec<IpAddr>)> {
    let v4: Vec<IpAddr> = addresses.iter().copied().filter(IpAddr::is_ipv4).collect();
    let v6: Vec<IpAddr> = addresses.iter().copied().filter(IpAddr::is_ipv6).collect();
    let mut out = Vec::new();
    if !v4.is_empty() {
        out.push(("iptables-restore", v4));
    }
    if !v6.is_empty() {
        out.push(("ip6tables-restore", v6));
    }
    out
}

fn restore(
    netns: &Path,
    program: &'static str,
    action: &'static str,
    rules: &str,
) -> Result<(), LockError> {
    let mut cmd = netns::command_in(netns, program)?;
    cmd.args(["--noflush", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn = |source| LockError::Spawn {
        program,
        netns: netns.to_path_buf(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn)?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(rules.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', " ");
    if text.is_empty() {
        text = out.status.to_string();
    }
    Err(LockError::Failed {
        program,
        action,
        netns: netns.to_path_buf(),
        output: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_split_by_address_kind() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "fd00::3".parse().unwrap();
        let f = families(&[a, b]);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], ("iptables-restore", vec![a]));
        assert_eq!(f[1], ("ip6tables-restore", vec![b]));
        assert!(families(&[]).is_empty());
    }

    #[test]
    fn lock_drops_and_unlock_restores_traffic() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED lock_drops_and_unlock_restores_traffic: needs root");
            return;
        }
        let path = netns::new_path("lock-test");
        netns::create(&path).unwrap();
        struct Gone(PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = netns::remove(&self.0);
            }
        }
        let _gone = Gone(path.clone());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        // A UDP round trip over lo shows whether 127.0.0.1 is reachable.
        let reachable = || {
            netns::run_in(&path, || {
                let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                rx.set_read_timeout(Some(std::time::Duration::from_millis(300)))
                    .unwrap();
                let tx = std::net::UdpSocket::bind("127.0.0.2:0")
                    .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))
                    .unwrap();
                let _ = tx.send_to(b"x", rx.local_addr().unwrap());
                let mut buf = [0u8; 1];
                rx.recv(&mut buf).is_ok()
            })
            .unwrap()
        };
        assert!(reachable());
        lock(&path, &[lo]).unwrap();
        assert!(!reachable(), "locked: traffic to the address is dropped");
        unlock(&path, &[lo]).unwrap();
        assert!(reachable(), "unlocked again");
        let err = unlock(&path, &[lo]).unwrap_err().to_string();
        assert!(err.contains("failed to unlock"), "{err}");
    }
}
