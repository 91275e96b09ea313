//! A lock handed down: COMMAND of `me-only LOCK COMMAND` (or a child a
//! guard was shared with) adopts the descriptor its environment names,
//! once it is proven to be that lock.

use std::ffi::OsString;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::libc;

use super::error::Error;
use super::guard::Guard;
use crate::env::{ENV_FD, ENV_LOCK, ENV_LOCKED_AT};
use crate::lock::{self, Backend, Kind};

/// Whether this process has adopted its inherited lock: a second guard of
/// the same descriptor would close it twice.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// The guard of the lock this process inherited, in a COMMAND started by
/// `me-only LOCK COMMAND` (or by a program that shared its guard with
/// [`Guard::share_with`]): dropping it lets go of this process's hold (the
/// lock is free once no process holds it). The descriptor is made
/// close-on-exec, as any guard's.
///
/// `None` when:
/// - the environment names no lock (no ME_ONLY_LOCK or ME_ONLY_FD, or not a
///   descriptor number above 2);
/// - the descriptor is not that lock: not the socket that listens on
///   exactly the abstract name or the TCP address ME_ONLY_LOCK names (one
///   on the wildcard address keeps the lock from being taken, but is not
///   it), nor an open file holding the exclusive flock(2) of that file (a
///   shared one, `flock -s`, is no lock). A descriptor closed since, or an
///   environment inherited by a process that never got the descriptor, or
///   forged, is never taken for the lock;
/// - it was adopted already, by an earlier call in this process;
/// - the lock is an etcd lock (a lease, which this does not adopt).
///
/// The guard owns the descriptor from then on: a program that wraps
/// ME_ONLY_FD's descriptor itself (as a `File`, say) must not also adopt
/// it here, or it would be closed twice.
///
/// ```
/// match me_only::inherited()? {
///     Some(guard) => println!("started under me-only, holding {}", guard.name()),
///     None => println!("started without a lock"),
/// }
/// # Ok::<(), me_only::Error>(())
/// ```
pub fn inherited() -> Result<Option<Guard>, Error> {
    let (Some(given), Some(fd)) = (std::env::var_os(ENV_LOCK), inherited_fd()) else {
        return Ok(None);
    };
    let Some(lock) = lock_held_by(&given, fd) else {
        return Ok(None);
    };
    if ADOPTED.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    // SAFETY: a copy of this descriptor just showed it open, the lock, and
    // nothing else in this process owns it: it came from the parent, and
    // ADOPTED makes this the only adoption.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|errno| Error::Io {
        lock: lock.name().to_owned(),
        action: "make the lock close-on-exec",
        source: std::io::Error::from_raw_os_error(errno as i32),
    })?;
    let locked_at = std::env::var_os(ENV_LOCKED_AT);
    Ok(Some(Guard::new(fd, lock.name(), &given, locked_at)))
}

/// ME_ONLY_FD's descriptor: never 0, 1 or 2, where the command never puts
/// the lock.
fn inherited_fd() -> Option<RawFd> {
    let fd: RawFd = std::env::var_os(ENV_FD)?.to_str()?.parse().ok()?;
    (fd > 2).then_some(fd)
}

/// The kernel lock that `given` names (as a name, a TCP address, or a
/// file: ME_ONLY_LOCK does not say which) and that `fd` holds, if any.
fn lock_held_by(given: &OsString, fd: RawFd) -> Option<Box<dyn Backend>> {
    [Kind::AbstractSocket, Kind::Tcp, Kind::Flock]
        .into_iter()
        .filter_map(|kind| lock::for_library(given, kind).ok())
        .find(|lock| holds(lock.as_ref(), fd))
}

/// Whether `fd`, one of this process's descriptors, is `lock` itself (see
/// `Backend::is_held_through`), looked at through a copy of it: `fd` may be
/// closed, or another file since, and is not ours to close.
fn holds(lock: &dyn Backend, fd: RawFd) -> bool {
    // SAFETY: fcntl only reads `fd`, whatever it is; a descriptor it
    // returns is a new one, owned by no one else.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return false;
    }
    // SAFETY: as above.
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    lock.is_held_through(copy.as_fd())
}
