//! COMMAND's process tree, for stopping it as one (an etcd holder fenced
//! off, a --max-time run): COMMAND and every process it started (`sh -c
//! 'sleep 27; job'`: sh and sleep) must stop, or a child that outlives its
//! parent runs beside the next holder.
//!
//! The tree is found from the parent pids /proc lists, and frozen
//! (SIGSTOP) while it is found, round after round until no new process
//! appears: a stopped process cannot fork, so the set is then whole. Each
//! member is held by a pidfd, so no signal reaches a process that reused a
//! pid, and members orphaned meanwhile (reparented away from the tree) are
//! still reached. Not reached: processes that left the tree before the
//! stop (a daemon that double-forked to init), and those of other users
//! that me-only may not signal.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;

use crate::pidfd::{has_exited, pidfd_open, send};
use crate::{deadline, poll_time, procfs};
use nix::poll::{PollFd, PollFlags, poll};

/// How many times the tree is looked for new members at most.
const MAX_ROUNDS: usize = 100;

/// Processes held by pidfds.
pub struct Tree {
    members: Vec<(i32, OwnedFd)>,
}

impl Tree {
    /// `root` (held by `root_fd`) and all its descendants, stopped.
    pub fn freeze(root: i32, root_fd: &OwnedFd) -> Tree {
        let mut tree = Tree {
            members: Vec::new(),
        };
        if let Ok(fd) = root_fd.try_clone() {
            let _ = send(&fd, libc::SIGSTOP);
            tree.members.push((root, fd));
        }
        tree.grow();
        tree
    }

    /// Adds (stopped) the descendants of the members, until no new one
    /// appears (or, should something that cannot be stopped, another
    /// user's process, fork on and on, for a bounded number of rounds).
    fn grow(&mut self) {
        let mut known: HashSet<i32> = self.members.iter().map(|(pid, _)| *pid).collect();
        for _ in 0..MAX_ROUNDS {
            let parents = parent_pids();
            let new: Vec<i32> = parents
                .iter()
                .filter(|(pid, parent)| known.contains(parent) && !known.contains(pid))
                .map(|(pid, _)| *pid)
                .collect();
            if new.is_empty() {
                return;
            }
            for pid in new {
                known.insert(pid);
                if let Ok(fd) = pidfd_open(pid) {
                    let _ = send(&fd, libc::SIGSTOP);
                    self.members.push((pid, fd));
                }
            }
        }
    }

    /// Sends `signal` to every member.
    pub fn signal(&self, signal: libc::c_int) {
        for (_, fd) in &self.members {
            let _ = send(fd, signal);
        }
    }

    /// Ends the tree: `signal` (SIGTERM, or --signal) to every member, then
    /// SIGKILL, after `kill_after`, to those still there and to whatever
    /// they started meanwhile. Returns once all are gone, or a moment after
    /// the kill.
    pub fn terminate(mut self, signal: libc::c_int, kill_after: Duration) {
        self.signal(signal);
        // Stopped, a member would only take its signal when continued.
        self.signal(libc::SIGCONT);
        if self.exit_within(kill_after) {
            return;
        }
        self.members.iter().for_each(|(_, fd)| {
            let _ = send(fd, libc::SIGSTOP);
        });
        self.grow();
        self.signal(libc::SIGKILL);
        self.exit_within(Duration::from_secs(1));
    }

    /// Waits until every member has exited, or `limit` is up; whether all
    /// have. Those that have are let go.
    fn exit_within(&mut self, limit: Duration) -> bool {
        let deadline = deadline::after(limit);
        loop {
            self.members.retain(|(_, fd)| !has_exited(fd));
            if self.members.is_empty() || deadline::has_come(deadline) {
                return self.members.is_empty();
            }
            let mut events: Vec<PollFd> = self
                .members
                .iter()
                .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            let timeout = poll_time::until(deadline);
            if poll(&mut events, timeout).is_err_and(|errno| errno != Errno::EINTR) {
                return false;
            }
        }
    }
}

/// Every process's pid and parent pid, as /proc shows them.
fn parent_pids() -> Vec<(i32, i32)> {
    procfs::pids()
        .into_iter()
        .filter_map(|pid| Some((pid, procfs::parent_pid(pid)?)))
        .collect()
}
