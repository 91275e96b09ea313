//! The options a launch seldom uses: --replace, --replace-older,
//! --signal and --kill-after (how a process is stopped), --max-time,
//! --auto, --slots, --list, --shared. Like the
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
    #[arg(long, help_heading = heading::LOCK)]
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
