//! Locks in an etcd cluster (feature `etcd`): one holder across hosts, the
//! lock that `me-only --etcd ENDPOINTS NAME COMMAND` takes, so that a Rust
//! program and the command keep each other out.
//!
//! The lock is the oldest key under `NAME/`, each key tied to its holder's
//! lease, as etcd's own lock service (and `etcdctl lock`) keeps it. A held
//! lock's lease is renewed by a thread of this process, three times per
//! TTL, with the command's keeper's code; if it cannot be renewed in time
//! (etcd unreachable, the key deleted, `me-only --replace`), [`Guard::lost`]
//! becomes ready a little before the lease can run out in etcd, and the
//! holder is to stop at once. Its [`Guard::fence`] token, passed along
//! with whatever it writes, lets the receiver turn away the writes of a
//! holder that lost its lease and did not stop in time.
//!
//! ```no_run
//! use std::time::Duration;
//! use me_only::Wait;
//!
//! let lock = me_only::etcd::Lock::new("nightly", "http://127.0.0.1:2379")?
//!     .ttl(Duration::from_secs(10));
//! let guard = lock.acquire(Wait::Forever)?;
//! let lost = guard.lost();
//! for batch in 0..100 {
//!     if lost.is_lost() {
//!         eprintln!("lock lost: {}", lost.reason().unwrap_or_default());
//!         break;
//!     }
//!     println!("batch {batch}, fence {}", guard.fence());
//! }
//! drop(guard); // revokes the lease: the next holder starts at once
//! # Ok::<(), me_only::Error>(())
//! ```

mod guard;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Public};
use super::handle::Wait;
use crate::holder::Holder;
use crate::lock::acquire::{Patience, acquire};
use crate::lock::etcd::{EtcdLock, Gateway, Login, Settings, TlsOptions};
use crate::lock::{Attempt, Backend, Probe};

pub use guard::{Guard, Lost};

/// An etcd lock, not yet taken: a name in a cluster, its endpoints, and how
/// to reach them (TLS, a login) and keep it (the lease's TTL).
#[derive(Debug, Clone)]
pub struct Lock {
    name: String,
    endpoints: String,
    ttl: i64,
    tls: TlsOptions,
    login: Option<Login>,
}

/// The TTL of a lock's lease unless [`Lock::ttl`] says, as the command's.
const DEFAULT_TTL: i64 = 10;

/// The longest TTL taken, as the command's --ttl: a day.
const LONGEST_TTL: i64 = 86_400;

impl Lock {
    /// The lock `name` in the cluster at `endpoints`
    /// (`http[s]://HOST:PORT[,...]`, tried in turn). Nothing is asked of
    /// etcd yet. An empty name or a malformed endpoint is
    /// [`Error::InvalidName`].
    ///
    /// ```
    /// use me_only::{Error, etcd::Lock};
    ///
    /// let lock = Lock::new("nightly", "http://127.0.0.1:2379,http://127.0.0.2:2379")?;
    /// assert_eq!(lock.name(), "nightly");
    /// assert!(matches!(Lock::new("nightly", "ftp://127.0.0.1"), Err(Error::InvalidName(_))));
    /// assert!(matches!(Lock::new("", "http://127.0.0.1:2379"), Err(Error::InvalidName(_))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(name: &str, endpoints: &str) -> Result<Lock, Error> {
        if name.is_empty() {
            return Err(Error::InvalidName("the lock name is empty".into()));
        }
        Gateway::parse(endpoints, false)
            .map_err(|problem| Error::InvalidName(format!("etcd endpoints: {problem}")))?;
        Ok(Lock {
            name: name.to_owned(),
            endpoints: endpoints.to_owned(),
            ttl: DEFAULT_TTL,
            tls: TlsOptions::default(),
            login: None,
        })
    }

    /// The lease's time to live (10 s unless said): a holder cut off from
    /// etcd learns it lost the lock ([`Guard::lost`]) within this, and the
    /// next holder may start after it. In whole seconds, rounded up, from 1
    /// s to a day; etcd may raise a short one to its own minimum.
    pub fn ttl(mut self, ttl: Duration) -> Lock {
        let seconds = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0));
        self.ttl = (seconds.min(LONGEST_TTL as u64) as i64).max(1);
        self
    }

    /// Logs in to a cluster with auth enabled as `user`.
    pub fn login(mut self, user: &str, password: &str) -> Lock {
        self.login = Some(Login {
            user: user.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    /// The CA certificates (PEM) that sign the https endpoints'
    /// certificates, instead of the system's.
    pub fn ca_certificates(mut self, file: impl Into<PathBuf>) -> Lock {
        self.tls.cacert = Some(file.into());
        self
    }

    /// A client certificate and its private key (PEM), for clusters that
    /// ask for one.
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Lock {
        self.tls.cert = Some(cert.into());
        self.tls.key = Some(key.into());
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the lock if no one holds it; `None` if someone does.
    pub fn try_acquire(&self) -> Result<Option<Guard>, Error> {
        let backend = self.backend()?;
        match backend.try_acquire().public()? {
            Attempt::Acquired(_) => self.guard(&backend).map(Some),
            Attempt::Busy => Ok(None),
        }
    }

    /// Takes the lock, waiting as `wait` allows: in line behind the
    /// holder's key, woken by etcd's watch the moment it goes, as
    /// `me-only --etcd --wait`. When the lock stays held: [`Error::Busy`],
    /// naming the holder's host and pid.
    pub fn acquire(&self, wait: Wait) -> Result<Guard, Error> {
        let backend = self.backend()?;
        acquire(&backend, Patience::from(wait), true).public()?;
        self.guard(&backend)
    }

    /// Who holds the lock (host and pid, as its key says), without taking
    /// it; `None` if it is free.
    pub fn probe(&self) -> Result<Option<Holder>, Error> {
        Ok(match self.backend()?.probe().public()? {
            Probe::Free => None,
            Probe::Held(holder) => Some(holder),
        })
    }

    /// The command's etcd backend for this lock: the TLS files are read,
    /// and the endpoints' names resolved, now.
    fn backend(&self) -> Result<EtcdLock, Error> {
        let cannot = |what: String| Error::Io {
            lock: self.name.clone(),
            action: "reach etcd",
            source: std::io::Error::other(what),
        };
        self.tls.check().map_err(cannot)?;
        let gateway = Gateway::parse(&self.endpoints, self.tls.any())
            .map_err(|problem| Error::InvalidName(format!("etcd endpoints: {problem}")))?
            .with_access(&self.tls, self.login.clone())
            .map_err(cannot)?;
        let settings = Settings {
            gateway,
            ttl: self.ttl,
            // The library fences nothing: its holder stops itself.
            kill_after: Duration::ZERO,
            contest: None,
        };
        EtcdLock::parse(OsStr::new(&self.name), settings).public()
    }

    /// The guard of the lock `backend` just took, its lease kept from now
    /// on by a thread.
    fn guard(&self, backend: &EtcdLock) -> Result<Guard, Error> {
        let taken = backend.keep_lease_yourself().public()?;
        let taken = taken.ok_or_else(|| Error::Io {
            lock: self.name.clone(),
            action: "hold the lock",
            source: std::io::Error::other("no lease holds it"),
        })?;
        Guard::keep(&self.name, backend.gateway().resolved(), self.ttl, taken)
    }
}
