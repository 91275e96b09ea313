//! --slots N: at most N instances at once. Slot k (1 to N) is a lock of its
//! own, named from LOCK (`backend::slot_lock`); an instance takes the first
//! one free, in order, so the low slots are the busy ones.
//!
//! A waiter watches every slot at once, a thread for each, each waiting as a
//! single-lock waiter would (on the holder's hang-up, or in flock(2)), so it
//! starts as soon as any slot comes free.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::acquire::{self, Patience};
use crate::backend::{self, Attempt, Backend, Holder, Kind, Probe};
use crate::error::Error;

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
            let given = backend::slot_lock(lock, kind, number)?;
            let lock = backend::from_cli(&given, kind.clone())?;
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
    outcome.ok_or_else(|| Error::SlotsBusy {
        lock: lock.to_string_lossy().into_owned(),
        count: slots.len(),
        holders: if name_holders {
            holders(slots)
        } else {
            Vec::new()
        },
        waited: (patience != Patience::None).then(|| started.elapsed()),
    })
}

/// A slot taken by a waiter: its index, the lock object that took it, and
/// the descriptor that holds it.
type Won = (usize, Box<dyn Backend>, Option<OwnedFd>);

/// Waits on every slot at once; returns the one taken, or None when
/// `patience` ran out with all still held.
///
/// Each thread has a lock object of its own for its slot (a waiter keeps
/// state in it: the watched connection, the open lock file, the etcd
/// lease). The first thread to take its slot wins; one that takes its slot
/// after that lets it go at once. Losers go on waiting until me-only execs
/// or exits, which ends them; in the meantime (--fork) a kernel slot freed
/// may be held for the instant it takes a loser to let it go. etcd waiters
/// settle it among themselves before any reports (contest.rs), so that no
/// place in a line outlives the win.
fn wait_for_any(slots: &[Slot], kind: &Kind, patience: Patience) -> Result<Option<Won>, Error> {
    let (sender, taken) = mpsc::channel();
    let won = Arc::new(AtomicBool::new(false));
    let kind = kind.clone().contending();
    for (index, slot) in slots.iter().enumerate() {
        let sender = sender.clone();
        let won = Arc::clone(&won);
        let (given, kind) = (slot.given.clone(), kind.clone());
        let waiter = move || {
            let outcome = backend::from_cli(&given, kind).and_then(|lock| {
                let fd = acquire::acquire(lock.as_ref(), patience, false)?;
                Ok((lock, fd))
            });
            match outcome {
                // Dropping the descriptor lets the slot go.
                Ok(_) if won.swap(true, Ordering::SeqCst) => {}
                outcome => {
                    let _ = sender.send((index, outcome));
                }
            }
        };
        std::thread::Builder::new()
            .spawn(waiter)
            .map_err(|err| Error::lock(slot.lock.name(), "start a waiter for a slot", &err))?;
    }
    drop(sender);
    let mut still_held = 0;
    for (index, outcome) in taken {
        match outcome {
            Ok((lock, fd)) => return Ok(Some((index, lock, fd))),
            Err(Error::Busy { .. }) => still_held += 1,
            Err(err) => {
                // No slot may be taken now that me-only gives up.
                won.store(true, Ordering::SeqCst);
                return Err(err);
            }
        }
    }
    debug_assert_eq!(still_held, slots.len());
    Ok(None)
}

/// Who holds each slot, for the message; a slot may have come free since.
fn holders(slots: &[Slot]) -> Vec<Holder> {
    slots
        .iter()
        .filter_map(|slot| match slot.lock.probe() {
            Ok(Probe::Held(holder)) => Some(holder),
            Ok(Probe::Free) | Err(_) => None,
        })
        .collect()
}
