//! Processes held by pidfds: a signal sent through one never reaches a
//! process that reused the pid, and its exit can be seen with poll.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Whether the process behind `pidfd` has exited, without waiting.
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut exited = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    poll(&mut exited, PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
}

/// A pidfd for process `pid` (ESRCH: there is none).
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    Errno::result(fd)?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the process behind `pidfd`.
pub fn send(pidfd: &OwnedFd, signal: libc::c_int) -> Result<(), Errno> {
    // SAFETY: no siginfo is passed; the descriptor is open.
    let done = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(done).map(drop)
}
