//! --slots N: at most N instances at once. Slot k (1 to N) is a lock of its
//! own, named from LOCK (`lock::slot_lock`); an instance takes the first
//! one free, in order, so the low slots are the busy ones.
//!
//! A waiter watches every slot at once, a thread for each, each waiting as a
//! single-lock waiter would (on the holder's hang-up, or in flock(2)), so it
//! starts as soon as any slot comes free; past what the descriptor limit
//! allows, the other slots are looked at in turn, once a second. The
//! threads never take a signal meant for me-only, and are all gone before
//! the lock is handed over and COMMAND starts (see `Waiters`): the etcd
//! keeper is forked from a process that must then be single-threaded.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use crate::error::Error;
use crate::lock::acquire::{self, Patience};
use crate::lock::{self, Attempt, Backend, Holder, Kind, Probe};

/// One slot of LOCK.
pub struct Slot {
    /// 1 to N, for ME_ONLY_SLOT.
    pub number: u32,
    /// Its lock's name as LOCK would be written for it, for ME_ONLY_LOCK.
    pub given: OsString,
    pub lock: Box<dyn Backend>,
}

/// The N slots of LOCK, each checked as LOCK would be (a name too long, a
/// port past 65535 is a usage error) before any is tried.
pub fn all(lock: &OsStr, kind: &Kind, count: u32) -> Result<Vec<Slot>, Error> {
    (1..=count)
        .map(|number| {
            let given = lock::slot_lock(lock, kind, number)?;
            let lock = lock::from_cli(&given, kind.clone())?;
            Ok(Slot {
                number,
                given,
                lock,
            })
        })
        .collect()
}

/// Takes the first free slot, waiting as `patience` allows; returns its
/// index in `slots` and the descriptor that holds it. The slot's lock
/// object is the one that took it (a waiter's, from its thread), for what
/// it knows of the lock (an etcd lease).
pub fn acquire_any(
    lock: &OsStr,
    slots: &mut [Slot],
    kind: &Kind,
    patience: Patience,
    name_holders: bool,
) -> Result<(usize, Option<OwnedFd>), Error> {
    let started = Instant::now();
    for (index, slot) in slots.iter().enumerate() {
        if let Attempt::Acquired(fd) = slot.lock.try_acquire()? {
            return Ok((index, fd));
        }
    }
    let outcome = match patience {
        Patience::None => None,
        Patience::Forever | Patience::For(_) => wait_for_any(slots, kind, patience)?,
    };
    let outcome = outcome.map(|(index, lock, fd)| {
        slots[index].lock = lock;
        (index, fd)
    });
    outcome.ok_or_else(|| {
        let waited = (patience != Patience::None).then(|| started.elapsed());
        Error::SlotsBusy {
            lock: lock.to_string_lossy().into_owned(),
            count: slots.len(),
            holders: if name_holders {
                holders(slots)
            } else {
                Vec::new()
            },
            waited,
        }
    })
}

/// A slot taken by a waiter: its index, the lock object that took it, and
/// the descriptor that holds it.
type Won = (usize, Box<dyn Backend>, Option<OwnedFd>);

/// A slot's lock as a waiter took it, and the descriptor that holds it.
type Taken = (Box<dyn Backend>, Option<OwnedFd>);

/// What a waiter thread sends: the slot it took, or why it could not wait.
type Report = (usize, Result<Taken, Error>);

/// Waits on every slot at once; returns the one taken, or None when
/// `patience` ran out with all still held. Whatever the outcome, every
/// other waiter has ended when this returns, so none holds a slot or a
/// place in line, nor is there to take a signal, once COMMAND runs.
fn wait_for_any(slots: &[Slot], kind: &Kind, patience: Patience) -> Result<Option<Won>, Error> {
    // A limit past what the clock can count to has no end.
    let deadline = match patience {
        Patience::For(limit) => Instant::now().checked_add(limit),
        Patience::None | Patience::Forever => None,
    };
    let lock = slots.first().map_or("", |slot| slot.lock.name());
    let wake = Wake::install(lock)?;
    let mut waiters = Waiters::start(slots, kind, patience, wake.signal)?;
    let outcome = waiters.first_report(deadline);
    waiters.stop();
    match outcome {
        // A waiter may have taken its slot just as time ran out.
        Ok(None) => waiters.late_win(),
        outcome => outcome,
    }
}

/// How many descriptors a waiter on a kernel slot may hold at once: its
/// connection to the holder (or its lock file), and the socket of a try.
const FDS_PER_WAITER: u64 = 2;
/// Descriptors left for the rest of me-only while it waits (/proc reads
/// for the message, the logger).
const FDS_SPARE: u64 = 16;
/// How often the slots not watched (past what the descriptor limit
/// allows) are looked at, one after the other: each look costs a system
/// call or two per slot.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The threads that wait on the slots. A slot is watched by a thread of
/// its own, waiting as a single-lock waiter would (on the holder's hang-up,
/// or in flock(2)), for as many slots as the descriptor limit allows; one
/// more thread looks at the rest in turn, every SWEEP_INTERVAL.
///
/// The first thread to take its slot wins and sets `over`; one that takes
/// its slot after that lets it go at once. Every thread blocks the signals
/// me-only takes (a supervisor's SIGCHLD and SIGTERM, a terminal's ^C):
/// they are the main thread's.
struct Waiters {
    over: Arc<AtomicBool>,
    reports: mpsc::Receiver<Report>,
    /// The kind of lock the threads take, with what they share (etcd's
    /// contest, which ends their waits).
    kind: Kind,
    /// The threads that watch a slot; a kernel slot's is woken by `wake`
    /// to end.
    watchers: Vec<JoinHandle<()>>,
    /// Disconnected once every watcher has ended.
    watchers_ended: mpsc::Receiver<()>,
    wake: libc::c_int,
    /// The thread that looks at the slots not watched, and what ends its
    /// pause between two looks (dropping the sender).
    sweeper: Option<(JoinHandle<()>, mpsc::Sender<()>)>,
}

impl Waiters {
    fn start(
        slots: &[Slot],
        kind: &Kind,
        patience: Patience,
        wake: libc::c_int,
    ) -> Result<Waiters, Error> {
        // The threads inherit this mask: no signal finds one before it is
        // set. (First: a failure leaves nothing to stop.)
        let unmasked = block_all_signals(slots[0].lock.name())?;
        let (sender, reports) = mpsc::channel();
        let (watcher_alive, watchers_ended) = mpsc::channel();
        let mut waiters = Waiters {
            over: Arc::new(AtomicBool::new(false)),
            reports,
            kind: kind.clone().contending(),
            watchers: Vec::new(),
            watchers_ended,
            wake,
            sweeper: None,
        };
        let watched = watchable(slots.len(), &waiters.kind);
        let started = waiters.start_watchers(&slots[..watched], patience, &sender, &watcher_alive);
        let started = started.and_then(|()| waiters.start_sweeper(slots, watched, &sender));
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&unmasked), None);
        // Only the waiters hold these now: their ends are what is awaited.
        drop((sender, watcher_alive));
        started.map(|()| waiters)
    }

    fn start_watchers(
        &mut self,
        slots: &[Slot],
        patience: Patience,
        sender: &mpsc::Sender<Report>,
        alive: &mpsc::Sender<()>,
    ) -> Result<(), Error> {
        // etcd's waiters keep their own deadline, and end once the contest
        // is over (contest.rs): a signal wakes no call to etcd. Kernel
        // waiters wait until woken.
        let patience = if self.woken_by_signal() {
            Patience::Forever
        } else {
            patience
        };
        for (index, slot) in slots.iter().enumerate() {
            let (given, kind) = (slot.given.clone(), self.kind.clone());
            let (over, sender) = (Arc::clone(&self.over), sender.clone());
            let alive = alive.clone();
            let wake = self.wake;
            let watcher = move || {
                let _alive = alive;
                unblock(wake);
                let outcome = lock::from_cli(&given, kind).and_then(|lock| {
                    let fd = acquire::acquire_unless(lock.as_ref(), patience, false, &over)?;
                    Ok(Some((lock, fd)))
                });
                report(index, outcome, &over, &sender);
            };
            let thread = std::thread::Builder::new()
                .spawn(watcher)
                .map_err(|err| Error::lock(slot.lock.name(), "start a waiter for a slot", &err))?;
            self.watchers.push(thread);
        }
        Ok(())
    }

    /// Whether the watchers wait in the kernel (poll(2), flock(2)), from
    /// which `wake` gets them out; etcd's wait on etcd.
    fn woken_by_signal(&self) -> bool {
        match self.kind {
            #[cfg(feature = "etcd")]
            Kind::Etcd(_) => false,
            _ => true,
        }
    }

    /// Starts the thread that looks at slots `watched..` in turn, if any.
    fn start_sweeper(
        &mut self,
        slots: &[Slot],
        watched: usize,
        sender: &mpsc::Sender<Report>,
    ) -> Result<(), Error> {
        if watched == slots.len() {
            return Ok(());
        }
        let unwatched: Vec<(usize, OsString)> = (watched..slots.len())
            .map(|index| (index, slots[index].given.clone()))
            .collect();
        let kind = self.kind.clone();
        let (over, sender) = (Arc::clone(&self.over), sender.clone());
        let (stop, pause) = mpsc::channel::<()>();
        let sweeper = move || loop {
            for (index, given) in &unwatched {
                if over.load(Ordering::SeqCst) {
                    return;
                }
                let outcome = lock::from_cli(given, kind.clone()).and_then(|lock| {
                    Ok(match lock.try_acquire()? {
                        Attempt::Acquired(fd) => Some((lock, fd)),
                        Attempt::Busy => None,
                    })
                });
                if !matches!(outcome, Ok(None)) {
                    return report(*index, outcome, &over, &sender);
                }
            }
            if pause.recv_timeout(SWEEP_INTERVAL) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
        };
        let thread = std::thread::Builder::new()
            .spawn(sweeper)
            .map_err(|err| Error::lock(slots[0].lock.name(), "start a waiter for slots", &err))?;
        self.sweeper = Some((thread, stop));
        Ok(())
    }

    /// The first slot taken, or None once `deadline` came (or every waiter
    /// gave up: etcd's, at their deadline). An error of one waiter ends
    /// the wait.
    fn first_report(&self, deadline: Option<Instant>) -> Result<Option<Won>, Error> {
        loop {
            let report = match deadline {
                None => self.reports.recv().ok(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.reports.recv_timeout(left).ok()
                }
            };
            match report {
                None => return Ok(None),
                Some((index, Ok((lock, fd)))) => return Ok(Some((index, lock, fd))),
                Some((_, Err(Error::Busy { .. }))) => {}
                Some((_, Err(err))) => return Err(err),
            }
        }
    }

    /// A slot taken after the wait was over but before the takers heard
    /// of it: the first to set `over` kept it and told.
    fn late_win(&self) -> Result<Option<Won>, Error> {
        Ok(self
            .reports
            .try_iter()
            .find_map(|(index, outcome)| outcome.ok().map(|(lock, fd)| (index, lock, fd))))
    }

    /// Ends every waiter, and returns once they are gone.
    fn stop(&mut self) {
        self.over.store(true, Ordering::SeqCst);
        if let Some((sweeper, stop)) = self.sweeper.take() {
            drop(stop);
            let _ = sweeper.join();
        }
        self.kind.end_contest();
        // A wake that comes just before a watcher blocks is lost on it:
        // it is sent again until every watcher has ended.
        loop {
            for watcher in self
                .watchers
                .iter()
                .filter(|watcher| self.woken_by_signal() && !watcher.is_finished())
            {
                // SAFETY: the thread is not joined yet, so its handle is valid.
                unsafe { libc::pthread_kill(watcher.as_pthread_t(), self.wake) };
            }
            if self.watchers_ended.recv_timeout(WAKE_AGAIN)
                == Err(mpsc::RecvTimeoutError::Disconnected)
            {
                break;
            }
        }
        self.watchers.drain(..).for_each(|watcher| {
            let _ = watcher.join();
        });
    }
}

impl Drop for Waiters {
    /// A wait that failed part-way leaves no waiter behind either.
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a wake may take to end a watcher's wait before it is sent again.
const WAKE_AGAIN: Duration = Duration::from_millis(10);

/// Sends a waiter's outcome, unless the wait is over: a slot taken after
/// that is let go, and `None` (the waiter was stopped) has nothing to tell.
fn report(
    index: usize,
    outcome: Result<Option<Taken>, Error>,
    over: &AtomicBool,
    sender: &mpsc::Sender<Report>,
) {
    let outcome = match outcome {
        Ok(None) => return,
        Ok(Some((lock, _fd))) if over.swap(true, Ordering::SeqCst) => return lock.let_go(),
        Ok(Some(taken)) => Ok(taken),
        Err(err) => Err(err),
    };
    let _ = sender.send((index, outcome));
}

/// How many of `count` slots may be watched each by a thread of its own
/// within the descriptor limit (soft: COMMAND inherits it as it was). A
/// waiter on an etcd slot must watch it: it holds a place in its line.
fn watchable(count: usize, kind: &Kind) -> usize {
    #[cfg(feature = "etcd")]
    if let Kind::Etcd(_) = kind {
        return count;
    }
    let _ = kind;
    let Ok((limit, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return count;
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count) as u64;
    let free = limit.saturating_sub(open + FDS_SPARE);
    count.min(usize::try_from(free / FDS_PER_WAITER).unwrap_or(usize::MAX))
}

/// Blocks every signal in the calling thread; returns the mask it had.
fn block_all_signals(lock: &str) -> Result<SigSet, Error> {
    let mut unmasked = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut unmasked),
    )
    .map_err(|errno| Error::lock_errno(lock, "block signals", errno))?;
    Ok(unmasked)
}

/// Unblocks `signal` alone in the calling thread.
fn unblock(signal: libc::c_int) {
    // SAFETY: a sigset_t on the stack, initialised by sigemptyset.
    unsafe {
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
    }
}

/// The signal that wakes a watcher blocked in poll(2) or flock(2) when the
/// wait is over: a real-time one, which nothing else sends me-only, caught
/// by a handler that does nothing and without SA_RESTART, so that the call
/// fails with EINTR and the watcher sees `over`. Its disposition is put
/// back when dropped: COMMAND inherits it.
struct Wake {
    signal: libc::c_int,
    previous: libc::sigaction,
}

extern "C" fn wake_up(_: libc::c_int) {}

impl Wake {
    fn install(lock: &str) -> Result<Wake, Error> {
        let signal = libc::SIGRTMIN();
        // SAFETY: sigaction structs zeroed then filled in; the handler
        // does nothing, so it is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = wake_up as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, &action, &mut previous) != 0 {
                return Err(Error::lock_errno(lock, "catch a signal", Errno::last()));
            }
            Ok(Wake { signal, previous })
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        // SAFETY: puts back what sigaction returned.
        unsafe { libc::sigaction(self.signal, &self.previous, std::ptr::null_mut()) };
    }
}

/// How many holders the all-held line names at most: with hundreds of
/// slots, naming each would make it kilobytes long, and probing each would
/// take seconds past the deadline.
const NAMED: usize = 3;

/// Who holds the first few slots still held, for the message; a slot may
/// have come free since.
fn holders(slots: &[Slot]) -> Vec<Holder> {
    slots
        .iter()
        .filter_map(|slot| match slot.lock.probe() {
            Ok(Probe::Held(holder)) => Some(holder),
            Ok(Probe::Free) | Err(_) => None,
        })
        .take(NAMED)
        .collect()
}
