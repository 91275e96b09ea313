//! The kernel's socket diagnostics (sock_diag, over netlink): a dump of the
//! sockets of one family, which the kernel filters as asked (by state, by
//! port) and describes in counted binary. /proc/net's text tables instead
//! walk every socket for every page read, and print names raw. unix_diag.rs
//! and inet_diag.rs ask it their questions.

use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{MsgFlags, recv};
use socket2::{Domain, Protocol, Socket, Type};

// From the kernel's uapi headers: linux/netlink.h, linux/sock_diag.h.
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;

/// struct nlmsghdr.
const HEADER_LEN: usize = 16;

/// Asks for a dump of the sockets that `request` (a family's request
/// structure, unix_diag_req or inet_diag_req_v2) selects, and returns what
/// `each` makes of the ones it keeps, given each socket's message after
/// its netlink header. None where the kernel cannot tell (no sock_diag for
/// that family).
pub fn dump<T>(request: &[u8], mut each: impl FnMut(&[u8]) -> Option<T>) -> Option<Vec<T>> {
    let diag = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )
    .ok()?;
    // An unconnected netlink socket sends to the kernel.
    diag.send(&with_header(request)).ok()?;
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
                _ => found.extend(each(message.get(HEADER_LEN..)?)),
            }
            messages = messages.get(aligned(message_length)..).unwrap_or_default();
        }
    }
}

/// `request` behind a struct nlmsghdr that asks for a dump.
fn with_header(request: &[u8]) -> Vec<u8> {
    let length = HEADER_LEN + request.len();
    let mut message = Vec::with_capacity(length);
    // Length, type, flags, sequence, port.
    message.extend_from_slice(&(length as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(request);
    message
}

/// Netlink messages and attributes start on 4-byte boundaries.
pub fn aligned(length: usize) -> usize {
    length.div_ceil(4) * 4
}

pub fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}
