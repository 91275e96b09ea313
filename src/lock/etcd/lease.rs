//! Keeping a lease: when to renew it, how long to wait for an answer, how
//! soon to try again, and when to give it up as lost. One implementation
//! for every holder of an etcd lock: the command's keeper process
//! (keeper.rs) and the library's thread (`me_only::etcd`).

use std::time::{Duration, Instant};

use super::gateway::Gateway;
use super::is_marked;

/// How often a lease is renewed: three times per TTL, as etcd's own clients
/// do, so that two renewals may fail before it runs out.
pub fn renewal_period(ttl: i64) -> Duration {
    Duration::from_millis((ttl.max(1) as u64) * 1000 / 3)
}

/// A TTL in seconds (as the command line and etcd give it) as a Duration:
/// at least a second.
pub fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(1) as u64)
}

/// When a lease renewed (or granted) by a request sent at `renewed` is
/// given up: its TTL, less the fencing margin.
pub fn lost_at(renewed: Instant, ttl: Duration) -> Instant {
    renewed + ttl - fencing_margin(ttl)
}

/// How long before the lease can run out in etcd its holder gives it up
/// (the keeper fences COMMAND off, the library says it is lost): etcd
/// counts the TTL from when it got the last renewal, later than it was
/// sent, so the holder has at least this long to stop before another can
/// start.
pub fn fencing_margin(ttl: Duration) -> Duration {
    (ttl / 4).min(Duration::from_secs(1))
}

/// The lease of a lock held, and the renewals that keep it.
pub struct Renewer {
    /// The lock, for log lines and reasons.
    lock: String,
    lease: i64,
    /// The lock's key, on the lease: checked at each renewal.
    key: Vec<u8>,
    /// The TTL as given, in seconds, for messages.
    ttl_seconds: i64,
    ttl: Duration,
    period: Duration,
    /// When the request that last granted or renewed the lease was sent.
    renewed: Instant,
    next_renewal: Instant,
    retry: Retry,
}

/// What a turn of the renewer came to.
pub enum Step {
    /// Nothing to do yet, or a renewal that got no answer is to be tried
    /// again: wake at `Renewer::wake`.
    Later,
    /// Renewed: good until `Renewer::lost_at`.
    Renewed,
    /// Lost, for this reason: the holder is to stop.
    Lost(String),
}

impl Renewer {
    /// The renewer of `lease`, which holds `lock` by `key`, granted or last
    /// renewed by the request sent at `renewed`.
    pub fn new(lock: &str, lease: i64, key: Vec<u8>, ttl: i64, renewed: Instant) -> Renewer {
        let period = renewal_period(ttl);
        Renewer {
            lock: lock.to_owned(),
            lease,
            key,
            ttl_seconds: ttl,
            ttl: ttl_duration(ttl),
            period,
            renewed,
            next_renewal: renewed + period,
            retry: Retry::default(),
        }
    }

    /// The lock whose lease this is.
    pub fn lock(&self) -> &str {
        &self.lock
    }

    /// When the lease is given up unless renewed before.
    pub fn lost_at(&self) -> Instant {
        lost_at(self.renewed, self.ttl)
    }

    /// When the lease may run out in etcd, unless renewed before.
    pub fn expires(&self) -> Instant {
        self.renewed + self.ttl
    }

    /// When `step` has something to do: the next renewal, or the moment
    /// the lease is given up.
    pub fn wake(&self) -> Instant {
        self.next_renewal.min(self.lost_at())
    }

    /// Renews the lease if it is time (`now`), or says it is lost. A
    /// renewal that gets no answer is tried again soon, on the next
    /// endpoint (a new leader may answer well before the deadline).
    pub fn step(&mut self, gateway: &Gateway, now: Instant) -> Step {
        let lost_at = self.lost_at();
        if now >= lost_at {
            return Step::Lost(format!(
                "lease lost: etcd unreachable for {:.1} s (TTL {} s)",
                self.renewed.elapsed().as_secs_f64(),
                self.ttl_seconds
            ));
        }
        if now < self.next_renewal {
            return Step::Later;
        }
        // The lease runs from when etcd got the renewal, which is after
        // the request that got it was sent: counting from then errs on the
        // side of giving it up early.
        let retrying = self.retry.last.is_some();
        match self.renew(gateway, call_deadline(now, self.period, lost_at, retrying)) {
            Renewal::Renewed(sent) => {
                self.renewed = sent;
                self.next_renewal = sent + self.period;
                self.retry = Retry::default();
                Step::Renewed
            }
            Renewal::Lost(reason) => Step::Lost(reason.to_owned()),
            Renewal::NoAnswer => {
                gateway.prefer_next();
                let left = lost_at.saturating_duration_since(Instant::now());
                self.next_renewal = Instant::now() + self.retry.next_wait(self.period, left);
                Step::Later
            }
        }
    }

    /// Renews the lease and checks that the key is still ours, both by
    /// `deadline`.
    fn renew(&self, gateway: &Gateway, deadline: Instant) -> Renewal {
        let sent = match gateway.keep_alive(self.lease, deadline) {
            Ok(0) => return Renewal::Lost("lease lost: it expired or was revoked"),
            Ok(_) => gateway.last_sent(),
            Err(err) => {
                log::debug!("{}: renewing the lease: {err}", self.lock);
                return Renewal::NoAnswer;
            }
        };
        match gateway.get(&self.key, deadline) {
            Ok(Some(kv)) if kv.lease == self.lease && is_marked(&kv.value) => {
                Renewal::Lost("replaced (another instance ran me-only --replace)")
            }
            Ok(Some(kv)) if kv.lease == self.lease => {
                log::trace!("{}: lease renewed, key still ours", self.lock);
                Renewal::Renewed(sent)
            }
            Ok(_) => Renewal::Lost("lock key deleted"),
            // The lease was renewed: the key is checked again next time.
            Err(_) => Renewal::Renewed(sent),
        }
    }
}

/// By when one renewal must be answered: within a renewal period and the
/// time left before `lost_at`; and when `retrying` after one that got no
/// answer, within half that time. A member without a leader holds a
/// request until it sees one, and then some: etcd 3.4's waitLeader looks
/// again only after a whole election timeout, so a request sent during an
/// election may be answered well after a new leader is there. Given up
/// half-way, it leaves time for a fresh request, which a member that knows
/// the new leader forwards at once. The routine renewal keeps the whole
/// time: a slow link's round trips fit in it.
fn call_deadline(now: Instant, period: Duration, lost_at: Instant, retrying: bool) -> Instant {
    let left = lost_at.saturating_duration_since(now);
    now + period.min(if retrying { left / 2 } else { left })
}

/// How soon a renewal that got no answer is tried again: at first, and at
/// most (never later than the holder's deadline, which bounds every wait).
const FIRST_RETRY: Duration = Duration::from_millis(50);
const RETRY: Duration = Duration::from_secs(1);

/// The waits between renewals that got no answer: short, for a leader
/// election is over in a second or two and the deadline may come sooner
/// than a fixed RETRY would try again; doubled each time, so that a member
/// that refuses at once is not asked in a busy loop; and at most a quarter
/// of the time `left` before the deadline, so that a new leader elected
/// shortly before it is still asked in time.
#[derive(Default)]
struct Retry {
    last: Option<Duration>,
}

impl Retry {
    fn next_wait(&mut self, period: Duration, left: Duration) -> Duration {
        let wait = self
            .last
            .map_or(FIRST_RETRY, |last| last * 2)
            .min(RETRY)
            .min(period)
            .min((left / 4).max(FIRST_RETRY));
        self.last = Some(wait);
        wait
    }
}

enum Renewal {
    /// Renewed by the request sent then.
    Renewed(Instant),
    Lost(&'static str),
    NoAnswer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_a_second_and_a_quarter_of_what_is_left() {
        let period = Duration::from_secs(10);
        let plenty = Duration::from_secs(60);
        let mut retry = Retry::default();
        let waits: Vec<u128> = (0..7)
            .map(|_| retry.next_wait(period, plenty).as_millis())
            .collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
        // 1.2 s before the deadline: 300 ms, not the second it had come to.
        assert_eq!(
            retry.next_wait(period, Duration::from_millis(1200)),
            Duration::from_millis(300)
        );
        // Never below the first wait, however close the deadline.
        let mut retry = Retry::default();
        assert_eq!(retry.next_wait(period, Duration::ZERO), FIRST_RETRY);
    }

    #[test]
    fn a_retry_leaves_half_the_time_left_for_another() {
        let now = Instant::now();
        let period = Duration::from_millis(1333);
        let soon = |ms| now + Duration::from_millis(ms);
        // Plenty of time: one period, retrying or not.
        assert_eq!(call_deadline(now, period, soon(9000), false), now + period);
        assert_eq!(call_deadline(now, period, soon(9000), true), now + period);
        // The routine renewal 0.8 s before the deadline may take all of it.
        assert_eq!(call_deadline(now, period, soon(800), false), soon(800));
        // A retry then gives up after 0.4 s, so that a request sent once a
        // new leader is elected still fits.
        assert_eq!(call_deadline(now, period, soon(800), true), soon(400));
        // Past the deadline: no time at all.
        assert_eq!(call_deadline(now, period, now, true), now);
    }
}
