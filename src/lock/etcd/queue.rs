//! `--wait` with `--etcd`: a place in line, as etcd's lock recipe (and so
//! `etcdctl lock`) keeps one. The waiter puts its key `NAME/<lease>`; keys
//! queue by create revision, and the lock is the waiter's once no older key
//! of NAME is left (keys of a lock nested in NAME do not count). Meanwhile
//! it watches the key just ahead of its own, and its own, and looks again
//! when either goes: its own goes when its lease does (revoked by a
//! --slots waiter's other place that won, run out, or deleted by an
//! operator). A --replace waiter also watches the holder it asked to stop,
//! and stops waiting once that one has let go, whoever took the lock then.
//!
//! The waiter renews its lease itself, between watches, never from another
//! thread: a lease lives only as long as its waiter listens. A waiter that
//! is stopped, or stuck on a member that died without a word, lets its
//! lease run out rather than hold the lock without knowing. And once per
//! renewal period it looks at the line afresh, through whichever endpoint
//! answers, so that a member dying silently under a watch costs one period
//! at most.

use std::time::{Duration, Instant};

use super::gateway::{self, CallError, Watched};
use super::lease::{self, renewal_period};
use super::{EtcdLock, Taken, holder_value};
use crate::error::Error;

/// How long a waiter pauses before it asks again when etcd did not answer.
const RETRY: Duration = Duration::from_secs(1);

/// Where one look at the line left the waiter.
enum Look {
    /// Its key is the oldest: the lock is its own.
    Ours,
    /// Its key is gone (the lease ran out, or an operator deleted it).
    PlaceLost,
    /// The holder --replace asked to stop has let go, and another key
    /// (another replacer's) came first.
    HolderGone,
    /// Still behind another; the deadline has come.
    TimedOut,
    /// Still behind another: look again.
    Behind,
}

impl EtcdLock {
    /// Waits in line until the lock is this process's (Some) or `deadline`
    /// comes (None). A waiter whose place was lost queues again, at the
    /// end, unless it is a --slots waiter's place that lost its contest;
    /// one that etcd leaves unanswered until its lease may have run out
    /// gives up. A replacer whose asked holder let go to another gives up
    /// as on a conflict (Busy): replace.rs then meets that holder.
    pub(super) fn wait_in_line(&self, deadline: Option<Instant>) -> Result<Option<Taken>, Error> {
        let waited = self.queue_until_done(deadline);
        // The asked holder is this wait's alone, however it ended: one
        // that lets go only after it (to a holder younger than
        // --replace-older, left alone) has no say in the launch's own
        // --wait, which follows, for whoever holds the lock then.
        self.asked.borrow_mut().take();
        waited
    }

    /// wait_in_line's queueing, again whenever the place is lost.
    fn queue_until_done(&self, deadline: Option<Instant>) -> Result<Option<Taken>, Error> {
        let mut first_time = true;
        loop {
            let mut place = self.join_line()?;
            if first_time {
                log::debug!("{}: waiting for the holder to let go", self.name);
                first_time = false;
            }
            let turn = self.wait_for_turn(&mut place, deadline);
            if let Ok(Look::Ours) = turn {
                if self.may_keep(place.lease) {
                    return Ok(Some(place));
                }
                // Another slot's place won: this one is given back, and
                // the next try finds the contest over.
                self.give_back(place.lease);
                return Ok(None);
            }
            self.give_back(place.lease);
            match turn {
                Ok(Look::PlaceLost) if self.contest_over() => return Err(self.taken_by_another()),
                Ok(Look::PlaceLost) => {
                    log::debug!("{}: the place in line was lost: queueing again", self.name);
                }
                Ok(Look::HolderGone) => return Err(self.taken_by_another()),
                Ok(_) => return Ok(None),
                Err(err) => return Err(self.place_error("wait for the lock", err)),
            }
        }
    }

    /// A fresh lease, and a key on it at the end of the line.
    fn join_line(&self) -> Result<Taken, Error> {
        let (lease, key, asked) = self.new_lease()?;
        match self.gateway().put_new(&key, &holder_value(), lease) {
            Ok(fence) => Ok(Taken {
                lease,
                key,
                fence,
                renewed: asked,
                named: std::process::id() as i32,
            }),
            Err(err) => {
                self.give_back(lease);
                Err(self.place_error("queue for the lock", err))
            }
        }
    }

    /// Looks at the line, renewing and watching, until the place is
    /// first, lost, or out of time. An unanswered look is tried again
    /// while the lease may still be alive; a refusal (no permission, a
    /// login refused) ends the wait.
    fn wait_for_turn(
        &self,
        place: &mut Taken,
        deadline: Option<Instant>,
    ) -> Result<Look, CallError> {
        loop {
            // A --slots waiter's place whose contest is over has lost: its
            // lease was revoked, and there is nothing left to look at.
            if self.contest_over() {
                return Ok(Look::PlaceLost);
            }
            match self.look(place, deadline) {
                Ok(Look::Behind) => {}
                Ok(look) => return Ok(look),
                Err(err @ CallError::Unreachable(_)) => {
                    let retry_at = Instant::now() + RETRY;
                    if retry_at >= self.lost_at(place) || deadline.is_some_and(|d| retry_at >= d) {
                        return Err(err);
                    }
                    log::debug!("{}: {err}; asking again", self.name);
                    std::thread::sleep(RETRY);
                }
                Err(refused) => return Err(refused),
            }
        }
    }

    /// One look: renew the lease if it is time, read the line, and if the
    /// place is not first, watch the key ahead until it goes or the next
    /// renewal (or the deadline) is due. No call may outlast the lease.
    fn look(&self, place: &mut Taken, deadline: Option<Instant>) -> Result<Look, CallError> {
        let period = renewal_period(self.settings.ttl);
        if Instant::now() >= place.renewed + period && !self.renew(place)? {
            return Ok(Look::PlaceLost);
        }
        let (read_at, keys) = self
            .gateway()
            .lock_keys(&self.prefix, self.lost_at(place).min(gateway::soon()))?;
        let ahead = match keys.iter().position(|kv| kv.key == place.key) {
            None => return Ok(Look::PlaceLost),
            // The keeper takes the lease over with a whole TTL to go.
            Some(0) if self.renew(place)? => return Ok(Look::Ours),
            Some(0) => return Ok(Look::PlaceLost),
            Some(behind) => &keys[behind - 1].key,
        };
        let asked = self.asked.borrow();
        if let Some(asked) = asked.as_deref() {
            if !keys.iter().any(|kv| kv.key == asked) {
                return Ok(Look::HolderGone);
            }
        }
        if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
            return Ok(Look::TimedOut);
        }
        let renew_at = place.renewed + period;
        let until = deadline.map_or(renew_at, |deadline| deadline.min(renew_at));
        let mut watched = vec![ahead.as_slice(), place.key.as_slice()];
        watched.extend(asked.as_deref().filter(|&asked| asked != ahead));
        match self.gateway().watch(&watched, read_at, until)? {
            Watched::Broken(why) => {
                Err(CallError::Unreachable(format!("a watch broke off: {why}")))
            }
            Watched::Quiet | Watched::Changed => Ok(Look::Behind),
        }
    }

    /// When the place's lease may run out, less the keeper's margin: no
    /// call of the waiter's may go on past it.
    fn lost_at(&self, place: &Taken) -> Instant {
        let ttl = lease::ttl_duration(self.settings.ttl);
        lease::lost_at(place.renewed, ttl)
    }

    /// Renews the place's lease before it may run out; false if it is gone.
    fn renew(&self, place: &mut Taken) -> Result<bool, CallError> {
        let asked = Instant::now();
        let alive = self
            .gateway()
            .keep_alive(place.lease, self.lost_at(place))?
            > 0;
        if alive {
            place.renewed = asked;
        }
        Ok(alive)
    }
}
