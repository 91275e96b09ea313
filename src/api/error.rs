//! The library's error: the command's own (crate::error) carries nix's
//! errno, whose upgrades must not break a library user, so it is turned
//! into this one, which carries only std's types.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::error::Error as Internal;
use crate::holder::Holder;

/// What can go wrong with a lock. The messages are the `me-only` command's
/// (without its `me-only: ` prefix), naming the lock.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Someone else holds the lock (still, after `waited`, where the call
    /// waited).
    Busy {
        /// The lock, as messages name it.
        lock: String,
        /// Who holds it, as far as the kernel tells.
        holder: Holder,
        /// How long the call waited for it; None for a call that did not
        /// wait.
        waited: Option<Duration>,
    },
    /// The name or address is not one the kernel takes (empty, longer than
    /// an abstract name may be, not a loopback port): the message says why.
    InvalidName(String),
    /// A lock file that is not a regular file (`kind` says what, e.g. "a
    /// symbolic link"), which is refused rather than locked.
    NotALockFile {
        /// The lock file, as given.
        lock: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A system call on the lock failed for a reason other than "held".
    Io {
        /// The lock, as messages name it.
        lock: String,
        /// What was being done, e.g. "bind", "open".
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
}

impl Error {
    /// The library's error for one of the command's. Kernel locks never
    /// give the command's --slots, --replace or COMMAND errors; should one
    /// come, it is told as the nearest of these.
    pub(crate) fn from_internal(err: Internal) -> Error {
        match err {
            Internal::Usage(message) => Error::InvalidName(message),
            Internal::Busy {
                lock,
                holder,
                waited,
            } => Error::Busy {
                lock,
                holder,
                waited,
            },
            Internal::SlotsBusy {
                lock,
                holders,
                waited,
                ..
            } => Error::Busy {
                lock,
                holder: holders.into_iter().next().unwrap_or_else(Holder::unknown),
                waited,
            },
            Internal::NotReplaced { lock, holder, .. } => Error::Busy {
                lock,
                holder,
                waited: None,
            },
            Internal::Lock {
                lock,
                action,
                errno,
            } => Error::Io {
                lock,
                action,
                source: io::Error::from_raw_os_error(errno as i32),
            },
            Internal::NotALockFile { lock, kind } => Error::NotALockFile { lock, kind },
            #[cfg(feature = "etcd")]
            Internal::Etcd { lock, what } => Error::Io {
                lock,
                action: "reach etcd",
                source: io::Error::other(what),
            },
            Internal::Exec { lock, errno, .. } => Error::Io {
                lock,
                action: "run the command",
                source: io::Error::from_raw_os_error(errno as i32),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Busy {
                lock,
                holder,
                waited,
            } => Internal::Busy {
                lock: lock.clone(),
                holder: holder.clone(),
                waited: *waited,
            }
            .fmt(f),
            Error::InvalidName(message) => write!(f, "{message}"),
            Error::NotALockFile { lock, kind } => Internal::NotALockFile {
                lock: lock.clone(),
                kind,
            }
            .fmt(f),
            Error::Io {
                lock,
                action,
                source,
            } => match source.raw_os_error() {
                // strerror's words alone, as the command says them, not
                // std's "... (os error 13)".
                Some(errno) => write!(
                    f,
                    "{lock}: cannot {action}: {}",
                    nix::errno::Errno::from_raw(errno).desc()
                ),
                None => write!(f, "{lock}: cannot {action}: {source}"),
            },
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Conversion of a [`Result`] of the command's building blocks into the
/// library's.
pub(crate) trait Public<T> {
    fn public(self) -> Result<T, Error>;
}

impl<T> Public<T> for Result<T, Internal> {
    fn public(self) -> Result<T, Error> {
        self.map_err(Error::from_internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_commands() {
        let holder = Holder {
            pid: Some(4242),
            uid: Some(0),
            host: None,
        };
        let cases = [
            Internal::Busy {
                lock: "/tmp/a".into(),
                holder: holder.clone(),
                waited: Some(Duration::from_millis(500)),
            },
            Internal::lock("127.0.0.1:80", "bind", &io::Error::from_raw_os_error(13)),
            Internal::NotALockFile {
                lock: "/tmp/l".into(),
                kind: "a FIFO",
            },
            Internal::Usage("the lock name is empty".into()),
        ];
        for internal in cases {
            let said = internal.to_string();
            assert_eq!(Error::from_internal(internal).to_string(), said);
        }
    }

    #[test]
    fn an_os_error_is_the_source() {
        let err = Error::from_internal(Internal::lock(
            "x",
            "bind",
            &io::Error::from_raw_os_error(13),
        ));
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(
            source.downcast_ref::<io::Error>().unwrap().kind(),
            io::ErrorKind::PermissionDenied
        );
    }
}
