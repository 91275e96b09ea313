//! What the kernel's socket diagnostics (sock_diag, over netlink) tell about
//! abstract AF_UNIX sockets. Unlike /proc/net/unix, which prints each name
//! raw, newlines included (so that anyone's socket name can forge a line
//! that names another lock), it gives every name as counted bytes; and it
//! tells, without touching the socket, what a look through a connection
//! would cost the holder: its owner (kernel 5.3 on) and how many
//! connections already wait in its queue.

use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{MsgFlags, recv};
use socket2::{Domain, Protocol, Socket, Type};

/// A socket bound to the name asked about.
#[derive(Debug, PartialEq, Eq)]
pub struct NamedSocket {
    pub inode: u64,
    /// Listening (the lock); otherwise bound only, or a connection queued
    /// on the listener, which shows the listener's name too.
    pub listening: bool,
    /// The user that owns it, where the kernel tells.
    pub uid: Option<u32>,
    /// A listener's connections not accepted yet (each stays until then,
    /// or until the listener is closed, even once its client let go).
    pub queued: u32,
}

// From the kernel's uapi headers: linux/netlink.h, linux/sock_diag.h,
// linux/unix_diag.h, net/tcp_states.h.
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_UID: u16 = 7;
const TCP_LISTEN: u8 = 10;

/// struct nlmsghdr, and struct unix_diag_msg before its attributes.
const HEADER_LEN: usize = 16;
const UNIX_DIAG_MSG_LEN: usize = 16;

/// Every AF_UNIX socket bound to the abstract `name` (without its leading
/// NUL); None where the kernel cannot tell (no unix_diag).
pub fn abstract_sockets(name: &[u8]) -> Option<Vec<NamedSocket>> {
    let diag = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )
    .ok()?;
    // An unconnected netlink socket sends to the kernel.
    diag.send(&dump_request()).ok()?;
    let mut found = Vec::new();
    // The kernel fills each read up to the buffer's size, a page at least.
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let length = recv(diag.as_raw_fd(), &mut buffer, MsgFlags::empty()).ok()?;
        let mut messages = buffer.get(..length)?;
        if messages.is_empty() {
            return None;
        }
        while !messages.is_empty() {
            let message_length = u32_at(messages, 0)? as usize;
            let message = messages.get(..message_length)?;
            match u16_at(message, 4)? {
                NLMSG_DONE => return Some(found),
                NLMSG_ERROR => return None,
                _ => found.extend(socket_named(message.get(HEADER_LEN..)?, name)),
            }
            messages = messages.get(aligned(message_length)..).unwrap_or_default();
        }
    }
}

/// A dump of every AF_UNIX socket, with its name, queue and owner (a kernel
/// older than 5.3 ignores the flag it does not know).
fn dump_request() -> Vec<u8> {
    let mut request = Vec::with_capacity(HEADER_LEN + 24);
    // struct nlmsghdr: length, type, flags, sequence, port.
    request.extend_from_slice(&(HEADER_LEN as u32 + 24).to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    // struct unix_diag_req: family, protocol, pad, states, inode, show,
    // cookie.
    request.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    request.extend_from_slice(&u32::MAX.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID).to_ne_bytes());
    request.extend_from_slice(&[0xff; 8]);
    request
}

/// The socket a unix_diag_msg describes, if it is bound to the abstract
/// `name`: its attributes carry the name as the bytes of sun_path.
fn socket_named(message: &[u8], name: &[u8]) -> Option<NamedSocket> {
    let state = *message.get(2)?;
    let inode = u32_at(message, 4)?;
    let mut socket = NamedSocket {
        inode: u64::from(inode),
        listening: state == TCP_LISTEN,
        uid: None,
        queued: 0,
    };
    let mut named = false;
    let mut attributes = message.get(UNIX_DIAG_MSG_LEN..)?;
    while attributes.len() >= 4 {
        let length = u16_at(attributes, 0)? as usize;
        if length < 4 {
            return None;
        }
        let value = attributes.get(4..length)?;
        match u16_at(attributes, 2)? {
            UNIX_DIAG_NAME => named = value.first() == Some(&0) && &value[1..] == name,
            // struct unix_diag_rqlen: a listener's queue, then its backlog.
            UNIX_DIAG_RQLEN => socket.queued = u32_at(value, 0)?,
            UNIX_DIAG_UID => socket.uid = Some(u32_at(value, 0)?),
            _ => {}
        }
        attributes = attributes.get(aligned(length)..).unwrap_or_default();
    }
    named.then_some(socket)
}

/// Netlink messages and attributes start on 4-byte boundaries.
fn aligned(length: usize) -> usize {
    length.div_ceil(4) * 4
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn address(name: &[u8]) -> socket2::SockAddr {
        let mut path = vec![0];
        path.extend_from_slice(name);
        socket2::SockAddr::unix(OsStr::from_bytes(&path)).unwrap()
    }

    fn bound(name: &[u8]) -> Socket {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        socket.bind(&address(name)).unwrap();
        socket
    }

    #[test]
    fn finds_a_bound_name_and_whether_it_listens() {
        let name = format!("me-only-unit/{}/diag", std::process::id());
        assert_eq!(abstract_sockets(name.as_bytes()), Some(Vec::new()));
        let socket = bound(name.as_bytes());
        let sockets = abstract_sockets(name.as_bytes()).unwrap();
        assert_eq!(sockets.len(), 1);
        assert!(!sockets[0].listening);
        socket.listen(1).unwrap();
        assert!(abstract_sockets(name.as_bytes()).unwrap()[0].listening);
    }

    #[test]
    fn a_listener_tells_its_owner_and_the_connections_it_has_not_accepted() {
        let name = format!("me-only-unit/{}/queue", std::process::id());
        let listener = bound(name.as_bytes());
        listener.listen(8).unwrap();
        for _ in 0..2 {
            let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            client.connect(&address(name.as_bytes())).unwrap();
        }
        let sockets = abstract_sockets(name.as_bytes()).unwrap();
        let listening = sockets.iter().find(|socket| socket.listening).unwrap();
        assert_eq!(listening.queued, 2, "connections let go stay queued");
        assert_eq!(listening.uid, Some(nix::unistd::getuid().as_raw()));
    }

    #[test]
    fn a_name_is_matched_whole_not_by_its_tail() {
        let name = format!("me-only-unit/{}/tail", std::process::id());
        let _longer = bound(format!("x\n{name}").as_bytes());
        assert_eq!(abstract_sockets(name.as_bytes()), Some(Vec::new()));
    }

    #[test]
    fn attributes_other_than_those_asked_for_are_skipped() {
        let mut message = vec![1, 1, TCP_LISTEN, 0];
        message.extend_from_slice(&77u32.to_ne_bytes());
        message.extend_from_slice(&[0; 8]);
        // The name, an attribute of another type (5 bytes, padded to 8),
        // the queue and backlog, the owner.
        message.extend_from_slice(&[7, 0, 0, 0, 0, b'a', b'b', 0]);
        message.extend_from_slice(&[5, 0, 9, 0, 42, 0, 0, 0]);
        message.extend_from_slice(&[12, 0, 4, 0]);
        message.extend_from_slice(&3u32.to_ne_bytes());
        message.extend_from_slice(&4096u32.to_ne_bytes());
        message.extend_from_slice(&[8, 0, 7, 0]);
        message.extend_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(
            socket_named(&message, b"ab"),
            Some(NamedSocket {
                inode: 77,
                listening: true,
                uid: Some(1000),
                queued: 3,
            })
        );
        assert_eq!(socket_named(&message, b"a"), None);
    }
}
