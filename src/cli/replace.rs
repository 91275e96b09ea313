//! --replace, --replace-older and --kill-after: stopping the instance that
//! holds the lock (and, with --etcd, how long a fenced-off COMMAND has).

use std::time::Duration;

use super::parse_seconds;

/// --kill-after when not given. Applied here rather than by clap: every
/// default clap fills in costs every launch.
const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

// Like the etcd options, defined only where the words ask for them
// (`full_command_needed`). Plain comments: a doc comment here would become
// the whole program's description in --help.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplaceOptions {
    /// Stop the instance that holds the lock (SIGTERM, SIGKILL after
    /// --kill-after; every process that holds it in turn), then run COMMAND
    /// once the lock is free. Kernel locks only, not --etcd yet
    #[arg(long, conflicts_with = "test")]
    pub replace: bool,

    /// Like --replace, but only a holder started at least SECS ago; a younger
    /// one is a conflict as without --replace
    #[arg(
        long,
        value_name = "SECS",
        value_parser = parse_seconds,
        allow_negative_numbers = true,
        conflicts_with_all = ["test", "replace"]
    )]
    pub replace_older: Option<Duration>,

    /// How long a process being stopped (--replace's holder; with --etcd, a
    /// fenced-off COMMAND) has between SIGTERM and SIGKILL [default: 10]
    #[arg(
        long,
        value_name = "SECS",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    pub kill_after: Option<Duration>,
}

/// What --replace or --replace-older asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replace {
    /// Only a holder at least this old (--replace-older).
    pub older_than: Option<Duration>,
    pub kill_after: Duration,
}

impl ReplaceOptions {
    pub fn kill_after(&self) -> Duration {
        self.kill_after.unwrap_or(DEFAULT_KILL_AFTER)
    }

    /// What to replace, if the command line asks for it.
    pub fn replace(&self) -> Option<Replace> {
        (self.replace || self.replace_older.is_some()).then(|| Replace {
            older_than: self.replace_older,
            kill_after: self.kill_after(),
        })
    }
}
