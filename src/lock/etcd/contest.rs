//! `--slots --wait` with `--etcd`: a waiter queues on every slot at once (a
//! thread for each), and must end up holding one. Each lease that may carry
//! a key is entered here before its key is put; the first place to come
//! first in its line claims the win, and revokes every other lease entered,
//! so that no place the waiter no longer needs stays in a line to block
//! that slot until its lease runs out. A lease entered after the win is
//! given back by its own thread before it carries a key. Once the contest
//! is over, a call of a losing thread that fails (its lease revoked under
//! it) is the loss it is, not an error (mod.rs `place_error`); and a wait
//! that ends without a win (time ran out, a waiter failed) ends the
//! contest too, revoking the places in line, whose threads then see their
//! own keys go and end (queue.rs watches them).

use std::sync::{Arc, Mutex};

use super::Gateway;
use super::gateway;

/// The leases of one waiter's places, and whether the contest is over.
#[derive(Debug, Default)]
pub struct Contest {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A place has won, or the wait has ended.
    over: bool,
    leases: Vec<i64>,
}

impl Contest {
    pub fn new() -> Arc<Contest> {
        Arc::new(Contest::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A thread that panicked holding it left nothing half-done here.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Enters a lease before any key is put on it; false once the contest
    /// is over (the caller gives the lease back and stops).
    pub fn enter(&self, lease: i64) -> bool {
        let mut state = self.state();
        if !state.over {
            state.leases.push(lease);
        }
        !state.over
    }

    /// Whether a place has won or the wait has ended: a place still
    /// waiting has lost.
    pub fn is_over(&self) -> bool {
        self.state().over
    }

    /// A lease given back: nothing to revoke.
    pub fn leave(&self, lease: i64) {
        self.state().leases.retain(|&entered| entered != lease);
    }

    /// The place on `lease` holds its slot: it wins if none has yet, and
    /// every other lease entered is revoked. False if another won first (the
    /// caller's lease is among those it revokes, or will be given back).
    pub fn claim(&self, lease: i64, gateway: &Gateway) -> bool {
        let others = {
            let mut state = self.state();
            if state.over {
                return false;
            }
            state.over = true;
            state.leases.retain(|&entered| entered != lease);
            std::mem::take(&mut state.leases)
        };
        revoke(others, gateway);
        true
    }

    /// Ends the contest, won or not: no place may win from now on, and
    /// every lease still entered is revoked, so that the threads of the
    /// places in line end at once rather than at their next renewal.
    pub fn end(&self, gateway: &Gateway) {
        let entered = {
            let mut state = self.state();
            state.over = true;
            std::mem::take(&mut state.leases)
        };
        revoke(entered, gateway);
    }
}

/// Revokes the leases of places no longer needed; one already gone (its
/// own thread gave it back) is no matter.
fn revoke(leases: Vec<i64>, gateway: &Gateway) {
    for lease in leases {
        if let Err(err) = gateway.revoke(lease, gateway::soon()) {
            log::debug!("revoking the place of lease {lease:x}: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_claim_wins_and_later_entries_are_refused() {
        let contest = Contest::new();
        assert!(contest.enter(1));
        assert!(contest.enter(2));
        contest.leave(2);
        assert_eq!(contest.state().leases, [1]);
        // No endpoint answers: the revocations fail quietly.
        let gateway = Gateway::parse("http://127.0.0.1:1", false).unwrap();
        assert!(contest.enter(3));
        assert!(contest.claim(3, &gateway));
        assert!(contest.state().leases.is_empty(), "the others revoked");
        assert!(!contest.claim(1, &gateway));
        assert!(!contest.enter(4));
        assert!(contest.state().leases.is_empty());
    }

    #[test]
    fn an_ended_contest_lets_no_place_win_or_enter() {
        let contest = Contest::new();
        assert!(contest.enter(1));
        assert!(!contest.is_over());
        let gateway = Gateway::parse("http://127.0.0.1:1", false).unwrap();
        contest.end(&gateway);
        assert!(contest.is_over());
        assert!(contest.state().leases.is_empty(), "the places revoked");
        assert!(!contest.claim(1, &gateway));
        assert!(!contest.enter(2));
    }
}
