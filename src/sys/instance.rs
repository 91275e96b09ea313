//! Whom to signal: the processes of the instance that holds a kernel lock.
//! An instance is COMMAND and every process it started that still holds
//! the lock's descriptor; `tree.rs` adds what they started since.
//!
//! "Who holds it", for a message, may name the pid the kernel recorded
//! when the lock was taken (lock::current_holder). Whom to signal is
//! another question, with a stricter answer: a process joins only once a
//! pidfd for it is open and /proc then shows that process holding the
//! lock's socket or flock, while it is still alive. A pid whose process has
//! gone, and which another process may have been given since, is never
//! one of them.

use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::env::ENV_LOCKED_AT;
use crate::sys::pidfd::{has_exited, pidfd_open};
use crate::sys::procfs::{self, Opened};

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

/// How long ago the instance took its lock: the earliest that any of its
/// processes took it (a process that inherited it, later than the one that
/// took it, never counts for more).
pub fn age(members: &Members) -> Option<Duration> {
    let taken = members
        .processes
        .iter()
        .filter_map(|(pid, _)| lock_taken(*pid))
        .reduce(f64::min)?;
    Duration::try_from_secs_f64((procfs::since_boot().as_secs_f64() - taken).max(0.0)).ok()
}

/// When process `pid`, which holds the lock, took it, in seconds since
/// boot: as ME_ONLY_LOCKED_AT says in its own environment (COMMAND, and
/// what inherited it) or, for a --fork or --max-time supervisor (a process
/// running me-only itself), in its COMMAND's. An inner me-only's COMMAND
/// carries its own lock's time, later than the outer lock's: the outer
/// instance then looks younger, never older. A holder whose environment
/// does not say (one that cleared it, or one not started by me-only) is
/// measured by its start, which may come before it took the lock.
fn lock_taken(pid: i32) -> Option<f64> {
    let locked_at = |pid| {
        let value = procfs::environment_variable(pid, ENV_LOCKED_AT)?;
        std::str::from_utf8(&value).ok()?.parse::<f64>().ok()
    };
    let supervises = runs_me_only(pid);
    let recorded = if supervises {
        procfs::children(pid).into_iter().find_map(locked_at)
    } else {
        locked_at(pid)
    };
    recorded.or_else(|| procfs::process_start(pid))
}

/// Whether process `pid` runs me-only: the same executable as this process
/// (even where one of the two was replaced on disk since it started: an
/// upgrade, a rebuild), or one by that name.
fn runs_me_only(pid: i32) -> bool {
    let same_file = |exe: std::path::PathBuf| {
        let exe = exe.to_string_lossy().into_owned();
        exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_owned()
    };
    let theirs = procfs::executable(pid).map(same_file);
    let ours = procfs::executable(std::process::id() as i32).map(same_file);
    (theirs.is_some() && theirs == ours) || procfs::process_name(pid).as_deref() == Some("me-only")
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
