//! `--tcp`: a loopback TCP port as the lock, compatible with Perl's
//! Lock::Socket, so that the two tools contend for the same lock.

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{
    Attempt, Backend, Holder, ListenerWatch, Probe, Waited, bind_and_listen, listens_on, new_socket,
};
use crate::error::{Error, errno_of};
use crate::sys::inet_diag;
use crate::sys::procfs::{self, Opened};

pub struct TcpLock {
    name: String,
    address: SockAddr,
    watch: ListenerWatch,
}

impl TcpLock {
    /// LOCK is `PORT` (on the caller's own address) or `ADDR:PORT`.
    pub fn parse(lock: &OsStr) -> Result<TcpLock, Error> {
        TcpLock::parse_as(lock, nix::unistd::getuid().as_raw())
    }

    /// LOCK as user `uid` names it: `PORT` is on that user's address.
    pub fn parse_as(lock: &OsStr, uid: u32) -> Result<TcpLock, Error> {
        let text = lock.to_str().ok_or_else(|| {
            Error::Usage(format!(
                "{}: not a port or ADDR:PORT",
                lock.to_string_lossy()
            ))
        })?;
        let (ip, port) = match text.rsplit_once(':') {
            Some((ip, port)) => (parse_loopback(text, ip)?, port),
            None => (default_address(uid), text),
        };
        let port = parse_port(text, port)?;
        let address = SocketAddrV4::new(ip, port);
        Ok(TcpLock {
            name: address.to_string(),
            address: address.into(),
            watch: ListenerWatch::default(),
        })
    }
}

/// Slot `number` (1-based) of `--slots`: the port `number - 1` above LOCK's,
/// on the same address, as LOCK is written (`PORT` or `ADDR:PORT`).
pub fn slot_lock(lock: &OsStr, number: u32) -> Result<OsString, Error> {
    let text = lock.to_string_lossy();
    let (address, port) = match text.rsplit_once(':') {
        Some((address, port)) => (Some(address), port),
        None => (None, &*text),
    };
    let first = parse_port(&text, port)?;
    let port = u16::try_from(u32::from(first) + number - 1).map_err(|_| {
        Error::Usage(format!(
            "{text}: slot {number} would be port {}, past 65535",
            u32::from(first) + number - 1
        ))
    })?;
    Ok(match address {
        Some(address) => format!("{address}:{port}"),
        None => port.to_string(),
    }
    .into())
}

/// 127.H.L.1, H.L the low two bytes of the uid: the Lock::Socket scheme, which
/// gives each user a lock space of their own.
pub fn default_address(uid: u32) -> Ipv4Addr {
    let [_, _, high, low] = uid.to_be_bytes();
    Ipv4Addr::new(127, high, low, 1)
}

fn parse_loopback(lock: &str, ip: &str) -> Result<Ipv4Addr, Error> {
    match ip.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() => Ok(ip),
        _ => Err(Error::Usage(format!(
            "{lock}: '{ip}' is not an IPv4 loopback address (127.0.0.0/8)"
        ))),
    }
}

fn parse_port(lock: &str, port: &str) -> Result<u16, Error> {
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Error::Usage(format!(
            "{lock}: '{port}' is not a port number (1-65535)"
        ))),
    }
}

impl Backend for TcpLock {
    fn name(&self) -> &str {
        &self.name
    }

    /// SO_REUSEADDR lets the lock be taken again while connections of the
    /// last holder linger in TIME_WAIT. It also lets two sockets bind the same
    /// port, but only one can then listen: listen() is where the lock is won.
    fn try_acquire(&self) -> Result<Attempt, Error> {
        bind_and_listen(
            &self.name,
            self.reusable_socket()?,
            &self.address,
            &self.watch,
        )
    }

    /// Binds without listening: refused if anyone holds the port, while a
    /// launcher that binds at the same moment (SO_REUSEADDR too) still wins
    /// its listen(). The holder is named from /proc, where readable.
    fn probe(&self) -> Result<Probe, Error> {
        match self.reusable_socket()?.bind(&self.address) {
            Ok(()) => Ok(Probe::Free),
            Err(err) if errno_of(&err) == Errno::EADDRINUSE => {
                let listener = self.listener();
                Ok(Probe::Held(Holder {
                    pid: listener.as_ref().and_then(|l| {
                        procfs::pid_with_open(Opened::Socket(l.inode), Some(l.uid), &[])
                    }),
                    uid: listener.map(|l| l.uid),
                    host: None,
                }))
            }
            Err(err) => Err(Error::lock(&self.name, "bind", &err)),
        }
    }

    fn is_held_through(&self, fd: BorrowedFd<'_>) -> bool {
        listens_on(fd, &self.address)
    }

    fn held_through(&self) -> Option<Opened> {
        Some(Opened::Socket(self.listener()?.inode))
    }

    fn wait_for_release(&self, deadline: Option<Instant>) -> Result<Waited, Error> {
        let listening = || Some(self.listener()?.inode);
        self.watch
            .wait(&self.name, Domain::IPV4, &self.address, listening, deadline)
    }
}

impl TcpLock {
    /// The socket that listens on the lock's address (or on a wildcard
    /// address, on its port): from the kernel's socket diagnostics, or else
    /// from /proc/net/tcp{,6}.
    fn listener(&self) -> Option<procfs::Listener> {
        let address = self.address.as_socket_ipv4()?;
        match inet_diag::tcp_listeners(address.port()) {
            Some(listeners) => listeners
                .into_iter()
                .find(|(ip, _)| procfs::conflicts_with(ip, address.ip()))
                .map(|(_, listener)| listener),
            None => procfs::tcp_listener(address),
        }
    }

    fn reusable_socket(&self) -> Result<Socket, Error> {
        let socket = new_socket(&self.name, Domain::IPV4, Type::STREAM)?;
        socket
            .set_reuse_address(true)
            .map_err(|err| Error::lock(&self.name, "set SO_REUSEADDR", &err))?;
        Ok(socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_message(lock: &str) -> String {
        super::super::usage_message(TcpLock::parse(OsStr::new(lock)))
    }

    #[test]
    fn default_address_is_lock_socket_scheme() {
        assert_eq!(default_address(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(default_address(1000), Ipv4Addr::new(127, 3, 232, 1));
        // Only the low 16 bits of the uid count.
        assert_eq!(
            default_address(0x0012_3456),
            Ipv4Addr::new(127, 0x34, 0x56, 1)
        );
    }

    #[test]
    fn explicit_loopback_address_is_kept() {
        let lock = TcpLock::parse(OsStr::new("127.9.8.7:65535")).unwrap();
        assert_eq!(lock.name(), "127.9.8.7:65535");
    }

    #[test]
    fn bad_ports_are_usage_errors() {
        for lock in ["0", "65536", "http", "", "127.0.0.1:", "-1", "127.0.0.1:0"] {
            assert!(usage_message(lock).contains("not a port number"), "{lock}");
        }
    }

    #[test]
    fn non_loopback_addresses_are_usage_errors() {
        for lock in [
            "10.0.0.1:80",
            "0.0.0.0:80",
            "localhost:80",
            "::1:80",
            "[::1]:80",
        ] {
            assert!(
                usage_message(lock).contains("not an IPv4 loopback"),
                "{lock}"
            );
        }
    }

    #[test]
    fn slots_are_the_ports_above_lock_on_its_address() {
        let slot = |lock: &str, number| slot_lock(OsStr::new(lock), number);
        assert_eq!(slot("7000", 1).unwrap(), "7000");
        assert_eq!(slot("7000", 3).unwrap(), "7002");
        assert_eq!(slot("127.0.0.1:65534", 2).unwrap(), "127.0.0.1:65535");
        let Err(Error::Usage(message)) = slot("65535", 2) else {
            panic!("a slot past port 65535 must be refused");
        };
        assert_eq!(message, "65535: slot 2 would be port 65536, past 65535");
    }
}
