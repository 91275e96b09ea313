//! An etcd lock held: its lease renewed by a thread of this process until
//! the guard drops (then revoked, so the next holder starts at once), and
//! the handle that tells its holder when the lease is lost.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::api::error::Error;
use crate::lock::etcd::Gateway;
use crate::lock::etcd::Taken;
use crate::lock::etcd::gateway::soon;
use crate::lock::etcd::lease::{Renewer, Step};

/// An etcd lock held: its lease is renewed from a thread of this process
/// while the guard lives, and revoked when it drops. Check [`Guard::lost`]
/// before each step that must be the only one of its kind: the lease may
/// be lost while held (etcd unreachable for most of its TTL, the key
/// deleted, another instance's `me-only --replace`).
///
/// Dropping it revokes the lease, so that a waiter (a library's or
/// `me-only --wait`'s) starts at once. Where etcd does not answer, the drop
/// waits for a renewal under way and a few seconds for the revoke, then
/// leaves the lease to run out in its TTL.
pub struct Guard {
    name: String,
    fence: i64,
    lost: Lost,
    /// Closed when the guard drops: the thread revokes the lease and ends.
    stop: Option<OwnedFd>,
    keeper: Option<JoinHandle<()>>,
}

/// Becomes ready once the lock's lease is lost (or its guard dropped): the
/// holder is to stop what the lock guards, at once. The lease is given up
/// a little before it can run out in etcd (a quarter of its TTL, at most a
/// second), which is the holder's time to stop before another can start.
/// A clone watches the same lock; the descriptor ([`AsFd`]) becomes
/// readable then, for an event loop.
#[derive(Clone)]
pub struct Lost(Arc<LostInner>);

struct LostInner {
    /// Readable (at end of file) once the thread's write end is closed.
    ready: OwnedFd,
    reason: Mutex<Option<String>>,
}

impl Guard {
    /// The guard of `taken`, the lease that holds `name`, renewed from now
    /// on by a thread through `gateway`. Where the thread cannot be
    /// started, the lease is revoked and the error returned.
    pub(super) fn keep(
        name: &str,
        gateway: Gateway,
        ttl: i64,
        taken: Taken,
    ) -> Result<Guard, Error> {
        let cannot = |action, errno: Errno| Error::Io {
            lock: name.to_owned(),
            action,
            source: std::io::Error::from_raw_os_error(errno as i32),
        };
        let give_back = |gateway: &Gateway| {
            let _ = gateway.revoke(taken.lease, soon());
        };
        let pipes = pipe().and_then(|stop| Ok((stop, pipe()?)));
        let ((stop_read, stop_write), (lost_read, lost_write)) = pipes.map_err(|errno| {
            give_back(&gateway);
            cannot("make the pipes of the lease's thread", errno)
        })?;
        let lost = Lost(Arc::new(LostInner {
            ready: lost_read,
            reason: Mutex::new(None),
        }));
        let renewer = Renewer::new(name, taken.lease, taken.key, ttl, taken.renewed);
        // For the revoke, should the thread (which takes the gateway) not
        // start.
        let spare = gateway.clone();
        let keeper = Keeper {
            gateway,
            renewer,
            lease: taken.lease,
            stop: stop_read,
            lost: lost.clone(),
            lost_write: Some(lost_write),
        };
        let spawned = std::thread::Builder::new()
            .name("me-only-lease".into())
            .spawn(move || keeper.run());
        let keeper = spawned.map_err(|err| {
            give_back(&spare);
            Error::Io {
                lock: name.to_owned(),
                action: "start the thread that keeps the lease",
                source: err,
            }
        })?;
        Ok(Guard {
            name: name.to_owned(),
            fence: taken.fence,
            lost,
            stop: Some(stop_write),
            keeper: Some(keeper),
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: the lock key's create revision in etcd, which
    /// grows with every new holder (what `me-only --etcd` gives COMMAND as
    /// ME_ONLY_FENCE). A store that remembers the highest token it has seen
    /// can refuse the writes of a holder that lost the lock.
    pub fn fence(&self) -> i64 {
        self.fence
    }

    /// The handle that becomes ready when the lease is lost.
    pub fn lost(&self) -> Lost {
        self.lost.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The thread wakes at the end of the pipe, revokes and ends.
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("name", &self.name)
            .field("fence", &self.fence)
            .field("lost", &self.lost.is_lost())
            .finish()
    }
}

impl Lost {
    /// Whether the lease is lost (or the guard dropped), now.
    pub fn is_lost(&self) -> bool {
        self.wait_until(Some(Instant::now()))
    }

    /// Waits until the lease is lost (or the guard dropped).
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout` for the lease to be lost (or the guard
    /// dropped): whether it was.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Why the lease was lost, once it was (e.g. "lock key deleted").
    pub fn reason(&self) -> Option<String> {
        self.0.reason.lock().ok()?.clone()
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let timeout = match left {
                None => PollTimeout::NONE,
                // Rounded up: poll counts whole milliseconds.
                Some(left) => PollTimeout::try_from(left + Duration::from_nanos(999_999))
                    .unwrap_or(PollTimeout::MAX),
            };
            let mut ready = [PollFd::new(self.0.ready.as_fd(), PollFlags::POLLIN)];
            match poll(&mut ready, timeout) {
                Ok(0) if left.is_some_and(|left| left.is_zero()) => return false,
                Ok(0) | Err(Errno::EINTR) => {}
                Ok(_) => return true,
                // Cannot be watched: said lost, the side of caution.
                Err(_) => return true,
            }
        }
    }
}

impl AsFd for Lost {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.ready.as_fd()
    }
}

impl fmt::Debug for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lost")
            .field("lost", &self.is_lost())
            .field("reason", &self.reason())
            .finish()
    }
}

/// What the lease's thread keeps.
struct Keeper {
    gateway: Gateway,
    renewer: Renewer,
    lease: i64,
    /// The read end of the guard's pipe: its end says the guard dropped.
    stop: OwnedFd,
    lost: Lost,
    /// Closed when the lease is lost, which makes `lost` ready.
    lost_write: Option<OwnedFd>,
}

impl Keeper {
    /// Renews the lease until the guard drops, then revokes it; says it
    /// lost when it is.
    fn run(mut self) {
        loop {
            // Once lost, nothing more to renew: only the guard's drop.
            let wake = self.lost_write.as_ref().map(|_| self.renewer.wake());
            if self.stop_came(wake) {
                break;
            }
            if self.lost_write.is_none() {
                continue;
            }
            match self.renewer.step(&self.gateway, Instant::now()) {
                Step::Later | Step::Renewed => {}
                Step::Lost(reason) => self.say_lost(reason),
            }
        }
        let _ = self.gateway.revoke(self.lease, soon());
        self.note_reason("the guard was dropped".into());
    }

    /// Waits until `wake` (for ever if None): whether the guard dropped.
    fn stop_came(&self, wake: Option<Instant>) -> bool {
        let timeout = match wake {
            None => PollTimeout::NONE,
            Some(wake) => {
                let left = wake.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut stop = [PollFd::new(self.stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut stop, timeout) {
            Ok(0) | Err(Errno::EINTR) => false,
            Ok(_) => true,
            // Cannot be watched: the lease cannot be kept either.
            Err(_) => true,
        }
    }

    fn say_lost(&mut self, reason: String) {
        log::warn!("{}: {reason}", self.renewer.lock());
        self.note_reason(reason);
        drop(self.lost_write.take());
    }

    /// Why the lock is no longer held, unless said already.
    fn note_reason(&self, reason: String) {
        if let Ok(mut said) = self.lost.0.reason.lock() {
            said.get_or_insert(reason);
        }
    }
}

/// A pipe whose ends are closed on exec: the lock's thread never hands
/// them to a program the holder starts.
fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
}
