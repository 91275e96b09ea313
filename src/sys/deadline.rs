//! When a wait of so many seconds ends. Every duration option (--timeout,
//! --max-time, --kill-after) counts from now through `after`: the
//! options take any number of seconds a Duration holds (585 billion
//! years), the clock counts far less far, and `Instant + Duration` panics
//! past it. Past it is never: a wait with no end, as for no limit at all.

use std::time::{Duration, Instant};

/// `wait` from now; None (never) when the clock cannot count that far.
pub fn after(wait: Duration) -> Option<Instant> {
    Instant::now().checked_add(wait)
}

/// Whether `deadline` (None: never) has come.
pub fn has_come(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_past_what_the_clock_counts_to_never_ends() {
        assert_eq!(after(Duration::MAX), None);
        assert_eq!(after(Duration::from_secs(10_000_000_000_000_000_000)), None);
        assert!(!has_come(None));
    }

    #[test]
    fn a_wait_of_nothing_has_come_at_once() {
        assert!(has_come(after(Duration::ZERO)));
        assert!(!has_come(after(Duration::from_secs(3600))));
    }
}
