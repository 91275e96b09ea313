//! Everything that can go wrong, each with what it concerns (the lock, the
//! command, the errno). Exit codes, -E, -q and the line on stderr are the
//! command's business (its exit.rs), not the locks'.

use std::fmt;
use std::io;
use std::time::Duration;

use nix::errno::Errno;

use crate::holder::Holder;

#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the message says how.
    Usage(String),
    /// Another process holds the lock (still, after `waited`).
    Busy {
        lock: String,
        holder: Holder,
        waited: Option<Duration>,
    },
    /// Every one of LOCK's --slots is held (still, after `waited`), by
    /// `holders` where they could be named: a few of the `count`, so that
    /// the line stays short.
    SlotsBusy {
        lock: String,
        count: usize,
        holders: Vec<Holder>,
        waited: Option<Duration>,
    },
    /// --replace found a holder it cannot stop: `why` says why (not
    /// permitted, or no pid to signal).
    NotReplaced {
        lock: String,
        holder: Holder,
        why: String,
    },
    /// The lock could not be set up: a system call other than the contended
    /// bind failed.
    Lock {
        lock: String,
        action: &'static str,
        errno: Errno,
    },
    /// LOCK names something other than a regular file where a lock file
    /// was expected (`kind` says what, e.g. "a symbolic link").
    NotALockFile { lock: String, kind: &'static str },
    /// etcd did not answer, or refused: `what` says which, naming the
    /// endpoint.
    #[cfg(feature = "etcd")]
    Etcd { lock: String, what: String },
    /// The lock was taken but COMMAND could not be run.
    Exec {
        lock: String,
        command: String,
        errno: Errno,
        is_directory: bool,
    },
}

impl Error {
    /// A lock error from a failed system call.
    pub fn lock(lock: &str, action: &'static str, err: &io::Error) -> Error {
        Error::lock_errno(lock, action, errno_of(err))
    }

    /// A lock error from a system call that reported an errno.
    pub fn lock_errno(lock: &str, action: &'static str, errno: Errno) -> Error {
        Error::Lock {
            lock: lock.to_owned(),
            action,
            errno,
        }
    }
}

/// `text` with control characters escaped (`\n` for a newline, `\u{1b}`
/// for escape), so that a message that quotes a name holding one stays one
/// line and cannot play tricks on a terminal.
pub fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// The errno behind an I/O error, so that messages read "Permission denied"
/// rather than std's "Permission denied (os error 13)".
pub fn errno_of(err: &io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(0))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "{message}"),
            Error::Busy {
                lock,
                holder,
                waited: None,
            } => write!(f, "{lock}: already held by {holder}"),
            Error::Busy {
                lock,
                holder,
                waited: Some(waited),
            } => write!(
                f,
                "{lock}: still held by {holder} after {:.1} s",
                waited.as_secs_f64()
            ),
            Error::SlotsBusy {
                lock,
                count,
                holders,
                waited,
            } => {
                match count {
                    1 => write!(f, "{lock}: its one slot is ")?,
                    _ => write!(f, "{lock}: all {count} slots are ")?,
                }
                match waited {
                    None => write!(f, "held"),
                    Some(waited) => write!(f, "still held after {:.1} s", waited.as_secs_f64()),
                }?;
                if !holders.is_empty() {
                    let named: Vec<String> = holders.iter().map(Holder::to_string).collect();
                    write!(f, ", by {}", named.join(", "))?;
                    match count.saturating_sub(holders.len()) {
                        0 => {}
                        unnamed => write!(f, " and {unnamed} more")?,
                    }
                }
                Ok(())
            }
            Error::NotReplaced { lock, holder, why } => {
                write!(
                    f,
                    "{lock}: held by {holder}, which --replace cannot stop: {why}"
                )
            }
            Error::Lock {
                lock,
                action,
                errno,
            } => write!(f, "{lock}: cannot {action}: {}", errno.desc()),
            #[cfg(feature = "etcd")]
            Error::Etcd { lock, what } => write!(f, "{lock}: {what}"),
            Error::NotALockFile { lock, kind } => {
                write!(
                    f,
                    "{lock}: is {kind}, not a regular file; refusing to lock it"
                )
            }
            Error::Exec {
                lock,
                command,
                errno,
                is_directory,
            } => match (errno, is_directory) {
                (_, true) => write!(f, "{lock}: {command}: is a directory"),
                (Errno::ENOENT, false) => write!(f, "{lock}: {command}: command not found"),
                _ => write!(f, "{lock}: cannot run {command}: {}", errno.desc()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_lock_and_the_holder() {
        let holder = Holder {
            pid: Some(4242),
            uid: Some(0),
            host: None,
        };
        let busy = Error::Busy {
            lock: "/tmp/a".into(),
            holder: holder.clone(),
            waited: None,
        };
        assert_eq!(busy.to_string(), "/tmp/a: already held by pid 4242 (uid 0)");
        let timed_out = Error::Busy {
            lock: "/tmp/a".into(),
            holder,
            waited: Some(Duration::from_millis(500)),
        };
        assert_eq!(
            timed_out.to_string(),
            "/tmp/a: still held by pid 4242 (uid 0) after 0.5 s"
        );
        let lock = Error::lock("127.0.0.1:80", "bind", &io::Error::from_raw_os_error(13));
        assert_eq!(
            lock.to_string(),
            "127.0.0.1:80: cannot bind: Permission denied"
        );
    }
}
