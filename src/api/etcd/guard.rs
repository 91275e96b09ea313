//! An etcd lock held: its lease renewed by a thread of this process until
//! the guard drops (then revoked, so the next holder starts at once), and
//! the handle that tells its holder when the lease is lost.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::poll::{PollFd, PollFlags, poll};

use crate::api::error::Error;
use crate::lock::etcd::Gateway;
use crate::lock::etcd::Taken;
use crate::lock::etcd::lease::{Renewer, Step};
use crate::sys::poll_time;

/// An etcd lock held: its lease is renewed from a thread of this process
/// while the guard lives, and revoked when it drops. Check [`Guard::lost`]
/// before each step that must be the only one of its kind: the lease may
/// be lost while held (etcd unreachable for most of its TTL, the key
/// deleted, another instance's `me-only --replace`).
///
/// Dropping it revokes the lease, so that a waiter (a library's or
/// `me-only --wait`'s) starts at once. Where etcd does not answer, the
/// drop gives up after about three seconds (`DROP_REVOKE`, `THREAD_WAIT`),
/// and the lease runs out in its TTL.
pub struct Guard {
    name: String,
    fence: i64,
    lease: i64,
    lost: Lost,
    /// The drop's own way to etcd: the thread may be in a renewal that
    /// etcd does not answer.
    gateway: Mutex<Gateway>,
    /// A byte written here tells the thread to end (a byte, not the end of
    /// the pipe: a child forked meanwhile keeps a copy of this end).
    stop: OwnedFd,
    keeper: Option<JoinHandle<()>>,
    /// Says when the thread has ended.
    ended: Mutex<mpsc::Receiver<()>>,
}

/// Becomes ready once the lock's lease is lost (or its guard dropped): the
/// holder is to stop what the lock guards, at once. The lease is given up
/// a little before it can run out in etcd (a quarter of its TTL, at most a
/// second), which is the holder's time to stop before another can start.
///
/// Its descriptor ([`AsFd`], for an event loop) is a timer that goes off
/// at that moment unless a renewal came first, so it is ready in time even
/// when the lease's thread is late (the process stopped or starved of CPU);
/// once it has been seen ready, the lease is lost for good: drop the guard.
/// Poll it, never read from it (a read would make it not ready again).
/// A clone watches the same lock.
#[derive(Clone)]
pub struct Lost(Arc<LostInner>);

struct LostInner {
    /// A timerfd on CLOCK_BOOTTIME (time asleep counts, as it does for the
    /// lease in etcd), readable once it went off.
    timer: OwnedFd,
    /// Seen lost: a renewal that came after the timer went off does not
    /// make it held again.
    seen: AtomicBool,
    reason: Mutex<Option<String>>,
}

/// How long a drop waits for the revoke, where etcd does not answer.
const DROP_REVOKE: Duration = Duration::from_secs(2);

/// How long a drop waits for the thread to end: one in a renewal that etcd
/// does not answer ends at that call's deadline, on its own.
const THREAD_WAIT: Duration = Duration::from_secs(1);

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
        let give_back = || {
            let _ = gateway.revoke(taken.lease, Instant::now() + DROP_REVOKE);
        };
        let cannot = |action, errno: Errno| {
            give_back();
            Error::Io {
                lock: name.to_owned(),
                action,
                source: std::io::Error::from_raw_os_error(errno as i32),
            }
        };
        let renewer = Renewer::new(name, taken.lease, taken.key, ttl, taken.renewed);
        let timer = LostInner::timer(renewer.lost_at())
            .map_err(|errno| cannot("make the timer of the lease", errno))?;
        let (stop_read, stop_write) =
            pipe().map_err(|errno| cannot("make the pipe of the lease's thread", errno))?;
        let lost = Lost(Arc::new(LostInner {
            timer,
            seen: AtomicBool::new(false),
            reason: Mutex::new(None),
        }));
        let (ended_write, ended) = mpsc::channel();
        let keeper = Keeper {
            gateway: gateway.clone(),
            renewer,
            stop: stop_read,
            lost: lost.clone(),
            _ended: Ended(ended_write),
        };
        let spawned = std::thread::Builder::new()
            .name("me-only-lease".into())
            .spawn(move || keeper.run());
        let keeper = spawned.map_err(|err| {
            give_back();
            Error::Io {
                lock: name.to_owned(),
                action: "start the thread that keeps the lease",
                source: err,
            }
        })?;
        Ok(Guard {
            name: name.to_owned(),
            fence: taken.fence,
            lease: taken.lease,
            lost,
            gateway: Mutex::new(gateway),
            stop: stop_write,
            keeper: Some(keeper),
            ended: Mutex::new(ended),
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
        // One byte: the thread ends at its next look.
        let _ = nix::unistd::write(&self.stop, &[1]);
        // Revoked from here, not by the thread, which may be waiting for a
        // renewal that etcd does not answer (up to a third of the TTL).
        if let Ok(gateway) = self.gateway.lock() {
            let _ = gateway.revoke(self.lease, Instant::now() + DROP_REVOKE);
        }
        self.lost.0.say_lost("the guard was dropped".into());
        let ended = self
            .ended
            .lock()
            .is_ok_and(|ended| ended.recv_timeout(THREAD_WAIT).is_ok());
        if let Some(keeper) = self.keeper.take().filter(|_| ended) {
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
        let said = self.0.reason.lock().ok()?.clone();
        said.or_else(|| {
            self.0
                .seen
                .load(Ordering::SeqCst)
                .then(|| "lease lost: not renewed in time".to_owned())
        })
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let inner = &self.0;
        loop {
            if inner.seen.load(Ordering::SeqCst) {
                return true;
            }
            let mut ready = [PollFd::new(inner.timer.as_fd(), PollFlags::POLLIN)];
            let timed_out = match poll(&mut ready, poll_time::until(deadline)) {
                Ok(0) => true,
                Err(Errno::EINTR) => false,
                // Gone off; or it cannot be watched: said lost, the side of
                // caution.
                Ok(_) | Err(_) => {
                    inner.seen.store(true, Ordering::SeqCst);
                    return true;
                }
            };
            if timed_out && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return false;
            }
        }
    }
}

impl LostInner {
    /// A timer that goes off at `lost_at`.
    fn timer(lost_at: Instant) -> Result<OwnedFd, Errno> {
        // SAFETY: timerfd_create takes plain numbers and returns a new
        // descriptor, owned by no one else, or -1.
        let fd = unsafe {
            libc::timerfd_create(libc::CLOCK_BOOTTIME, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK)
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: just created, see above.
        let timer = unsafe { OwnedFd::from_raw_fd(fd) };
        set_timer(&timer, lost_at)?;
        Ok(timer)
    }

    /// The lease renewed: the timer set to go off at `lost_at` instead;
    /// false, and the lease taken as lost, where that moment has passed, or
    /// the timer has gone off already (a holder may have seen it lost: it
    /// stays so). Setting a timer clears its going off, so one that went
    /// off is never set again.
    fn renewed(&self, lost_at: Instant) -> bool {
        if lost_at <= Instant::now() || has_gone_off(&self.timer) {
            return false;
        }
        match set_timer(&self.timer, lost_at) {
            Ok(false) => true,
            // It went off just before being set: it goes off again now.
            _ => {
                let _ = set_timer(&self.timer, Instant::now());
                false
            }
        }
    }

    /// Lost, for `reason` (the first said is kept): the timer goes off now.
    fn say_lost(&self, reason: String) {
        if let Ok(mut said) = self.reason.lock() {
            said.get_or_insert(reason);
        }
        if !has_gone_off(&self.timer) {
            let _ = set_timer(&self.timer, Instant::now());
        }
    }
}

/// Sets `timer` to go off once at `at` (at once if past): whether it had
/// gone off before. The timer counts on the boot clock, which runs on
/// while the machine sleeps, as the lease's time runs on in etcd; `at`
/// is turned into it reading the boot clock first, so that a pause
/// between the two readings makes it go off early, never late.
fn set_timer(timer: &OwnedFd, at: Instant) -> Result<bool, Errno> {
    let booted = crate::sys::procfs::since_boot();
    let when = booted + at.saturating_duration_since(Instant::now());
    let new = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: when.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: when.subsec_nanos() as libc::c_long,
        },
    };
    let mut old = new;
    // SAFETY: both structures are ours, of the type timerfd_settime takes.
    let set = unsafe {
        libc::timerfd_settime(timer.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &new, &mut old)
    };
    if set < 0 {
        return Err(Errno::last());
    }
    Ok(is_zero(&old.it_value))
}

/// Whether `timer` has gone off: set once, it then counts no time left
/// (or it cannot be asked: taken as gone off, the side of caution).
fn has_gone_off(timer: &OwnedFd) -> bool {
    let mut now = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    // SAFETY: the structure is ours, of the type timerfd_gettime fills.
    let asked = unsafe { libc::timerfd_gettime(timer.as_raw_fd(), &mut now) };
    asked < 0 || is_zero(&now.it_value)
}

fn is_zero(time: &libc::timespec) -> bool {
    time.tv_sec == 0 && time.tv_nsec == 0
}

impl AsFd for Lost {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.timer.as_fd()
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
    /// The read end of the guard's pipe: a byte says the guard dropped.
    stop: OwnedFd,
    lost: Lost,
    /// Tells the guard's drop, as the thread ends (by unwinding too).
    _ended: Ended,
}

impl Keeper {
    /// Renews the lease until the guard drops, or until it is lost (then
    /// says so: the guard's drop revokes what is left of it).
    fn run(mut self) {
        loop {
            if self.stop_came(self.renewer.wake()) {
                return;
            }
            match self.renewer.step(&self.gateway, Instant::now()) {
                Step::Later => {}
                Step::Renewed if self.lost.0.renewed(self.renewer.lost_at()) => {}
                Step::Renewed => {
                    return self.say_lost(
                        "lease lost: renewed too late (the process was stopped or starved)".into(),
                    );
                }
                Step::Lost(reason) => return self.say_lost(reason),
            }
        }
    }

    /// Waits until `wake`: whether the guard dropped meanwhile.
    fn stop_came(&self, wake: Instant) -> bool {
        let mut stop = [PollFd::new(self.stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut stop, poll_time::until(Some(wake))) {
            Ok(0) | Err(Errno::EINTR) => false,
            Ok(_) => true,
            // Cannot be watched: the lease cannot be kept either.
            Err(_) => true,
        }
    }

    fn say_lost(&self, reason: String) {
        log::warn!("{}: {reason}", self.renewer.lock());
        self.lost.0.say_lost(reason);
    }
}

/// Sends when dropped: the thread has ended, however.
struct Ended(mpsc::Sender<()>);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A pipe whose ends are closed on exec: the lock's thread never hands
/// them to a program the holder starts.
fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
}
