//! A lock held: the descriptor that holds it, close-on-exec, given back
//! when dropped, and handed to a child only on purpose.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use super::error::Error;
use crate::env::{ENV_FD, ENV_FENCE, ENV_LOCK, ENV_LOCKED_AT, ENV_SLOT};
use crate::sys::procfs;

/// A lock held: it stays held while this guard (or a process it was
/// shared with, see [`Guard::share_with`]) has its descriptor open, and is
/// given back when the guard drops, or at once when the process dies. The
/// descriptor is close-on-exec: a program started otherwise does not keep
/// the lock.
pub struct Guard {
    /// Shared only with the commands it was shared with, as a Weak: in
    /// their child, whether the guard still lived when it was forked.
    fd: Arc<OwnedFd>,
    /// The lock as messages name it.
    name: String,
    /// The lock as it was given, for ME_ONLY_LOCK.
    given: OsString,
    /// When it was taken, in seconds since boot, for ME_ONLY_LOCKED_AT.
    locked_at: OsString,
}

impl Guard {
    /// The guard of `fd`, which holds the lock `given` (`name` in messages),
    /// taken at `locked_at` (ME_ONLY_LOCKED_AT's form), or now if not said.
    pub(crate) fn new(
        fd: OwnedFd,
        name: &str,
        given: &OsStr,
        locked_at: Option<OsString>,
    ) -> Guard {
        Guard {
            fd: Arc::new(fd),
            name: name.to_owned(),
            given: given.to_owned(),
            locked_at: locked_at.unwrap_or_else(|| seconds_since_boot().into()),
        }
    }

    /// The lock held, as messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lets `command`'s child inherit the lock, as `me-only LOCK COMMAND`
    /// hands it to COMMAND: the child and whatever inherits it from there
    /// hold it too, and the lock is free only once all of them and this
    /// guard are gone. The child learns it through the `me-only` command's
    /// variables: ME_ONLY_LOCK (the lock as given), ME_ONLY_FD (the
    /// descriptor's number), ME_ONLY_LOCKED_AT (when it was taken); an
    /// outer lock's ME_ONLY_SLOT and ME_ONLY_FENCE are removed. In the
    /// child, [`inherited`](crate::inherited) adopts it.
    ///
    /// Only that child gets the descriptor (close-on-exec is cleared
    /// between its fork and exec), not what other threads start meanwhile.
    /// Spawn it while the guard lives: `command` does not keep the lock,
    /// and once the guard has dropped, spawning it fails (rather than hand
    /// the child whatever descriptor came to have the guard's number).
    ///
    /// ```
    /// use std::process::Command;
    ///
    /// # let name = format!("doc-share-{}", std::process::id());
    /// let lock = me_only::Lock::named(&name)?;
    /// let guard = lock.try_acquire()?.expect("free");
    /// let mut worker = Command::new("sh");
    /// worker.args(["-c", r#"test -S "/proc/$$/fd/$ME_ONLY_FD" && test "$ME_ONLY_LOCK" = "$1""#, "sh", &name]);
    /// guard.share_with(&mut worker)?;
    /// assert!(worker.status().unwrap().success());
    /// # Ok::<(), me_only::Error>(())
    /// ```
    pub fn share_with(&self, command: &mut Command) -> Result<(), Error> {
        let fd = self.fd.as_raw_fd();
        let guard = Arc::downgrade(&self.fd);
        command
            .env(ENV_LOCK, &self.given)
            .env(ENV_FD, fd.to_string())
            .env(ENV_LOCKED_AT, &self.locked_at)
            .env_remove(ENV_SLOT)
            .env_remove(ENV_FENCE);
        // SAFETY: between fork and exec only an atomic count is looked at
        // and fcntl is called, both async-signal-safe. The child's memory
        // is a copy made after its descriptors were: a guard that still
        // lived in the copy had not closed its descriptor when they were
        // copied, so `fd` is this lock in the child.
        unsafe {
            command.pre_exec(move || match guard.upgrade() {
                Some(_alive) => keep_across_exec(fd),
                None => Err(std::io::Error::from_raw_os_error(nix::libc::EBADF)),
            });
        }
        Ok(())
    }
}

/// Clears close-on-exec on `fd`, in the child about to exec.
fn keep_across_exec(fd: RawFd) -> std::io::Result<()> {
    use nix::libc;

    // SAFETY: fcntl on a number: at worst EBADF, reported.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Now, in seconds since boot to the hundredth, as ME_ONLY_LOCKED_AT says
/// it (the clock of /proc's process start times).
fn seconds_since_boot() -> String {
    let now = procfs::since_boot();
    format!("{}.{:02}", now.as_secs(), now.subsec_millis() / 10)
}

impl AsFd for Guard {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Guard {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("name", &self.name)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}
