//! Whom to signal: the processes of the instance that holds a kernel lock.
//! An instance is COMMAND and every process it started that still holds
//! the lock's descriptor; `tree.rs` adds what they started since.
//!
//! "Who holds it", for a message, may name the pid the kernel recorded
//! when the lock was taken (backend::current_holder). Whom to signal is
//! another question, with a stricter answer: a process joins only once a
//! pidfd for it is open and /proc then shows that process holding the
//! lock's socket or flock, while it is still alive. A pid whose process has
//! gone, and which another process may have been given since, is never
//! one of them.

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::pidfd::{has_exited, pidfd_open};
use crate::procfs::{self, Opened};

/// The processes found holding a lock.
pub struct Members {
    /// Each with the pidfd it was shown holding the lock through.
    pub processes: Vec<(i32, OwnedFd)>,
    /// Whether some process could not be looked at (another user's, or
    /// not dumpable): it may hold the lock unseen.
    pub unseen: bool,
}

/// Every process other than this one that holds `opened` now.
pub fn holding(opened: Opened) -> Members {
    let me = std::process::id() as i32;
    let (pids, unseen) = procfs::pids_holding(opened);
    let processes = pids
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let pidfd = pidfd_open(pid).ok()?;
            // Alive after the look: the pid the look read was this one's.
            let proven = procfs::has_open(pid, opened) && !has_exited(&pidfd);
            proven.then_some((pid, pidfd))
        })
        .collect();
    Members { processes, unseen }
}

/// How long the instance has run: as long as its oldest process. (For a
/// holder that waited for the lock with --wait, that counts the wait.)
pub fn age(members: &Members) -> Option<Duration> {
    members
        .processes
        .iter()
        .filter_map(|(pid, _)| procfs::process_age(*pid))
        .max()
}

/// Closes this process's own descriptors that hold the lock: inherited by
/// a `me-only --replace` that a process of the instance started (`exec
/// me-only --replace LOCK ...` in COMMAND). It makes way for itself: its
/// copy must not keep the lock held, nor be handed on to its COMMAND.
pub fn let_go_of_own(opened: Opened) {
    for fd in procfs::own_descriptors_holding(opened) {
        log::debug!("closing descriptor {fd}, inherited from the instance being replaced");
        let _ = nix::unistd::close(fd);
    }
}
