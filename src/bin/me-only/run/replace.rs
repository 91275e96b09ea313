//! --replace: stop the instance that holds the lock, so that this one can
//! run (Ubuntu's run-this-one). The whole instance is stopped, or none of
//! it: every process found holding the lock, and what they started (a
//! --fork supervisor's COMMAND and its children hold no lock descriptor),
//! gets --signal (SIGTERM), then SIGKILL after --kill-after; should a
//! process of it be found holding the lock after that, the next round
//! stops it too.
//!
//! Signals go only to processes shown to hold the lock through a pidfd
//! opened first (instance.rs) or to descend from one (tree.rs), never to a
//! pid the kernel recorded, which another process may have been given
//! since. An etcd holder, which may run on another host, is asked instead:
//! its keeper stops it and lets go, and this one waits in line meanwhile;
//! should another (a replacer started with this one) take the lock first,
//! it is asked in turn, as a kernel lock's replacer stops whoever holds it
//! round after round.

use std::time::Duration;

use log::debug;

use crate::cli::Replace;
use crate::error::Error;
use crate::lock::acquire::{self, Patience};
use crate::lock::{Backend, Holder, Probe, StopRequest};
use crate::sys::instance;
use crate::sys::tree::{DescriptorLimit, SignalsHeldBack, Tree};

/// How many rounds of stopping at most: an instance that starts new
/// holders as fast as they are stopped is not chased for ever (the lock is
/// then held, as without --replace).
const MAX_ROUNDS: usize = 64;

/// Stops the instance that holds `lock` (if old enough), until it is free.
/// Returns when it is free, or when the holder is to be left alone (younger
/// than --replace-older, or chased too long): the caller's acquisition then
/// finds it free or held, as usual. A holder that cannot be stopped is an
/// error.
pub fn make_way(lock: &dyn Backend, replace: Replace) -> Result<(), Error> {
    if let Some(asked) = lock.ask_holder_to_stop(replace.older_than) {
        return ask_until_stopped(lock, replace, asked);
    }
    if let Some(held_through) = lock.held_through() {
        instance::let_go_of_own(held_through);
    }
    let _raised = DescriptorLimit::raise();
    for _ in 0..MAX_ROUNDS {
        let Probe::Held(holder) = lock.probe()? else {
            return Ok(());
        };
        let refuse = |why: &str| Error::NotReplaced {
            lock: lock.name().to_owned(),
            holder: holder.clone(),
            why: why.to_owned(),
        };
        let members = lock.held_through().map(instance::holding);
        let unseen = members.as_ref().is_some_and(|members| members.unseen);
        let Some(members) = members.filter(|members| !members.processes.is_empty()) else {
            if lock.probe()? == Probe::Free {
                return Ok(());
            }
            return Err(refuse(if unseen {
                "not permitted to see which processes hold it"
            } else {
                "no process can be seen holding it"
            }));
        };
        if let Some(older_than) = replace.older_than {
            if instance::age(&members).is_none_or(|age| age < older_than) {
                debug!(
                    "{}: the instance is younger than --replace-older",
                    lock.name()
                );
                return Ok(());
            }
        }
        let pids: Vec<i32> = members.processes.iter().map(|(pid, _)| *pid).collect();
        debug!(
            "{}: stopping pids {pids:?} and what they started",
            lock.name()
        );
        // Frozen while it is found and looked at, the tree is continued
        // before any signal that ends me-only takes effect.
        let held_back = SignalsHeldBack::hold();
        let tree = Tree::freeze_instance(members.processes);
        // All of it or none: a process that may not be signalled (signal 0
        // asks), or one that may have been missed, stops nothing.
        if let Err(why) = tree.can_stop_all() {
            tree.thaw();
            return Err(refuse(why));
        }
        tree.kill_ancestors();
        tree.begin_stop(replace.signal);
        drop(held_back);
        tree.finish_stop(replace.kill_after);
    }
    Ok(())
}

/// Waits for each holder asked to stop (`asked`: the first) to let go,
/// and asks the next holder in turn if another took the lock first; until
/// the lock is this process's, free, or held by one left alone (younger
/// than --replace-older, or chased too long).
fn ask_until_stopped(
    lock: &dyn Backend,
    replace: Replace,
    mut asked: Result<StopRequest, Error>,
) -> Result<(), Error> {
    for _ in 0..MAX_ROUNDS {
        let StopRequest::Sent { holder, within } = asked? else {
            return Ok(());
        };
        if wait_for_the_holder(lock, holder, within)? {
            return Ok(());
        }
        asked = lock
            .ask_holder_to_stop(replace.older_than)
            .unwrap_or(Ok(StopRequest::Free));
    }
    Ok(())
}

/// Waits, in line, for a holder asked to stop (on whatever host it runs)
/// to let go: true once the lock is this process's, false if another took
/// it first. One that has not let go within `within` cannot be stopped by
/// asking.
fn wait_for_the_holder(
    lock: &dyn Backend,
    holder: Holder,
    within: Duration,
) -> Result<bool, Error> {
    debug!(
        "{}: asked {holder} to stop; waiting up to {within:?}",
        lock.name()
    );
    match acquire::acquire(lock, Patience::For(within), false) {
        Ok(_) => return Ok(true),
        Err(Error::Busy { .. }) => {}
        Err(err) => return Err(err),
    }
    if lock.probe()? != Probe::Held(holder.clone()) {
        debug!("{}: {holder} let go, to another", lock.name());
        return Ok(false);
    }
    Err(Error::NotReplaced {
        lock: lock.name().to_owned(),
        holder,
        why: format!("it did not stop within {} s", within.as_secs()),
    })
}
