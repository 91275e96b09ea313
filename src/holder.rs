//! Who holds a lock: what a message names, and what --test prints. Never
//! whom to signal (that is sys::instance's question, answered apart).

use std::fmt;

/// Who holds a lock, as far as the kernel tells. It names the holder for a
/// message (its `Display` is the command's: "pid 4242 (uid 1000)"); the
/// process may have let go, and its pid gone to another, since.
///
/// A program reads its fields; it does not build one (the struct is
/// `#[non_exhaustive]`, so that what the kernel or etcd tells of a holder
/// can grow without breaking it):
///
/// ```
/// # let name = format!("doc-holder-{}", std::process::id());
/// let lock = me_only::Lock::named(&name)?;
/// let _guard = lock.try_acquire()?;
/// let me_only::Holder { pid, uid, host, .. } = lock.probe()?.expect("held");
/// assert_eq!(pid, Some(std::process::id() as i32));
/// assert!(uid.is_some(), "the kernel tells whose process it is");
/// assert_eq!(host, None);
/// # Ok::<(), me_only::Error>(())
/// ```
///
/// ```compile_fail
/// let forged = me_only::Holder { pid: Some(1), uid: None, host: None };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// Its process, where the kernel tells (not for another pid namespace's,
    /// nor always for another user's).
    pub pid: Option<i32>,
    /// The user it runs as, where the kernel tells.
    pub uid: Option<u32>,
    /// The host it runs on, where the lock spans hosts (etcd).
    pub host: Option<String>,
}

impl Holder {
    /// Held, by whom the kernel does not tell.
    pub fn unknown() -> Holder {
        Holder {
            pid: None,
            uid: None,
            host: None,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.uid) {
            (Some(pid), Some(uid)) => write!(f, "pid {pid} (uid {uid})"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, Some(uid)) => write!(f, "a process of uid {uid}"),
            (None, None) => write!(f, "another process"),
        }?;
        match &self.host {
            Some(host) => write!(f, " on {host}"),
            None => Ok(()),
        }
    }
}
