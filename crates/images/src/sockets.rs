//! The inet (TCP and UDP) sockets of a checkpoint, with their addresses:
//! what a restore needs from the host it runs on.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use criu_proto::images::{FileEntry, InetSkEntry, InventoryEntry};

use crate::magic;
use crate::read::{self, ImageError};

/// CRIU's file type number of an inet socket (`FD_TYPES__INETSK`).
const FD_TYPE_INETSK: u32 = 4;
const AF_INET6: u32 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Linux's TCP states (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u32 = 1;
const TCP_LISTEN: u32 = 10;

/// The transport of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP (or UDP-Lite).
    Udp,
    /// Raw, ICMP or anything else over IP.
    Other,
}

/// What a TCP socket was doing when it was dumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRole {
    /// Waiting for connections.
    Listening,
    /// Connected (needs --tcp-established or --tcp-close).
    Established,
    /// Any other state (closed, half open, closing).
    Other,
}

/// One inet socket of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetSocket {
    /// The socket's inode on the dumped host.
    pub inode: u32,
    /// TCP, UDP or other.
    pub transport: Transport,
    /// For TCP: listening, established or other.
    pub tcp: Option<TcpRole>,
    /// The local address and port (unspecified address: bound to all).
    pub local: SocketAddr,
    /// The peer, for a connected socket.
    pub remote: Option<SocketAddr>,
}

impl InetSocket {
    /// The local address, when it is a specific one the host must have (not
    /// the wildcard).
    pub fn specific_local_address(&self) -> Option<IpAddr> {
        let ip = self.local.ip();
        (!ip.is_unspecified()).then_some(ip)
    }
}

impl fmt::Display for InetSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match (self.transport, self.tcp) {
            (Transport::Tcp, Some(TcpRole::Listening)) => "TCP listener",
            (Transport::Tcp, Some(TcpRole::Established)) => "TCP connection",
            (Transport::Tcp, _) => "TCP socket",
            (Transport::Udp, _) => "UDP socket",
            (Transport::Other, _) => "inet socket",
        };
        write!(f, "{kind} {}", self.local)?;
        if let Some(remote) = self.remote {
            write!(f, " -> {remote}")?;
        }
        Ok(())
    }
}

/// The inet sockets listed in `dir/files.img` (none when the checkpoint has
/// no such file).
pub fn inet_sockets(dir: &Path) -> Result<Vec<InetSocket>, ImageError> {
    let path = dir.join("files.img");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let files: Vec<FileEntry> = read::entries(&path, magic::FILES, "file")?;
    Ok(files
        .iter()
        .filter(|f| f.r#type == FD_TYPE_INETSK)
        .filter_map(|f| f.isk.as_ref())
        .map(socket_of)
        .collect())
}

/// Whether the checkpoint was taken with tcp-close (its connections can
/// only come back closed, and CRIU wants --tcp-close at restore).
pub fn dumped_with_tcp_close(dir: &Path) -> Result<bool, ImageError> {
    let inventory: InventoryEntry =
        read::single(&dir.join("inventory.img"), magic::INVENTORY, "inventory")?;
    Ok(inventory.tcp_close == Some(true))
}

fn socket_of(s: &InetSkEntry) -> InetSocket {
    let transport = match (s.proto, s.r#type) {
        (IPPROTO_TCP, _) | (0, SOCK_STREAM) => Transport::Tcp,
        (IPPROTO_UDP | 136, _) | (0, SOCK_DGRAM) => Transport::Udp,
        _ => Transport::Other,
    };
    let tcp = (transport == Transport::Tcp).then_some(match s.state {
        TCP_LISTEN => TcpRole::Listening,
        TCP_ESTABLISHED => TcpRole::Established,
        _ => TcpRole::Other,
    });
    let v6 = s.family == AF_INET6;
    let local = SocketAddr::new(address(&s.src_addr, v6), port(s.src_port));
    let remote =
        (s.dst_port != 0).then(|| SocketAddr::new(address(&s.dst_addr, v6), port(s.dst_port)));
    InetSocket {
        inode: s.id,
        transport,
        tcp,
        local,
        remote,
    }
}

/// CRIU stores addresses as 32-bit words in network byte order, as read
/// from the kernel (so their in-memory bytes are the address's bytes).
fn address(words: &[u32], v6: bool) -> IpAddr {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if v6 {
        let mut octets = [0u8; 16];
        for (slot, byte) in octets.iter_mut().zip(&bytes) {
            *slot = *byte;
        }
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        let mut octets = [0u8; 4];
        for (slot, byte) in octets.iter_mut().zip(&bytes) {
            *slot = *byte;
        }
        IpAddr::V4(Ipv4Addr::from(octets))
    }
}

fn port(p: u32) -> u16 {
    u16::try_from(p).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ip: Ipv4Addr) -> Vec<u32> {
        vec![u32::from_ne_bytes(ip.octets())]
    }

    #[test]
    fn decodes_an_established_ipv4_connection() {
        let entry = InetSkEntry {
            id: 7,
            family: 2,
            r#type: SOCK_STREAM,
            proto: IPPROTO_TCP,
            state: TCP_ESTABLISHED,
            src_port: 7070,
            dst_port: 40000,
            src_addr: words(Ipv4Addr::new(10, 77, 0, 2)),
            dst_addr: words(Ipv4Addr::new(10, 77, 0, 1)),
            ..Default::default()
        };
        let s = socket_of(&entry);
        assert_eq!(s.tcp, Some(TcpRole::Established));
        assert_eq!(
            s.specific_local_address(),
            Some(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)))
        );
        assert_eq!(
            s.to_string(),
            "TCP connection 10.77.0.2:7070 -> 10.77.0.1:40000"
        );
    }

    #[test]
    fn a_wildcard_listener_needs_no_address() {
        let entry = InetSkEntry {
            family: AF_INET6,
            r#type: SOCK_STREAM,
            proto: IPPROTO_TCP,
            state: TCP_LISTEN,
            src_port: 80,
            src_addr: vec![0; 4],
            ..Default::default()
        };
        let s = socket_of(&entry);
        assert_eq!(s.tcp, Some(TcpRole::Listening));
        assert_eq!(s.specific_local_address(), None);
        assert_eq!(s.to_string(), "TCP listener [::]:80");
    }

    #[test]
    fn short_or_missing_address_words_do_not_panic() {
        let entry = InetSkEntry {
            family: AF_INET6,
            proto: IPPROTO_UDP,
            src_addr: vec![1],
            ..Default::default()
        };
        assert_eq!(socket_of(&entry).transport, Transport::Udp);
    }
}
