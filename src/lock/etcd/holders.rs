//! What holds an etcd lock on this host: COMMAND, watched through a pidfd,
//! and every process that keeps the write end of a pipe whose read end the
//! keeper holds, and whose write end COMMAND got as ME_ONLY_FD. The kernel
//! tells the keeper when the last write end is closed (POLLHUP on the read
//! end), as it frees a kernel lock when the last descriptor of it is
//! closed: the lock is held while COMMAND runs or anything keeps
//! ME_ONLY_FD (a background child, a daemon that double-forked away), which
//! is never less than a kernel lock would be held.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::sys::instance;
use crate::sys::pidfd::{has_exited, pidfd_open};
use crate::sys::procfs::Opened;
use crate::sys::tree::Tree;

/// How many looks for processes that keep ME_ONLY_FD a fence takes at most:
/// one found by a look may have handed it on before it was stopped (a fork
/// whose parent then exited), which the next look finds.
const MAX_LOOKS: usize = 16;

/// COMMAND and the pipe whose write ends hold the lock with it.
pub struct Holders {
    /// COMMAND's pid (with --fork, the supervisor's).
    pub pid: i32,
    holder: OwnedFd,
    /// The read end of the pipe.
    writers: OwnedFd,
    /// The pipe's inode, by which /proc shows who keeps its write end.
    inode: u64,
}

impl Holders {
    /// Process `pid` (a pidfd is opened for it now) and the processes that
    /// keep the write end of the pipe whose read end is `writers`.
    pub fn open(pid: i32, writers: OwnedFd) -> Result<Holders, Errno> {
        let inode = nix::sys::stat::fstat(&writers)?.st_ino;
        Ok(Holders {
            pid,
            holder: pidfd_open(pid)?,
            writers,
            inode,
        })
    }

    /// The descriptors to keep where the keeper and its sentry close the
    /// rest.
    pub fn raw_fds(&self) -> [RawFd; 2] {
        [self.holder.as_raw_fd(), self.writers.as_raw_fd()]
    }

    /// What to poll for the next of them to go: COMMAND's exit while it
    /// runs, then the last write end's closing. POLLIN is not asked of the
    /// pipe: what a process writes to ME_ONLY_FD is no news (the hang-up
    /// is always told), and would wake the poll again and again.
    pub fn poll_fd(&self) -> PollFd<'_> {
        if has_exited(&self.holder) {
            PollFd::new(self.writers.as_fd(), PollFlags::empty())
        } else {
            PollFd::new(self.holder.as_fd(), PollFlags::POLLIN)
        }
    }

    /// Whether COMMAND has exited and no process keeps ME_ONLY_FD: the
    /// instance is over, and the lock may go.
    pub fn are_gone(&self) -> bool {
        has_exited(&self.holder) && self.writers_gone()
    }

    fn writers_gone(&self) -> bool {
        let mut hung_up = [PollFd::new(self.writers.as_fd(), PollFlags::empty())];
        poll(&mut hung_up, PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
    }

    /// Ends the instance: COMMAND and what it started, and every process
    /// shown to keep ME_ONLY_FD (each by a pidfd opened before /proc showed
    /// it holding the pipe) and what they started, frozen while they are
    /// found, then SIGTERM and, after `kill_after`, SIGKILL.
    pub fn stop(&self, kill_after: Duration) {
        let mut tree = Tree::freeze(self.pid, &self.holder);
        for _ in 0..MAX_LOOKS {
            let writers = instance::holding(Opened::PipeWriter(self.inode));
            if !tree.join(writers.processes) {
                break;
            }
        }
        tree.terminate(libc::SIGTERM, kill_after);
    }
}
