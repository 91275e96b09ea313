//! The lock backends, behind one seam: each kind of lock is a module that
//! implements [`Backend`], and [`from_cli`] is the one place that picks one.

mod abstract_socket;
mod tcp;

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;

use crate::error::{Error, errno_of};

/// Who holds a lock, as far as the kernel tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub uid: Option<u32>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(uid) = self.uid {
            write!(f, " (uid {uid})")?;
        }
        Ok(())
    }
}

/// One try at a lock.
#[derive(Debug)]
pub enum Attempt {
    /// The lock is ours for as long as this descriptor (or a copy) is open.
    Acquired(OwnedFd),
    /// Someone else holds it.
    Busy,
}

/// A kind of lock.
pub trait Backend {
    /// The lock as messages name it.
    fn name(&self) -> &str;

    /// Takes the lock if it is free, without waiting.
    fn try_acquire(&self) -> Result<Attempt, Error>;

    /// Who holds the lock, where the kernel tells; `None` when it does not.
    fn holder(&self) -> Option<Holder>;
}

/// The backend that LOCK names, checked before anything is bound.
pub fn from_cli(lock: &OsStr, tcp: bool) -> Result<Box<dyn Backend>, Error> {
    if tcp {
        Ok(Box::new(tcp::TcpLock::parse(lock)?))
    } else {
        Ok(Box::new(abstract_socket::AbstractLock::parse(lock)?))
    }
}

/// Binds a fresh socket and listens on it: the step both socket backends take
/// the lock with. "In use" at either step means another holder.
fn bind_and_listen(
    lock: &str,
    socket: socket2::Socket,
    address: &socket2::SockAddr,
) -> Result<Attempt, Error> {
    let in_use = |err: &io::Error| errno_of(err) == Errno::EADDRINUSE;
    match socket.bind(address) {
        Err(err) if in_use(&err) => return Ok(Attempt::Busy),
        Err(err) => return Err(Error::lock(lock, "bind", &err)),
        Ok(()) => {}
    }
    // The kernel clamps the backlog to net.core.somaxconn; a long queue lets
    // many contenders connect to ask who holds the lock.
    match socket.listen(i32::MAX) {
        Err(err) if in_use(&err) => Ok(Attempt::Busy),
        Err(err) => Err(Error::lock(lock, "listen", &err)),
        Ok(()) => Ok(Attempt::Acquired(socket.into())),
    }
}

/// Creates the socket a backend binds, close-on-exec until the launcher
/// hands it to COMMAND.
fn new_socket(
    lock: &str,
    domain: socket2::Domain,
    ty: socket2::Type,
) -> Result<socket2::Socket, Error> {
    socket2::Socket::new(domain, ty, None).map_err(|err| Error::lock(lock, "create socket", &err))
}
