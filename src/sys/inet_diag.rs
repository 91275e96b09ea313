//! What the kernel's socket diagnostics (sock_diag.rs) tell about the TCP
//! sockets that listen on a port. Asked for listeners on one port, the
//! kernel walks its table of listeners alone; each page read of
//! /proc/net/tcp walks every connection of the host, which a waiter that
//! looks at who listens each time its connection is hung up would pay for
//! on a busy host.

use std::net::IpAddr;

use nix::libc;

use crate::sys::procfs::Listener;
use crate::sys::sock_diag::{self, u32_at};

// From the kernel's uapi headers: linux/inet_diag.h, net/tcp_states.h.
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u8 = 10;

/// The TCP sockets, IPv4 and IPv6, that listen on `port`, each with the
/// address it is bound to; None where the kernel cannot tell.
pub fn tcp_listeners(port: u16) -> Option<Vec<(IpAddr, Listener)>> {
    let mut listeners = listeners_of(libc::AF_INET, port)?;
    // A kernel without IPv6 has no handler for it, and no IPv6 listeners.
    listeners.extend(listeners_of(libc::AF_INET6, port).unwrap_or_default());
    Some(listeners)
}

fn listeners_of(family: i32, port: u16) -> Option<Vec<(IpAddr, Listener)>> {
    sock_diag::dump(&dump_request(family, port), |message| {
        listener_on(message, port)
    })
}

/// struct inet_diag_req_v2: family, protocol, extensions, pad, states,
/// then struct inet_diag_sockid, of which only the source port (in network
/// order) is set: listeners on other ports are skipped by the kernel.
fn dump_request(family: i32, port: u16) -> Vec<u8> {
    let mut request = Vec::with_capacity(56);
    request.extend_from_slice(&[family as u8, IPPROTO_TCP, 0, 0]);
    request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    request.resize(56, 0);
    request
}

/// The listener a struct inet_diag_msg describes, if it listens on `port`:
/// family, state, timer, retransmits; the inet_diag_sockid (source port and
/// destination port in network order, source and destination addresses,
/// interface, cookie); expires, queues, uid, inode.
fn listener_on(message: &[u8], port: u16) -> Option<(IpAddr, Listener)> {
    let [family, state] = [*message.first()?, *message.get(1)?];
    let source_port = u16::from_be_bytes(message.get(4..6)?.try_into().ok()?);
    if state != TCP_LISTEN || source_port != port {
        return None;
    }
    let source = message.get(8..24)?;
    let ip = match i32::from(family) {
        libc::AF_INET => IpAddr::from(<[u8; 4]>::try_from(&source[..4]).ok()?),
        libc::AF_INET6 => IpAddr::from(<[u8; 16]>::try_from(source).ok()?),
        _ => return None,
    };
    let listener = Listener {
        uid: u32_at(message, 64)?,
        inode: u64::from(u32_at(message, 68)?),
    };
    Some((ip, listener))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn finds_a_listener_by_its_port_with_its_address_owner_and_inode() {
        let socket = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).unwrap();
        let listeners = tcp_listeners(port).expect("inet_diag");
        assert_eq!(
            listeners,
            [(
                IpAddr::from(Ipv4Addr::LOCALHOST),
                Listener {
                    uid: nix::unistd::geteuid().as_raw(),
                    inode: link.to_str().unwrap()[8..]
                        .trim_end_matches(']')
                        .parse()
                        .unwrap(),
                }
            )]
        );
        drop(socket);
        assert_eq!(tcp_listeners(port), Some(Vec::new()));
    }

    #[test]
    fn a_connection_or_another_port_is_no_listener() {
        let mut message = vec![libc::AF_INET as u8, TCP_LISTEN, 0, 0];
        message.extend_from_slice(&8080u16.to_be_bytes());
        message.extend_from_slice(&[0, 0]);
        message.extend_from_slice(&[127, 0, 0, 1]);
        message.resize(64, 0);
        message.extend_from_slice(&1000u32.to_ne_bytes());
        message.extend_from_slice(&77u32.to_ne_bytes());
        let listener = Listener {
            uid: 1000,
            inode: 77,
        };
        assert_eq!(
            listener_on(&message, 8080),
            Some((IpAddr::from(Ipv4Addr::LOCALHOST), listener))
        );
        assert_eq!(listener_on(&message, 8081), None);
        message[1] = 1; // TCP_ESTABLISHED
        assert_eq!(listener_on(&message, 8080), None);
    }
}
