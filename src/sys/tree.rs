//! COMMAND's process tree, for stopping it as one (an etcd holder fenced
//! off, a --max-time run, an instance --replace stops): COMMAND and every
//! process it started (`sh -c 'sleep 27; job'`: sh and sleep) must stop, or
//! a child that outlives its parent runs beside the next holder.
//!
//! The tree is found from the children /proc lists for each of its
//! processes (or, on a kernel that lists none, from every process's parent
//! pid), and frozen
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
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

use crate::sys::pidfd::{has_exited, pidfd_open, send};
use crate::sys::{deadline, poll_time, procfs};
use nix::poll::{PollFd, PollFlags, poll};

/// How many looks at /proc find new members at most.
const MAX_ROUNDS: usize = 100;

/// Processes held by pidfds.
pub struct Tree {
    members: Vec<(i32, OwnedFd)>,
    /// A process whose children belong to the tree though it does not (a
    /// supervisor's own pid: it stops what it started, never itself).
    parent: Option<i32>,
    /// Processes never to join: a supervisor's children that are not
    /// COMMAND's (an etcd keeper it adopted as pid 1 or as a subreaper).
    excluded: Vec<i32>,
    /// Whether members are stopped as they join (a walk to stop the tree),
    /// or left running (one to pass a signal on).
    freezing: bool,
    /// Members that were stopped already when they joined.
    stopped_before: HashSet<i32>,
    /// Whether a process of the tree may have been missed: no pidfd could
    /// be had for it (the descriptor limit), or it kept forking past the
    /// rounds.
    incomplete: bool,
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
        Tree::freeze_roots(roots, None)
    }

    /// As `freeze_all`, for a replacer, whose own children, if any, are
    /// the instance's too: it can only have them from the process it was
    /// exec'd from, a process of the instance (`sleep 9 & exec me-only
    /// --replace ...` in a --fork holder's COMMAND).
    pub fn freeze_instance(roots: Vec<(i32, OwnedFd)>) -> Tree {
        Tree::freeze_roots(roots, Some(std::process::id() as i32))
    }

    fn freeze_roots(roots: Vec<(i32, OwnedFd)>, parent: Option<i32>) -> Tree {
        let mut tree = Tree::empty(parent, Vec::new(), true);
        if !tree.join(roots) {
            tree.grow();
        }
        tree
    }

    /// Adds those of `roots` that are not members yet (each held by a
    /// pidfd opened before it was shown to belong), stopped if freezing,
    /// and all their descendants; whether any joined.
    pub fn join(&mut self, roots: Vec<(i32, OwnedFd)>) -> bool {
        let me = std::process::id() as i32;
        let mut joined = false;
        for (pid, fd) in roots {
            if pid == me || self.has_live_member(pid) {
                continue;
            }
            if self.freezing {
                self.stop(pid, &fd);
            }
            self.members.push((pid, fd));
            joined = true;
        }
        if joined {
            self.grow();
        }
        joined
    }

    /// Every process this one started and what they started (a child
    /// subreaper's: orphans among them are its children again), but for
    /// the children `excluded`, stopped.
    pub fn freeze_descendants(excluded: &[i32]) -> Tree {
        let mut tree = Tree::empty(Some(std::process::id() as i32), excluded.to_vec(), true);
        tree.grow();
        tree
    }

    /// The same processes, left running: to pass a signal on to them.
    pub fn descendants(excluded: &[i32]) -> Tree {
        let mut tree = Tree::empty(Some(std::process::id() as i32), excluded.to_vec(), false);
        tree.grow();
        tree
    }

    fn empty(parent: Option<i32>, excluded: Vec<i32>, freezing: bool) -> Tree {
        Tree {
            members: Vec::new(),
            parent,
            excluded,
            freezing,
            stopped_before: HashSet::new(),
            incomplete: false,
        }
    }

    /// Adds the descendants of the members (stopped, if freezing), until a
    /// look at /proc shows no new one (or, should something that cannot be
    /// stopped, another user's process, fork on and on, for a bounded
    /// number of looks). Each look is followed down to its deepest
    /// descendants at once.
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
        seen.extend(&self.excluded);
        for _ in 0..MAX_ROUNDS {
            // The members' children, where the kernel lists them: a few
            // files, not every process of the host.
            let roots: Vec<i32> = self
                .parent
                .into_iter()
                .chain(self.members.iter().map(|(pid, _)| *pid))
                .collect();
            let family = procfs::descendants_with_parents(&roots).or_else(procfs::parent_pids);
            let Some(parents) = family else {
                self.incomplete = true;
                return;
            };
            let mut grew = false;
            loop {
                let new: Vec<i32> = parents
                    .iter()
                    .filter(|(pid, parent)| !seen.contains(pid) && self.has_member(*parent))
                    .map(|(pid, _)| *pid)
                    .collect();
                if new.is_empty() {
                    break;
                }
                for pid in new {
                    seen.insert(pid);
                    grew |= self.admit(pid);
                }
            }
            if !grew {
                return;
            }
        }
        self.incomplete = true;
    }

    /// Adds `pid` if it is shown to descend from the tree; whether it was.
    fn admit(&mut self, pid: i32) -> bool {
        let fd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(Errno::ESRCH) => return false,
            Err(_) => {
                self.incomplete = true;
                return false;
            }
        };
        let descends = match procfs::parent_pid(pid) {
            Some(parent) => self.has_live_member(parent) && !has_exited(&fd),
            None => {
                // Alive, yet its parent cannot be read (no descriptor
                // left): it may be the tree's.
                self.incomplete |= !has_exited(&fd);
                false
            }
        };
        if descends {
            if self.freezing {
                self.stop(pid, &fd);
            }
            self.members.push((pid, fd));
        }
        descends
    }

    /// Stops a process as it joins, noting whether it was stopped already.
    fn stop(&mut self, pid: i32, fd: &OwnedFd) {
        if procfs::is_stopped(pid) {
            self.stopped_before.insert(pid);
        }
        let _ = send(fd, libc::SIGSTOP);
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

    /// Whether every process of the tree was found, and may be signalled
    /// (signal 0 asks): what stops an instance stops all of it or none.
    /// Why not, if not.
    pub fn can_stop_all(&self) -> Result<(), &'static str> {
        if self.incomplete {
            return Err("too many processes to hold at once (the descriptor limit)");
        }
        let permitted =
            |(_, fd): &(i32, OwnedFd)| matches!(send(fd, 0), Ok(()) | Err(Errno::ESRCH));
        match self.members.iter().all(permitted) {
            true => Ok(()),
            false => Err("not permitted to signal all of it"),
        }
    }

    /// Lets a frozen tree go on, untouched: but for the members that were
    /// stopped before it froze them (a job stopped with ^Z stays stopped).
    pub fn thaw(self) {
        for (pid, fd) in &self.members {
            if !self.stopped_before.contains(pid) {
                let _ = send(fd, libc::SIGCONT);
            }
        }
    }

    /// Members that are this process's ancestors: a replacer started from
    /// inside the instance. Their signals would come back to it (a --fork
    /// supervisor passes them on to its child) or they would wait for it (a
    /// subreaper): they get SIGKILL at once, and this process, which may
    /// have been set to die with its parent (a supervisor's COMMAND is), no
    /// longer does: it is the new instance.
    pub fn kill_ancestors(&self) {
        let ancestors = procfs::ancestors();
        let members = self
            .members
            .iter()
            .filter(|(pid, _)| ancestors.contains(pid));
        for (index, (_, fd)) in members.enumerate() {
            if index == 0 {
                let _ = nix::sys::prctl::set_pdeathsig(None);
            }
            let _ = send(fd, libc::SIGKILL);
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
    pub fn terminate(self, signal: libc::c_int, kill_after: Duration) {
        self.begin_stop(signal);
        self.finish_stop(kill_after);
    }

    /// Sends `signal` to every member, and continues them: stopped, a
    /// member would only take it when continued.
    pub fn begin_stop(&self, signal: libc::c_int) {
        self.signal(signal);
        self.signal(libc::SIGCONT);
    }

    /// Waits `kill_after` for the members to exit, then freezes what is
    /// left (and whatever it started meanwhile) and sends it SIGKILL.
    pub fn finish_stop(mut self, kill_after: Duration) {
        if self.exit_within(kill_after) {
            return;
        }
        {
            let _held_back = SignalsHeldBack::hold();
            self.members.iter().for_each(|(_, fd)| {
                let _ = send(fd, libc::SIGSTOP);
            });
            self.grow();
            self.signal(libc::SIGKILL);
        }
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

/// The soft limit on open descriptors raised to the hard one, for as long
/// as this lives: stopping a tree holds a pidfd for each of its processes,
/// and one that could not be had is a process that could not be stopped.
/// Dropped, the limit is what it was, for a COMMAND to inherit.
pub struct DescriptorLimit(Option<(u64, u64)>);

impl DescriptorLimit {
    pub fn raise() -> DescriptorLimit {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let original = getrlimit(Resource::RLIMIT_NOFILE).ok();
        if let Some((_, hard)) = original {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        DescriptorLimit(original)
    }
}

impl Drop for DescriptorLimit {
    fn drop(&mut self) {
        if let Some((soft, hard)) = self.0 {
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                soft,
                hard,
            );
        }
    }
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT held back for as long as this lives:
/// the instance being stopped is frozen meanwhile, and must not be left
/// stopped by a ^C. Dropped, what came meanwhile takes effect.
pub struct SignalsHeldBack(Option<SigSet>);

impl SignalsHeldBack {
    pub fn hold() -> SignalsHeldBack {
        let mut held = SigSet::empty();
        for signal in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            held.add(signal);
        }
        let mut original = SigSet::empty();
        let blocked = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&held), Some(&mut original));
        SignalsHeldBack(blocked.ok().map(|()| original))
    }
}

impl Drop for SignalsHeldBack {
    fn drop(&mut self) {
        if let Some(original) = &self.0 {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(original), None);
        }
    }
}
