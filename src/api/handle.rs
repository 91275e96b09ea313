//! A lock as a Rust program names it: the same kernel objects the `me-only`
//! command takes, so that the two keep each other out.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::error::{Error, Public};
use super::guard::Guard;
use crate::holder::Holder;
use crate::lock::acquire::{Patience, acquire};
use crate::lock::{self, Attempt, Backend, Kind, Probe};

/// How long [`Lock::acquire`] waits for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: [`Error::Busy`] at once if the lock is held.
    No,
    /// At most this long, then [`Error::Busy`].
    For(Duration),
    /// Until the lock is ours.
    Forever,
}

impl From<Wait> for Patience {
    fn from(wait: Wait) -> Patience {
        match wait {
            Wait::No => Patience::None,
            Wait::For(limit) => Patience::For(limit),
            Wait::Forever => Patience::Forever,
        }
    }
}

/// A lock, not yet taken: an abstract socket name ([`Lock::named`]), a
/// loopback TCP port ([`Lock::tcp`]) or a flock(2) on a file
/// ([`Lock::file`]). The kernel grants it to one holder at a time and takes
/// it back the instant the holder's descriptor closes (its process dies),
/// so there is nothing stale to clean up.
///
/// A `Lock` may be sent to another thread, but not shared between threads
/// (a waiting lock keeps what it watches the holder with).
pub struct Lock {
    backend: Box<dyn Backend>,
    /// The lock as it was given, for ME_ONLY_LOCK.
    given: OsString,
    kind: Kind,
}

impl Lock {
    /// The abstract AF_UNIX socket name that `me-only NAME COMMAND` binds:
    /// nothing on disk, and only processes of the same network namespace
    /// contend. A name longer than the kernel allows (107 bytes) or empty is
    /// [`Error::InvalidName`], never a truncation.
    ///
    /// ```
    /// use me_only::{Lock, Error};
    ///
    /// let lock = Lock::named(format!("doc-named-{}", std::process::id()))?;
    /// let guard = lock.try_acquire()?.expect("a fresh name is free");
    /// // A second taker, in this process or another, is turned away.
    /// assert!(lock.try_acquire()?.is_none());
    /// drop(guard);
    /// assert!(lock.try_acquire()?.is_some());
    ///
    /// assert!(matches!(Lock::named("x".repeat(108)), Err(Error::InvalidName(_))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn named(name: impl AsRef<OsStr>) -> Result<Lock, Error> {
        Lock::new(name.as_ref(), Kind::AbstractSocket)
    }

    /// The loopback TCP port that `me-only --tcp ADDRESS` binds: `PORT`, on
    /// 127.H.L.1 where H.L are the low bytes of the caller's uid (Perl's
    /// Lock::Socket scheme), or `ADDR:PORT` on a loopback address. The
    /// lock is free again the moment its holder goes, whatever connections
    /// linger.
    ///
    /// ```
    /// use me_only::{Lock, Error};
    ///
    /// // Anyone listening on the address holds the lock: here, this process.
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let port = listener.local_addr().unwrap().port();
    /// let lock = Lock::tcp(&format!("127.0.0.1:{port}"))?;
    /// assert!(lock.try_acquire()?.is_none());
    /// let holder = lock.probe()?.expect("held");
    /// assert_eq!(holder.pid, Some(std::process::id() as i32));
    ///
    /// assert!(matches!(Lock::tcp("10.0.0.1:80"), Err(Error::InvalidName(_))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn tcp(address: &str) -> Result<Lock, Error> {
        Lock::new(OsStr::new(address), Kind::Tcp)
    }

    /// A flock(2) lock on the file at `path`, as `me-only --flock PATH` and
    /// util-linux `flock PATH` take it. The file is created (mode 0644 less
    /// the umask) where missing, and never deleted; a symbolic link, a
    /// FIFO or a device is refused ([`Error::NotALockFile`]).
    ///
    /// ```
    /// use me_only::{Lock, Error};
    ///
    /// let path = std::env::temp_dir().join(format!("doc-file-{}.lock", std::process::id()));
    /// let lock = Lock::file(&path)?;
    /// let guard = lock.try_acquire()?.expect("a new file is not locked");
    /// assert_eq!(lock.probe()?.and_then(|holder| holder.pid), Some(std::process::id() as i32));
    /// drop(guard);
    /// assert_eq!(lock.probe()?, None);
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), Error>(())
    /// ```
    pub fn file(path: impl AsRef<Path>) -> Result<Lock, Error> {
        Lock::new(path.as_ref().as_os_str(), Kind::Flock)
    }

    /// The backend of `kind` for `given`, checked as the command checks its
    /// LOCK.
    pub(crate) fn new(given: &OsStr, kind: Kind) -> Result<Lock, Error> {
        Ok(Lock {
            backend: lock::for_library(given, kind.clone()).public()?,
            given: given.to_owned(),
            kind,
        })
    }

    /// The lock as messages name it (a TCP lock by its full address).
    pub fn name(&self) -> &str {
        self.backend.name()
    }

    /// Takes the lock if it is free; `None` if someone holds it.
    ///
    /// ```
    /// # let name = format!("doc-try-{}", std::process::id());
    /// let lock = me_only::Lock::named(&name)?;
    /// match lock.try_acquire()? {
    ///     Some(_guard) => println!("ours until the guard drops"),
    ///     None => println!("another instance runs"),
    /// }
    /// # Ok::<(), me_only::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<Guard>, Error> {
        match self.backend.try_acquire().public()? {
            Attempt::Acquired(fd) => self.guard(fd).map(Some),
            Attempt::Busy => Ok(None),
        }
    }

    /// Takes the lock, waiting as `wait` allows. The wait is event-driven,
    /// as `me-only --wait`'s: a socket lock's waiter sleeps on its
    /// connection to the holder, which the kernel hangs up as the holder
    /// goes; a file lock's in flock(2). When the lock stays held:
    /// [`Error::Busy`], naming the holder.
    ///
    /// ```
    /// use std::time::Duration;
    /// use me_only::{Error, Lock, Wait};
    ///
    /// # let name = format!("doc-acquire-{}", std::process::id());
    /// let lock = Lock::named(&name)?;
    /// let _guard = lock.acquire(Wait::Forever)?;
    /// let other = Lock::named(&name)?;
    /// match other.acquire(Wait::For(Duration::from_millis(50))) {
    ///     Err(Error::Busy { holder, waited, .. }) => {
    ///         assert_eq!(holder.pid, Some(std::process::id() as i32));
    ///         assert!(waited >= Some(Duration::from_millis(50)));
    ///     }
    ///     other => panic!("expected Busy, got {other:?}"),
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    pub fn acquire(&self, wait: Wait) -> Result<Guard, Error> {
        let patience = Patience::from(wait);
        // A backend of its own, dropped with what it kept to wait with (a
        // connection queued at the holder, the lock file open): kept in
        // `self`, a wait that ran out would hold them on, and a waiter's
        // flock(2) that the release then grants would hold the lock.
        let waiter = lock::for_library(&self.given, self.kind.clone()).public()?;
        let fd = acquire(waiter.as_ref(), patience, true).public()?;
        self.guard(fd)
    }

    /// Who holds the lock, without taking it or getting in anyone's way
    /// (as `me-only --test`); `None` if it is free.
    ///
    /// ```
    /// # let name = format!("doc-probe-{}", std::process::id());
    /// let lock = me_only::Lock::named(&name)?;
    /// assert_eq!(lock.probe()?, None);
    /// let _guard = lock.try_acquire()?;
    /// let holder = lock.probe()?.expect("held");
    /// assert_eq!(holder.pid, Some(std::process::id() as i32));
    /// # Ok::<(), me_only::Error>(())
    /// ```
    pub fn probe(&self) -> Result<Option<Holder>, Error> {
        Ok(match self.backend.probe().public()? {
            Probe::Free => None,
            Probe::Held(holder) => Some(holder),
        })
    }

    /// The guard of the lock just taken. A kernel lock is always held by a
    /// descriptor; should one come without, that is said rather than
    /// pretended held.
    fn guard(&self, fd: Option<std::os::fd::OwnedFd>) -> Result<Guard, Error> {
        match fd {
            Some(fd) => Ok(Guard::new(fd, self.name(), &self.given, None)),
            None => Err(Error::Io {
                lock: self.name().to_owned(),
                action: "hold the lock",
                source: std::io::Error::other("no descriptor holds it"),
            }),
        }
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").field("name", &self.name()).finish()
    }
}
