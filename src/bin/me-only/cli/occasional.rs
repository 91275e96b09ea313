//! The options a launch seldom uses: --replace, --replace-older,
//! --signal and --kill-after (how a process is stopped), --max-time,
//! --respawn and its kin, --auto, --slots, --list, --shared. Like the
//! etcd options, they are defined only where the command line names one
//! (`full_command_needed`): each option clap knows of costs every launch.

use std::ffi::OsString;
use std::time::Duration;

use nix::libc;
use nix::sys::signal::Signal;

use super::{heading, parse_seconds};

/// --kill-after when not given. Applied here rather than by clap: every
/// default clap fills in costs every launch.
const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

// Plain comments: a doc comment here would become the whole program's
// description in --help.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OccasionalOptions {
    /// Stop the instance that holds the lock, then run
    ///
    /// All of it is stopped (SIGTERM or --signal, SIGKILL after
    /// --kill-after: every process that holds it and all they started),
    /// then COMMAND runs once the lock is free. With --etcd, its keeper is
    /// asked to stop it, wherever it runs
    #[arg(long, conflicts_with_all = ["test", "slots"], help_heading = heading::STOPPING)]
    pub replace: bool,

    /// Like --replace, but only a holder SECS old or more
    ///
    /// Only a holder started at least SECS ago is stopped; a younger one is
    /// a conflict as without --replace
    #[arg(
        long,
        value_name = "SECS",
        value_parser = parse_seconds,
        allow_negative_numbers = true,
        conflicts_with_all = ["test", "replace", "slots"],
        help_heading = heading::STOPPING
    )]
    pub replace_older: Option<Duration>,

    /// Seconds from the first signal to SIGKILL [default: 10]
    ///
    /// How long a process being stopped (--replace's holder, a run past
    /// --max-time, with --etcd a fenced-off COMMAND) has between its first
    /// signal and SIGKILL
    #[arg(
        long,
        value_name = "SECS",
        value_parser = parse_seconds,
        allow_negative_numbers = true,
        hide_short_help = true,
        help_heading = heading::STOPPING
    )]
    pub kill_after: Option<Duration>,

    /// The first signal to what is stopped [default: TERM]
    ///
    /// What --replace and --max-time send first (SIGKILL follows after
    /// --kill-after), as timeout(1)'s: a name, with or without SIG, or a
    /// number. With --etcd --replace, the holder's own keeper stops it,
    /// with TERM
    #[arg(
        long,
        value_name = "SIG",
        value_parser = parse_signal,
        hide_short_help = true,
        help_heading = heading::STOPPING
    )]
    pub signal: Option<libc::c_int>,

    /// Stop COMMAND once it has held the lock SECS: exit 124
    ///
    /// COMMAND and every process it started are stopped (SIGTERM or
    /// --signal, SIGKILL after --kill-after), and me-only exits 124 (or
    /// with COMMAND's own status, if it had ended in time and only what it
    /// left running was stopped); 0 is no limit, as in timeout(1). Implies
    /// --fork: me-only stays to keep the time and tell a capped run by its
    /// exit code
    #[arg(
        long,
        value_name = "SECS",
        value_parser = parse_seconds,
        allow_negative_numbers = true,
        conflicts_with_all = ["test", "detach"],
        help_heading = heading::RUNNING
    )]
    pub max_time: Option<Duration>,

    /// Run COMMAND again each time it exits, keeping the lock
    ///
    /// me-only takes the lock once and runs COMMAND as its child (as with
    /// --fork), again whenever it exits, after a back-off (--respawn-delay)
    /// and once all it left running has exited too, with a line on stderr
    /// each time. TERM, INT and HUP are passed to COMMAND and end the loop
    /// (during a back-off, me-only dies of them, running nothing more).
    /// --until-success and --until-failure end it on a run's outcome,
    /// --tries after so many runs
    #[arg(
        long,
        group = "respawning",
        conflicts_with_all = ["test", "list"],
        help_heading = heading::RUNNING
    )]
    pub respawn: bool,

    /// As --respawn, until a run exits 0; exit 0
    ///
    /// A run stopped by --max-time (124) is a failure
    #[arg(
        long,
        group = "respawning",
        conflicts_with_all = ["test", "list"],
        hide_short_help = true,
        help_heading = heading::RUNNING
    )]
    pub until_success: bool,

    /// As --respawn, until a run fails; exit with its status
    ///
    /// A run fails when it exits non-zero or is killed by a signal
    #[arg(
        long,
        group = "respawning",
        conflicts_with_all = ["test", "list"],
        hide_short_help = true,
        help_heading = heading::RUNNING
    )]
    pub until_failure: bool,

    /// Back-off between runs: MIN doubling up to MAX [default: 1,60]
    ///
    /// Seconds, fractions allowed, at most a day; MAX is 60 (or MIN, if
    /// greater) when not given. The back-off starts over at MIN after a
    /// run that lasted longer than MAX
    #[arg(
        long,
        value_name = "MIN[,MAX]",
        value_parser = parse_respawn_delay,
        allow_negative_numbers = true,
        requires = "respawning",
        hide_short_help = true,
        help_heading = heading::RUNNING
    )]
    pub respawn_delay: Option<RespawnDelay>,

    /// Run COMMAND N times at most (with --respawn and the like)
    ///
    /// After N runs, me-only exits with the last run's status
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_tries,
        allow_negative_numbers = true,
        requires = "respawning",
        hide_short_help = true,
        help_heading = heading::RUNNING
    )]
    pub tries: Option<u32>,

    /// No LOCK: the lock is named from COMMAND and its arguments
    ///
    /// The first word is COMMAND, and the lock is named from the command
    /// line: me-only/auto/UID/HASH, HASH from COMMAND's real path and its
    /// arguments (run-one's way). An abstract socket lock, or with --etcd a
    /// name in etcd
    #[arg(long, conflicts_with_all = ["tcp", "flock"], help_heading = heading::LOCK)]
    pub auto: bool,

    /// List the locks held and their holders (--json)
    ///
    /// Run nothing: list the me-only locks held on this host (abstract, tcp,
    /// flock; only those with --tcp or --flock; with --etcd, those in etcd)
    /// whose names start with PREFIX: lock, backend, pid, uid, host, age,
    /// command. Another user's are seen by root only
    #[arg(
        long,
        value_name = "PREFIX",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with_all = ["test", "wait", "timeout", "fork", "detach", "replace",
            "replace_older", "max_time", "auto", "slots"],
        help_heading = heading::REPORTS
    )]
    pub list: Option<OsString>,

    /// With --list: print JSON instead of a table
    ///
    /// An array of objects (lock, backend, pid, uid, host, age_seconds,
    /// command: the argument list)
    #[arg(long, requires = "list", hide_short_help = true, help_heading = heading::REPORTS)]
    pub json: bool,

    /// Let up to N instances run at once
    ///
    /// Take the first free of N locks named from LOCK (LOCK.1 ... LOCK.N;
    /// with --tcp, ports PORT to PORT+N-1); COMMAND learns which in
    /// ME_ONLY_SLOT. Held when all N are; --wait waits for the first to come
    /// free
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_slots,
        allow_negative_numbers = true,
        help_heading = heading::LOCK
    )]
    pub slots: Option<u32>,

    /// With --flock: take a shared lock, as flock -s does
    ///
    /// Any number of shared holders at once (me-only --shared, flock -s),
    /// none while an exclusive holder (me-only --flock, flock) holds it,
    /// and no exclusive holder while one of them does. COMMAND gets
    /// ME_ONLY_SHARED=1. With --test: exit 0 if a shared lock could be taken
    /// now (--test without --shared names every shared holder, one pid a
    /// line). Not with --replace, --slots or --list
    // A variant of --flock: -h, one screen, leaves it to --help.
    #[arg(long, help_heading = heading::LOCK, hide_short_help = true)]
    pub shared: bool,
}

/// The most slots: each is a lock of its own, tried in turn and, with
/// --wait, watched by a thread of its own.
const MAX_SLOTS: u32 = 1024;

fn parse_slots(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(slots @ 1..=MAX_SLOTS) => Ok(slots),
        _ => Err(format!("'{text}' is not a number of slots (1-{MAX_SLOTS})")),
    }
}

/// The longest back-off --respawn-delay takes: a longer one is surely a
/// mistake (a number of milliseconds taken for seconds), and the doubling
/// stays far from what the clock can count to.
const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The back-off without --respawn-delay: systemd's and runit's second, up
/// to a minute.
const DEFAULT_RESPAWN_DELAY: RespawnDelay = RespawnDelay {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60),
};

/// The back-off between runs of a loop: `min` doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespawnDelay {
    pub min: Duration,
    pub max: Duration,
}

/// `MIN[,MAX]`, in seconds.
fn parse_respawn_delay(text: &str) -> Result<RespawnDelay, String> {
    let bounded = |part: &str| {
        parse_seconds(part).and_then(|delay| {
            if delay > MAX_RESPAWN_DELAY {
                Err(format!("'{part}' is longer than a day"))
            } else {
                Ok(delay)
            }
        })
    };
    let (min, max) = match text.split_once(',') {
        Some((min, max)) => (bounded(min)?, bounded(max)?),
        None => {
            let min = bounded(text)?;
            (min, min.max(DEFAULT_RESPAWN_DELAY.max))
        }
    };
    if min > max {
        return Err(format!("'{text}': MIN is greater than MAX"));
    }
    Ok(RespawnDelay { min, max })
}

fn parse_tries(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(tries @ 1..) => Ok(tries),
        _ => Err(format!("'{text}' is not a number of runs (1 or more)")),
    }
}

/// A signal, as timeout(1) and kill(1) take it: a name, with or without
/// SIG, in any case, or a number (real-time signals included).
fn parse_signal(text: &str) -> Result<libc::c_int, String> {
    let refuse = || format!("'{text}' is not a signal (a name such as TERM or INT, or a number)");
    if let Ok(number) = text.parse::<libc::c_int>() {
        return Some(number)
            .filter(|number| (1..=libc::SIGRTMAX()).contains(number))
            .ok_or_else(refuse);
    }
    let name = text.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<Signal>()
        .map(|signal| signal as libc::c_int)
        .map_err(|_| refuse())
}

/// What --replace or --replace-older asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replace {
    /// Only a holder at least this old (--replace-older).
    pub older_than: Option<Duration>,
    /// The first signal a holder gets (--signal).
    pub signal: libc::c_int,
    pub kill_after: Duration,
}

/// What --max-time asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxTime {
    /// How long COMMAND may hold the lock; zero is no limit.
    pub limit: Duration,
    /// The first signal a run past its time gets (--signal).
    pub signal: libc::c_int,
    pub kill_after: Duration,
}

/// When COMMAND is run again: --respawn, --until-success, --until-failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// --respawn: only a signal to me-only ends the loop.
    Stopped,
    Success,
    Failure,
}

/// What --respawn and its kin ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Respawn {
    pub until: Until,
    pub delay: RespawnDelay,
    /// --tries: the most runs.
    pub tries: Option<u32>,
}

impl OccasionalOptions {
    pub fn kill_after(&self) -> Duration {
        self.kill_after.unwrap_or(DEFAULT_KILL_AFTER)
    }

    /// --signal, or TERM as timeout(1) has it (applied here, not by clap,
    /// as --kill-after's default is).
    fn signal(&self) -> libc::c_int {
        self.signal.unwrap_or(libc::SIGTERM)
    }

    /// When and how to stop COMMAND, if the command line caps its time.
    pub fn max_time(&self) -> Option<MaxTime> {
        self.max_time.map(|limit| MaxTime {
            limit,
            signal: self.signal(),
            kill_after: self.kill_after(),
        })
    }

    /// Whether and until when to run COMMAND again.
    pub fn respawn(&self) -> Option<Respawn> {
        let until = if self.respawn {
            Until::Stopped
        } else if self.until_success {
            Until::Success
        } else if self.until_failure {
            Until::Failure
        } else {
            return None;
        };
        Some(Respawn {
            until,
            delay: self.respawn_delay.unwrap_or(DEFAULT_RESPAWN_DELAY),
            tries: self.tries,
        })
    }

    /// Why --shared cannot go with the other options given, if it cannot.
    pub fn refusal_of_shared(&self) -> Option<&'static str> {
        if self.slots.is_some() {
            Some(
                "--shared cannot be used with --slots: a shared lock has no limit to count, \
                 and --slots is an exclusive lock's 'at most N'",
            )
        } else if self.replace {
            Some(
                "--shared cannot be used with --replace: a shared holder has no one instance \
                 to replace",
            )
        } else if self.replace_older.is_some() {
            Some(
                "--shared cannot be used with --replace-older: a shared holder has no one \
                 instance to replace",
            )
        } else if self.list.is_some() {
            Some("--shared cannot be used with --list: --list shows every holder's mode")
        } else {
            None
        }
    }

    /// What to replace, if the command line asks for it.
    pub fn replace(&self) -> Option<Replace> {
        (self.replace || self.replace_older.is_some()).then(|| Replace {
            older_than: self.replace_older,
            signal: self.signal(),
            kill_after: self.kill_after(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_a_name_with_or_without_sig_in_any_case_or_a_number() {
        for (text, signal) in [
            ("TERM", libc::SIGTERM),
            ("SIGINT", libc::SIGINT),
            ("sigint", libc::SIGINT),
            ("Hup", libc::SIGHUP),
            ("kill", libc::SIGKILL),
            ("10", libc::SIGUSR1),
            ("64", libc::SIGRTMAX()),
        ] {
            assert_eq!(parse_signal(text), Ok(signal), "{text}");
        }
        for bad in [
            "",
            "SIG",
            "FOO",
            "SIGSIGTERM",
            "0",
            "-1",
            "65",
            "2.0",
            " TERM",
        ] {
            let refused = parse_signal(bad).unwrap_err();
            assert!(
                refused.starts_with(&format!("'{bad}' is not a signal")),
                "{refused}"
            );
        }
    }
}
