//! How long a poll(2) may sleep, for a wait that has a deadline.

use std::time::{Duration, Instant};

use nix::poll::PollTimeout;

/// `wait` as a poll timeout, rounded up to whole milliseconds: rounded
/// down, the last millisecond before a deadline would be spun through,
/// each poll ending a moment early only to come round again.
pub fn whole_milliseconds(wait: Duration) -> PollTimeout {
    PollTimeout::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}

/// The time left until `deadline` (None: never, no timeout), as a poll
/// timeout (see above).
pub fn until(deadline: Option<Instant>) -> PollTimeout {
    deadline.map_or(PollTimeout::NONE, |deadline| {
        whole_milliseconds(deadline.saturating_duration_since(Instant::now()))
    })
}
