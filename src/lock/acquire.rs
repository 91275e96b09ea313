//! Taking the lock: at once, or by waiting for the holder to let go.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::debug;

use crate::error::Error;
use crate::lock::{Attempt, Backend, Holder, Probe, Waited};
use crate::sys::deadline;

/// How long to wait for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Fail at once.
    None,
    Forever,
    For(Duration),
}

/// Where nothing can be watched, waiters look again after this long,
/// doubling up to the cap: quick to notice, never a busy spin.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// Takes the lock, waiting as `patience` allows; returns the descriptor
/// that holds it, if one does. A waiter sleeps on the
/// holder's hang-up, tries again when it comes, and goes back to sleep if
/// another waiter won.
pub fn acquire(
    lock: &dyn Backend,
    patience: Patience,
    name_holder: bool,
) -> Result<Option<OwnedFd>, Error> {
    acquire_unless(lock, patience, name_holder, &AtomicBool::new(false))
}

/// As `acquire`, but gives up as if out of time once `over` is set: a
/// --slots waiter whose wait another slot ended. Whoever sets it wakes the
/// wait (a poll, a flock(2)) with a signal, which ends it with EINTR.
pub fn acquire_unless(
    lock: &dyn Backend,
    patience: Patience,
    name_holder: bool,
    over: &AtomicBool,
) -> Result<Option<OwnedFd>, Error> {
    let deadline = match patience {
        Patience::For(limit) => deadline::after(limit),
        Patience::None | Patience::Forever => None,
    };
    // An etcd that does not answer must not keep a bounded wait past its
    // deadline: each call is bounded by it, for as long as the wait lasts.
    lock.limit_calls_to(deadline);
    let acquired = acquire_by(lock, patience, deadline, name_holder, over);
    lock.limit_calls_to(None);
    acquired
}

fn acquire_by(
    lock: &dyn Backend,
    patience: Patience,
    deadline: Option<Instant>,
    name_holder: bool,
    over: &AtomicBool,
) -> Result<Option<OwnedFd>, Error> {
    let started = Instant::now();
    let mut backoff = Duration::ZERO;
    loop {
        // Stopped, it has nothing to try: a wait that ends hundreds of
        // waiters at once ends sooner.
        let stopped = over.load(Ordering::SeqCst);
        if !stopped {
            if let Attempt::Acquired(fd) = lock.try_acquire()? {
                return Ok(fd);
            }
        }
        let out_of_time = stopped || deadline::has_come(deadline);
        if patience == Patience::None || out_of_time {
            // How long it waited, before the look for the holder (a walk
            // through /proc) adds to it.
            let waited = (patience != Patience::None).then(|| started.elapsed());

            return Err(Error::Busy {
                lock: lock.name().to_owned(),
                holder: if name_holder {
                    holder(lock)
                } else {
                    Holder::unknown()
                },
                waited,
            });
        }
        match lock.wait_for_release(deadline)? {
            Waited::Event => backoff = Duration::ZERO,
            Waited::NothingToWatch => {
                sleep_until_before(backoff, deadline);
                backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
            }
        }
        debug!(
            "{}: trying again after {:?}",
            lock.name(),
            started.elapsed()
        );
    }
}

fn sleep_until_before(pause: Duration, deadline: Option<Instant>) {
    let pause = match deadline {
        Some(deadline) => pause.min(deadline.saturating_duration_since(Instant::now())),
        None => pause,
    };
    std::thread::sleep(pause);
}

/// Who holds the lock, for the message; it may have let go meanwhile.
fn holder(lock: &dyn Backend) -> Holder {
    match lock.probe() {
        Ok(Probe::Held(holder)) => holder,
        Ok(Probe::Free) | Err(_) => Holder::unknown(),
    }
}
