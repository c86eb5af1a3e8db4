//! Announcing a container's addresses on its link once it is reachable
//! again: a gratuitous ARP (request and reply) per IPv4 address and an
//! unsolicited neighbour advertisement per IPv6 address, so that switches
//! learn the new port and neighbours refresh their caches at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::netns;

/// Why an announcement could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("{0:?} is not a MAC address")]
    BadMac(String),
    #[error("there is no interface {ifname} in the network namespace {netns}")]
    NoInterface { ifname: String, netns: PathBuf },
    #[error("cannot {what} on {ifname}")]
    Sys {
        what: &'static str,
        ifname: String,
        #[source]
        source: nix::Error,
    },
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], AnnounceError> {
    let bad = || AnnounceError::BadMac(text.to_owned());
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// Sends the announcements for `addresses` out of `ifname` (whose MAC is
/// `mac`) in the namespace at `netns`.
pub fn announce(
    netns: &Path,
    ifname: &str,
    mac: &str,
    addresses: &[IpAddr],
) -> Result<(), AnnounceError> {
    let mac = parse_mac(mac)?;
    netns::run_in(netns, || {
        let name = std::ffi::CString::new(ifname).map_err(|_| AnnounceError::NoInterface {
            ifname: ifname.to_owned(),
            netns: netns.to_path_buf(),
        })?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(AnnounceError::NoInterface {
                ifname: ifname.to_owned(),
                netns: netns.to_path_buf(),
            });
        }
        for address in addresses {
            match address {
                IpAddr::V4(a) => gratuitous_arp(ifname, index, mac, *a)?,
                IpAddr::V6(a) => neighbour_advertisement(ifname, index, mac, *a)?,
            }
        }
        Ok(())
    })?
}

fn sys<'a>(what: &'static str, ifname: &'a str) -> impl FnOnce(nix::Error) -> AnnounceError + 'a {
    move |source| AnnounceError::Sys {
        what,
        ifname: ifname.to_owned(),
        source,
    }
}

/// A new socket of the calling thread's namespace.
fn socket(domain: i32, kind: i32, protocol: i32) -> Result<OwnedFd, nix::Error> {
    // SAFETY: socket takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: `fd` was just returned by socket and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The 28-byte ARP payload announcing `ip` at `mac` (`op` 1 request, 2 reply).
pub(crate) fn arp_packet(op: u8, mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&u16::from(op).to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    if op == 2 {
        p[18..24].copy_from_slice(&[0xff; 6]);
    }
    p[24..28].copy_from_slice(&ip.octets());
    p
}

fn gratuitous_arp(
    ifname: &str,
    index: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
) -> Result<(), AnnounceError> {
    let proto = (libc::ETH_P_ARP as u16).to_be();
    let sock = socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto))
        .map_err(sys("open a packet socket", ifname))?;
    // SAFETY: sockaddr_ll is plain data, valid when zeroed.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = proto;
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for op in [1u8, 2] {
        let packet = arp_packet(op, mac, ip);
        // SAFETY: `packet` and `to` are valid for the given lengths for the
        // whole call.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(sys("send a gratuitous ARP", ifname)(nix::Error::last()));
        }
    }
    Ok(())
}

/// The ICMPv6 neighbour advertisement (override set) for `ip` at `mac`;
/// the kernel fills in the checksum.
pub(crate) fn advertisement(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 136; // neighbour advertisement
    p[4] = 0x20; // override
    p[8..24].copy_from_slice(&ip.octets());
    p[24] = 2; // target link-layer address option
    p[25] = 1; // 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

fn neighbour_advertisement(
    ifname: &str,
    index: u32,
    mac: [u8; 6],
    ip: Ipv6Addr,
) -> Result<(), AnnounceError> {
    use nix::sys::socket::{setsockopt, sockopt};
    let sock = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)
        .map_err(sys("open an ICMPv6 socket", ifname))?;
    setsockopt(&sock, sockopt::Ipv6MulticastHops, &255)
        .map_err(sys("set the hop limit", ifname))?;
    // SAFETY: IPV6_MULTICAST_IF reads an interface index (an unsigned
    // int), which `index` is, for the whole call.
    let chosen = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            std::ptr::from_ref(&index).cast(),
            std::mem::size_of::<u32>() as u32,
        )
    };
    if chosen != 0 {
        return Err(sys("choose the interface", ifname)(nix::Error::last()));
    }
    // SAFETY: sockaddr_in6 is plain data, valid when zeroed.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    from.sin6_family = libc::AF_INET6 as u16;
    from.sin6_addr.s6_addr = ip.octets();
    from.sin6_scope_id = index;
    // SAFETY: `from` is a valid sockaddr_in6 for the whole call.
    let bound = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::from_ref(&from).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    if bound != 0 {
        return Err(sys("bind to the address", ifname)(nix::Error::last()));
    }
    let mut to = from;
    to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    let packet = advertisement(mac, ip);
    // SAFETY: `packet` and `to` are valid for the given lengths for the
    // whole call.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&to).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    if sent < 0 {
        return Err(sys("send a neighbour advertisement", ifname)(
            nix::Error::last(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:42:0a:58:00:07").unwrap(),
            [2, 0x42, 10, 0x58, 0, 7]
        );
        for bad in [
            "",
            "02:42:0a:58:00",
            "02:42:0a:58:00:07:01",
            "zz:00:00:00:00:00",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packets_carry_the_address_twice() {
        let mac = [2, 0, 0, 0, 0, 9];
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        let p = arp_packet(1, mac, ip);
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &mac);
        assert_eq!(&p[14..18], &ip.octets());
        assert_eq!(&p[24..28], &ip.octets());
        assert_eq!(&arp_packet(2, mac, ip)[18..24], &[0xff; 6]);
        let v6: Ipv6Addr = "fd00::5".parse().unwrap();
        let na = advertisement(mac, v6);
        assert_eq!(na[0], 136);
        assert_eq!(&na[8..24], &v6.octets());
        assert_eq!(&na[26..], &mac);
    }
}
