//! What the kernel's socket diagnostics (sock_diag, over netlink) tell about
//! abstract AF_UNIX sockets. Unlike /proc/net/unix, which prints each name
//! raw, newlines included (so that anyone's socket name can forge a line
//! that names another lock), it gives every name as counted bytes; and it
//! tells, without touching the socket, what a look through a connection
//! would cost the holder: its owner (kernel 5.3 on) and how many
//! connections already wait in its queue.

use nix::libc;

use crate::sys::sock_diag::{self, aligned, u16_at, u32_at};

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

// From the kernel's uapi headers: linux/unix_diag.h, net/tcp_states.h.
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_UID: u16 = 7;
const TCP_LISTEN: u8 = 10;

/// struct unix_diag_msg, before its attributes.
const UNIX_DIAG_MSG_LEN: usize = 16;

/// Every AF_UNIX socket bound to the abstract `name` (without its leading
/// NUL); None where the kernel cannot tell (no unix_diag).
pub fn abstract_sockets(name: &[u8]) -> Option<Vec<NamedSocket>> {
    sock_diag::dump(&dump_request(), |message| socket_named(message, name))
}

/// A dump of every AF_UNIX socket, with its name, queue and owner (a kernel
/// older than 5.3 ignores the flag it does not know).
fn dump_request() -> Vec<u8> {
    let mut request = Vec::with_capacity(24);
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use socket2::{Domain, Socket, Type};

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
