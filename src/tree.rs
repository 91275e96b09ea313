//! COMMAND's process tree, for stopping it as one (an etcd holder fenced
//! off, a --max-time run, an instance --replace stops): COMMAND and every process it started (`sh -c
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
    /// A process whose children belong to the tree though it does not (a
    /// supervisor's own pid: it stops what it started, never itself).
    parent: Option<i32>,
}

impl Tree {
    /// `root` (held by `root_fd`) and all its descendants, stopped.
    pub fn freeze(root: i32, root_fd: &OwnedFd) -> Tree {
        let roots = root_fd.try_clone().map(|fd| vec![(root, fd)]);
        Tree::freeze_all(roots.unwrap_or_default())
    }

    /// `roots` (each held by a pidfd, opened before it was shown to belong)
    /// and all their descendants, stopped. This process is never one of
    /// them, even where it descends from a root (`me-only --replace` run
    /// by a process of the instance it replaces).
    pub fn freeze_all(roots: Vec<(i32, OwnedFd)>) -> Tree {
        let me = std::process::id() as i32;
        let mut tree = Tree {
            members: Vec::new(),
            parent: None,
        };
        for (pid, fd) in roots.into_iter().filter(|(pid, _)| *pid != me) {
            let _ = send(&fd, libc::SIGSTOP);
            tree.members.push((pid, fd));
        }
        tree.grow();
        tree
    }

    /// Every process this one started and what they started (a child
    /// subreaper's: orphans among them are its children again), stopped.
    pub fn freeze_descendants() -> Tree {
        let mut tree = Tree {
            members: Vec::new(),
            parent: Some(std::process::id() as i32),
        };
        tree.grow();
        tree
    }

    /// Adds (stopped) the descendants of the members, until no new one
    /// appears (or, should something that cannot be stopped, another
    /// user's process, fork on and on, for a bounded number of rounds).
    ///
    /// A pid read from /proc may change hands before its pidfd is opened:
    /// a process joins only if, after its pidfd was opened, its parent is
    /// read as a member that is still alive (whose pid therefore is still
    /// its own), and it was itself alive when read, so what was read was
    /// this process.
    fn grow(&mut self) {
        let me = std::process::id() as i32;
        let mut seen: HashSet<i32> = self.members.iter().map(|(pid, _)| *pid).collect();
        seen.insert(me);
        for _ in 0..MAX_ROUNDS {
            let new: Vec<i32> = parent_pids()
                .into_iter()
                .filter(|(pid, parent)| !seen.contains(pid) && self.has_member(*parent))
                .map(|(pid, _)| pid)
                .collect();
            if new.is_empty() {
                return;
            }
            for pid in new {
                seen.insert(pid);
                let Ok(fd) = pidfd_open(pid) else { continue };
                let descends = procfs::parent_pid(pid)
                    .is_some_and(|parent| self.has_live_member(parent))
                    && !has_exited(&fd);
                if descends {
                    let _ = send(&fd, libc::SIGSTOP);
                    self.members.push((pid, fd));
                }
            }
        }
    }

    /// Whether `pid` is a member (or the tree's parent), as last known.
    fn has_member(&self, pid: i32) -> bool {
        self.parent == Some(pid) || self.members.iter().any(|(member, _)| *member == pid)
    }

    /// Whether `pid` is a member that has not exited (or the tree's parent,
    /// this process): its pid cannot have been reused.
    fn has_live_member(&self, pid: i32) -> bool {
        self.parent == Some(pid)
            || self
                .members
                .iter()
                .any(|(member, fd)| *member == pid && !has_exited(fd))
    }

    /// Sends `signal` to every member.
    pub fn signal(&self, signal: libc::c_int) {
        for (_, fd) in &self.members {
            let _ = send(fd, signal);
        }
    }

    /// Sends `signal` to every member, and lets them go on (a signal
    /// passed on to them: a stopped process would take it only once
    /// continued).
    pub fn deliver(self, signal: libc::c_int) {
        self.signal(signal);
        self.signal(libc::SIGCONT);
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
