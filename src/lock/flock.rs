//! `--flock`: LOCK is a file, locked with flock(2) as util-linux flock(1)
//! locks it, so the two contend. The lock belongs to the open file
//! description: it passes to COMMAND across exec and to every process that
//! inherits the descriptor, and the kernel drops it when the last of them
//! closes it. Unlike an abstract name, a file is the same lock from every
//! network namespace that shares the filesystem.
//!
//! With --shared the lock is flock -s's (LOCK_SH): any number of shared
//! holders at once, and none while an exclusive holder holds it, which
//! they keep out in turn.
//!
//! me-only never deletes the file: a process waiting on the old file would
//! then hold a lock that a newcomer, locking a new file by that name, does
//! not see.

use std::cell::Cell;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::libc;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, lstat, major, minor};

use super::{Attempt, Backend, Holder, Holding, Probe, Waited, above_standard_fds, current_holder};
use crate::env::ENV_SHARED;
use crate::error::{Error, errno_of};
use crate::sys::poll_time;
use crate::sys::procfs::{self, Opened};

pub struct FlockLock {
    name: String,
    path: PathBuf,
    /// The lock file, opened by the first try and kept for the next ones: a
    /// waiter's blocking flock takes the lock for this open file, which the
    /// next try then finds already its own.
    file: Cell<Option<OwnedFd>>,
    /// Whether a wait with a deadline watches the file (a process that
    /// lives on: the library) rather than block in a thread (the command,
    /// which exits soon after).
    watch_a_bounded_wait: bool,
    /// flock -s's lock (LOCK_SH) rather than flock's (LOCK_EX).
    shared: bool,
}

/// How often creating the file may lose a race with another creator and a
/// deleter before me-only gives up: each loss means that someone else
/// created the file, and someone removed it again, in the instant between
/// two calls.
const OPEN_ATTEMPTS: usize = 100;

impl FlockLock {
    pub fn parse(lock: &OsStr) -> Result<FlockLock, Error> {
        if lock.is_empty() {
            return Err(Error::Usage("the lock file name is empty".into()));
        }
        Ok(FlockLock {
            name: lock.to_string_lossy().into_owned(),
            path: PathBuf::from(lock),
            file: Cell::new(None),
            watch_a_bounded_wait: false,
            shared: false,
        })
    }

    /// This lock, taken shared (--shared).
    pub fn shared(self) -> FlockLock {
        FlockLock {
            shared: true,
            ..self
        }
    }

    /// The flock(2) operation that takes this lock, blocking.
    fn operation(&self) -> libc::c_int {
        if self.shared {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        }
    }

    /// As `parse`, for a process that lives on after a wait runs out.
    pub fn parse_for_library(lock: &OsStr) -> Result<FlockLock, Error> {
        Ok(FlockLock {
            watch_a_bounded_wait: true,
            ..FlockLock::parse(lock)?
        })
    }

    /// The open lock file: the one kept from an earlier try, or a new one.
    fn take_file(&self) -> Result<OwnedFd, Error> {
        match self.file.take() {
            Some(file) => Ok(file),
            None => self.open(),
        }
    }

    /// Opens LOCK, creating it (mode 0644 less the umask) if missing. The
    /// last component is never followed if it is a symbolic link: in a
    /// world-writable directory such as /tmp anyone may plant one, pointing
    /// at a file they want locked or created. A FIFO or a device does not
    /// block the open (O_NONBLOCK) and is refused.
    fn open(&self) -> Result<OwnedFd, Error> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOCTTY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let open_error = |errno| self.open_error(errno);
        let file = open_or_create(&self.path, flags).map_err(open_error)?;
        let status = fstat(&file).map_err(open_error)?;
        if let Some(kind) = not_regular(&status) {
            return Err(Error::NotALockFile {
                lock: self.name.clone(),
                kind,
            });
        }
        // COMMAND inherits this open file; it gets it as flock(1) would
        // give it, blocking.
        fcntl(&file, FcntlArg::F_SETFL(OFlag::empty())).map_err(open_error)?;
        above_standard_fds(file).map_err(|err| Error::lock(&self.name, "open", &err))
    }

    /// Who holds the file locked and who waits, as /proc/locks lists them,
    /// with what a holder has open; None where there is no file (and so no
    /// lock: me-only would create it).
    fn lockers(&self) -> Result<Option<(procfs::FlockLockers, Opened)>, Error> {
        let status = match lstat(&self.path) {
            Err(Errno::ENOENT) => return Ok(None),
            Err(errno) => return Err(Error::lock_errno(&self.name, "look up", errno)),
            Ok(status) => status,
        };
        if let Some(kind) = not_regular(&status) {
            return Err(Error::NotALockFile {
                lock: self.name.clone(),
                kind,
            });
        }
        // Device numbers are 12 + 20 bits wide.
        let device = procfs::superblock_device(&self.path)
            .unwrap_or((major(status.st_dev) as u32, minor(status.st_dev) as u32));
        let opened = Opened::LockedFile {
            device: status.st_dev,
            inode: status.st_ino,
        };
        Ok(Some((procfs::flock_lockers(device, status.st_ino), opened)))
    }

    fn open_error(&self, errno: Errno) -> Error {
        if errno == Errno::ELOOP && self.is_symlink() {
            return Error::NotALockFile {
                lock: self.name.clone(),
                kind: "a symbolic link",
            };
        }
        Error::lock_errno(&self.name, "open", errno)
    }

    fn is_symlink(&self) -> bool {
        lstat(&self.path).is_ok_and(|status| file_type(&status) == SFlag::S_IFLNK)
    }

    /// Blocks in flock(2) until the lock is this open file's, or until
    /// `deadline`: the command's way. flock has no timeout, so a bounded
    /// wait blocks in a thread: at the deadline me-only goes on without
    /// it, and exits soon after, which ends the thread's wait (no signal or
    /// timer is involved, so nothing of the kind leaks into COMMAND). The
    /// holder's release wakes it at once, where a watch's teardown costs
    /// the next command ~15 ms (see `wait_before`).
    fn lock_before(file: &OwnedFd, operation: libc::c_int, deadline: Instant) -> Result<(), Errno> {
        let waiter_file = file.try_clone().map_err(|err| errno_of(&err))?;
        let (done, outcome) = mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name("flock waiter".into())
            .spawn(move || {
                let _ = done.send(flock(&waiter_file, operation));
            })
            .map_err(|err| errno_of(&err))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match outcome.recv_timeout(remaining) {
            Ok(result) => {
                let _ = waiter.join();
                result
            }
            // Out of time (the waiter cannot hang up without sending): the
            // caller's next try finds the lock held, and gives up.
            Err(_) => Ok(()),
        }
    }

    /// Waits, by `deadline`, until the lock may have come free, or is this
    /// open file's: the library's way. A thread left blocked in flock(2)
    /// past the deadline would take the lock later for nobody, and one per
    /// wait would pile up in a program that waits again and again. So a
    /// bounded wait watches the file instead (its teardown, an RCU grace
    /// period in the kernel, makes the handover ~15 ms slower): a holder lets go when the
    /// last descriptor of its open file closes (it exits, or closes it),
    /// which inotify reports as IN_CLOSE; one that unlocks and keeps the
    /// file open (`flock -u`) is noticed by a look every LOOK_AGAIN. The
    /// watch is set before the last try, so that no close between the two
    /// is missed.
    fn wait_before(&self, file: &OwnedFd, deadline: Instant) -> Result<(), Errno> {
        let watch =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).and_then(|inotify| {
                inotify.add_watch(
                    format!("/proc/self/fd/{}", file.as_raw_fd()).as_str(),
                    AddWatchFlags::IN_CLOSE,
                )?;
                Ok(inotify)
            });
        match flock(file, self.operation() | libc::LOCK_NB) {
            Err(Errno::EWOULDBLOCK) => {}
            taken_or_failed => return taken_or_failed,
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(LOOK_AGAIN);
        match &watch {
            Ok(inotify) => {
                let mut events = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                match poll(&mut events, poll_time::whole_milliseconds(wait)) {
                    Ok(0) | Err(Errno::EINTR) => Ok(()),
                    Ok(_) => just_closed(file, self.operation()),
                    Err(errno) => Err(errno),
                }
            }
            // No watch to be had (the user's inotify instances used up):
            // looks every LOOK_AGAIN only.
            Err(_) => {
                std::thread::sleep(wait);
                Ok(())
            }
        }
    }
}

/// How often a bounded wait looks again when no close was reported.
const LOOK_AGAIN: Duration = Duration::from_millis(250);

/// Takes the lock for `file` once the holder's last close has come: the
/// kernel reports a close (fsnotify_close) just before it drops the file's
/// locks, and a waiter woken at once may find the lock still held for a
/// moment. A few short tries; the caller's next look, or LOOK_AGAIN, is
/// the last resort.
fn just_closed(file: &OwnedFd, operation: libc::c_int) -> Result<(), Errno> {
    for _ in 0..4 {
        match flock(file, operation | libc::LOCK_NB) {
            Err(Errno::EWOULDBLOCK) => std::thread::sleep(Duration::from_millis(1)),
            taken_or_failed => return taken_or_failed,
        }
    }
    Ok(())
}

impl Backend for FlockLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_acquire(&self) -> Result<Attempt, Error> {
        let file = self.take_file()?;
        match flock(&file, self.operation() | libc::LOCK_NB) {
            Ok(()) => Ok(Attempt::Acquired(Some(file))),
            Err(Errno::EWOULDBLOCK) => {
                self.file.set(Some(file));
                Ok(Attempt::Busy)
            }
            Err(errno) => Err(Error::lock_errno(&self.name, "lock", errno)),
        }
    }

    /// The first of `holders`.
    fn probe(&self) -> Result<Probe, Error> {
        Ok(match self.holders()?.into_iter().next() {
            Some(Holding { holder, .. }) => Probe::Held(holder),
            None => Probe::Free,
        })
    }

    /// Looks the file up in /proc/locks. Taking even a shared lock to look
    /// would, for that instant, turn a real launch away. A shared lock is
    /// kept out by an exclusive holder only; an exclusive one by any.
    fn holders(&self) -> Result<Vec<Holding>, Error> {
        let Some((lockers, opened)) = self.lockers()? else {
            return Ok(Vec::new());
        };
        let mut holders: Vec<Holding> = Vec::new();
        for locker in lockers.holders {
            if self.shared && !locker.exclusive {
                continue;
            }
            // 0: the locker is in a pid namespace this one cannot see into.
            let recorded = (locker.pid != 0).then_some(locker.pid);
            let pid = current_holder(recorded, opened, None, &lockers.waiting);
            // A recorded holder gone (--detach's me-only) is looked for
            // among those that hold the file locked: another shared holder
            // may be found that way, named already.
            if pid.is_some() && holders.iter().any(|named| named.holder.pid == pid) {
                continue;
            }
            holders.push(Holding {
                holder: Holder {
                    pid,
                    uid: pid.and_then(procfs::process_uid),
                    host: None,
                },
                shared: !locker.exclusive,
            });
        }
        Ok(holders)
    }

    fn environment(&self) -> Vec<(&'static str, String)> {
        if self.shared {
            vec![(ENV_SHARED, "1".to_owned())]
        } else {
            Vec::new()
        }
    }

    /// Only an exclusive flock: a shared one (flock -s) is held by others
    /// at the same time.
    fn is_held_through(&self, fd: BorrowedFd<'_>) -> bool {
        let Some(Opened::LockedFile { device, inode }) = self.held_through() else {
            return false;
        };
        fstat(fd).is_ok_and(|status| status.st_dev == device && status.st_ino == inode)
            && procfs::own_descriptor_holds_an_exclusive_flock(fd.as_raw_fd())
    }

    fn held_through(&self) -> Option<Opened> {
        let status = lstat(&self.path).ok()?;
        if not_regular(&status).is_some() {
            return None;
        }
        Some(Opened::LockedFile {
            device: status.st_dev,
            inode: status.st_ino,
        })
    }

    /// The kernel queues a blocking flock and wakes it when the lock is
    /// free: no polling, and the lock is taken in the same call.
    fn wait_for_release(&self, deadline: Option<Instant>) -> Result<Waited, Error> {
        let file = self.take_file()?;
        log::debug!("{}: waiting for the holder to let go", self.name);
        let locked = match deadline {
            None => flock(&file, self.operation()),
            Some(deadline) if self.watch_a_bounded_wait => self.wait_before(&file, deadline),
            Some(deadline) => FlockLock::lock_before(&file, self.operation(), deadline),
        };
        self.file.set(Some(file));
        match locked {
            Ok(()) | Err(Errno::EINTR) => Ok(Waited::Event),
            Err(errno) => Err(Error::lock_errno(&self.name, "wait for the lock", errno)),
        }
    }
}

/// Opens `path`, or creates it (mode 0644 less the umask) if it is missing.
///
/// O_CREAT only where the file is missing: with fs.protected_regular
/// (Debian's default) O_CREAT is refused for another user's existing file in
/// a sticky directory like /tmp, which flock(1) users of that file can lock.
/// O_EXCL makes the create fail rather than open what another process just
/// created, or follow a symbolic link just planted; the open is then tried
/// again.
fn open_or_create(path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let mode = Mode::from_bits_truncate(0o644);
    let mut attempts = 0;
    loop {
        let opened = match open(path, flags, mode) {
            Err(Errno::ENOENT) => open(path, flags | OFlag::O_CREAT | OFlag::O_EXCL, mode),
            opened => opened,
        };
        attempts += 1;
        match opened {
            Err(Errno::EEXIST) if attempts < OPEN_ATTEMPTS => continue,
            opened => return opened,
        }
    }
}

/// flock(2) itself: nix's `Flock` owns the file and unlocks it when dropped,
/// but this lock must outlive me-only, in COMMAND.
fn flock(file: &impl AsFd, operation: libc::c_int) -> Result<(), Errno> {
    // SAFETY: flock reads no memory; the descriptor is borrowed, so open.
    Errno::result(unsafe { libc::flock(file.as_fd().as_raw_fd(), operation) }).map(drop)
}

fn file_type(status: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(status.st_mode) & SFlag::S_IFMT
}

/// What kind of file this is, when it is not a regular file.
fn not_regular(status: &FileStat) -> Option<&'static str> {
    match file_type(status) {
        SFlag::S_IFREG => None,
        SFlag::S_IFLNK => Some("a symbolic link"),
        SFlag::S_IFDIR => Some("a directory"),
        SFlag::S_IFIFO => Some("a FIFO"),
        SFlag::S_IFSOCK => Some("a socket"),
        SFlag::S_IFCHR | SFlag::S_IFBLK => Some("a device"),
        _ => Some("an unknown kind of file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::usage_message;

    #[test]
    fn an_empty_file_name_is_a_usage_error() {
        assert_eq!(
            usage_message(FlockLock::parse(OsStr::new(""))),
            "the lock file name is empty"
        );
    }
}
