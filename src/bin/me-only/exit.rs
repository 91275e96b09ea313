//! The one place that turns what went wrong into me-only's exit code and
//! its one line on stderr (SPEC section 3: the original tool's codes).

use me_only::error::{Error, printable};

/// Exit code for COMMAND not found, not executable, or exec failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for invalid usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a lock that could not be set up.
pub const EXIT_LOCK_ERROR: u8 = 3;
/// Default exit code for a lock held by another instance.
pub const EXIT_CONFLICT: u8 = 4;
/// Exit code of a run stopped by --max-time: timeout(1)'s.
pub const EXIT_MAX_TIME: u8 = 124;

/// How a conflict is reported, as the command line asked.
#[derive(Debug, Clone, Copy)]
pub struct ConflictPolicy {
    pub exit_code: u8,
    pub quiet: bool,
}

impl Default for ConflictPolicy {
    fn default() -> Self {
        ConflictPolicy {
            exit_code: EXIT_CONFLICT,
            quiet: false,
        }
    }
}

pub fn exit_code(err: &Error, conflict: ConflictPolicy) -> u8 {
    match err {
        Error::Usage(_) => EXIT_USAGE,
        Error::Busy { .. } | Error::SlotsBusy { .. } | Error::NotReplaced { .. } => {
            conflict.exit_code
        }
        Error::Lock { .. } | Error::NotALockFile { .. } => EXIT_LOCK_ERROR,
        #[cfg(feature = "etcd")]
        Error::Etcd { .. } => EXIT_LOCK_ERROR,
        Error::Exec { .. } => EXIT_FAILURE,
    }
}

/// The line on stderr: `me-only: <what went wrong>`, one line whatever
/// the names in it hold.
pub fn line(err: &Error) -> String {
    format!("me-only: {}\n", printable(&err.to_string()))
}

/// Whether the line on stderr is wanted; `--quiet` silences conflicts only.
pub fn is_reported(err: &Error, conflict: ConflictPolicy) -> bool {
    !(conflict.quiet && matches!(err, Error::Busy { .. } | Error::SlotsBusy { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use me_only::holder::Holder;

    #[test]
    fn conflict_code_follows_the_policy_and_nothing_else_does() {
        let policy = ConflictPolicy {
            exit_code: 75,
            quiet: true,
        };
        let busy = Error::Busy {
            lock: "/tmp/a".into(),
            holder: Holder::unknown(),
            waited: None,
        };
        let usage = Error::Usage("bad".into());
        assert_eq!(exit_code(&busy, policy), 75);
        assert_eq!(exit_code(&usage, policy), EXIT_USAGE);
        assert!(!is_reported(&busy, policy));
        assert!(is_reported(&usage, policy));
    }

    #[test]
    fn the_line_is_one_line_whatever_the_names_hold() {
        let odd = Error::Busy {
            lock: "a\nb\x1b[2J".into(),
            holder: Holder::unknown(),
            waited: None,
        };
        assert_eq!(
            line(&odd),
            "me-only: a\\nb\\u{1b}[2J: already held by another process\n"
        );
    }
}
