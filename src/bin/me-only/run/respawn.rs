//! `--respawn`, `--until-success`, `--until-failure`: me-only takes the
//! lock once and runs COMMAND as its child (as --fork does) again and
//! again, holding the lock throughout, so a second loop started by cron
//! finds it held. Between runs, a back-off that doubles from MIN to MAX
//! and starts over after a run that lasted longer than MAX; one line on
//! stderr per restart, for the journal or cron's mail.
//!
//! Run k+1 starts only once run k and all it left running have exited:
//! they are the same instance, but a user expects the next run not to
//! overlap the last one's leftovers (a daemon it forgot to stop would
//! meet its successor). TERM, INT and HUP end the loop: passed on to a
//! run, which me-only then exits as; during a back-off, me-only dies of
//! the signal, as a shell's `while` loop would, and runs nothing more.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::cli::{MaxTime, Respawn, Until};
use crate::error::{Error, printable};
use crate::run::launch::Held;
use crate::run::supervise::{Ended, Supervisor, die_of};

/// Runs COMMAND until the loop's end; the last run's exit code. A byte
/// is written to `started`, if given, once the first run has started
/// (--detach's parent waits for it).
pub fn run(
    held: Held,
    command: &[OsString],
    max_time: Option<MaxTime>,
    respawn: Respawn,
    started: Option<OwnedFd>,
) -> Result<u8, Error> {
    let lock = held.name().to_owned();
    let mut supervisor = Supervisor::start(held, command, max_time)?;
    supervisor.tell_when_started(started);
    let mut delay = respawn.delay.min;
    let mut runs: u32 = 0;
    loop {
        let started = Instant::now();
        let ended = supervisor.run_once()?;
        runs = runs.saturating_add(1);
        if ended.stop.is_some() || is_last(&respawn, &ended, runs) {
            return Ok(supervisor.finish(&ended));
        }
        if started.elapsed() > respawn.delay.max {
            delay = respawn.delay.min;
        }
        // No run on a lock no longer kept (an etcd keeper gone).
        supervisor.ensure_lock_kept()?;
        say_restart(&lock, &command[0], &ended, delay);
        if let Some(signal) = supervisor.back_off(delay)? {
            drop(supervisor);
            die_of(signal as i32);
            return Ok(128 + signal as u8);
        }
        delay = delay.saturating_mul(2).min(respawn.delay.max);
    }
}

/// Whether the loop ends after this run: --tries reached, or the outcome
/// that --until-success or --until-failure waits for.
fn is_last(respawn: &Respawn, ended: &Ended, runs: u32) -> bool {
    let succeeded = ended.exit_code() == 0;
    respawn.tries.is_some_and(|tries| runs >= tries)
        || match respawn.until {
            Until::Stopped => false,
            Until::Success => succeeded,
            Until::Failure => !succeeded,
        }
}

/// `me-only: LOCK: COMMAND exited with status N; running it again in D s`,
/// in one write, so that lines of instances sharing a log never interleave.
fn say_restart(lock: &str, program: &OsString, ended: &Ended, delay: Duration) {
    let line = format!(
        "me-only: {}: {} {}; running it again in {} s\n",
        printable(lock),
        printable(&program.to_string_lossy()),
        how_it_ended(ended),
        delay.as_secs_f64()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn how_it_ended(ended: &Ended) -> String {
    if ended.capped {
        return "was stopped after --max-time".to_owned();
    }
    match (ended.status.code(), ended.status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        (None, None) => format!("ended ({})", ended.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RespawnDelay;
    use std::process::ExitStatus;

    fn ended(raw: i32, capped: bool) -> Ended {
        Ended {
            status: ExitStatus::from_raw(raw),
            capped,
            stop: None,
        }
    }

    #[test]
    fn each_loop_ends_on_its_outcome_or_after_its_tries() {
        let respawn = |until, tries| Respawn {
            until,
            delay: RespawnDelay {
                min: Duration::ZERO,
                max: Duration::ZERO,
            },
            tries,
        };
        let success = ended(0, false);
        let failure = ended(3 << 8, false);
        let capped = ended(0, true);
        assert!(!is_last(&respawn(Until::Stopped, None), &failure, 1000));
        assert!(!is_last(&respawn(Until::Stopped, None), &success, 1000));
        assert!(is_last(&respawn(Until::Stopped, Some(2)), &success, 2));
        assert!(is_last(&respawn(Until::Success, None), &success, 1));
        assert!(!is_last(&respawn(Until::Success, None), &capped, 1));
        assert!(is_last(&respawn(Until::Failure, None), &capped, 1));
        assert!(!is_last(&respawn(Until::Failure, Some(3)), &success, 2));
    }

    #[test]
    fn how_a_run_ended_is_told_in_words() {
        assert_eq!(how_it_ended(&ended(3 << 8, false)), "exited with status 3");
        assert_eq!(how_it_ended(&ended(9, false)), "was killed by SIGKILL");
        assert_eq!(
            how_it_ended(&ended(0, true)),
            "was stopped after --max-time"
        );
    }
}
