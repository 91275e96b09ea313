//! `--detach`: COMMAND runs in the background, holding the lock, while
//! me-only reports its pid and exits. Unlike `me-only LOCK cmd &`, the
//! caller learns whether the lock was taken and COMMAND started (std's spawn
//! reports a failed exec back through a close-on-exec pipe), and COMMAND is
//! no job of the caller's shell.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use log::debug;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::libc;
use nix::sys::signal::{SigmaskHow, sigprocmask};
use nix::sys::stat::Mode;

use crate::error::{Error, errno_of};
use crate::run::launch::{self, Held, exec_error};

/// Starts COMMAND holding the lock, in a session of its own, and prints its
/// pid. stdout goes to /dev/null as well as stdin: were it the caller's,
/// `pid=$(me-only -d LOCK cmd)` would wait for COMMAND to end. stderr stays,
/// for COMMAND's complaints.
pub fn run(held: Held, command: &[OsString]) -> Result<u8, Error> {
    let lock_name = held.name();
    let mut mask = nix::sys::signal::SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask))
        .map_err(|errno| Error::lock_errno(lock_name, "read the signal mask", errno))?;
    occupy_closed_stdin_and_stdout()
        .map_err(|errno| Error::lock_errno(lock_name, "open /dev/null", errno))?;
    let mut child = launch::child(command, &held, mask);
    launch::share_with(&mut child, &held)?;
    // COMMAND must not start on a lock that cannot be kept: hand_over,
    // which checks that too, comes only once it runs.
    held.lock.make_keepable()?;
    child.stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: setsid is async-signal-safe. A new session: no terminal's
    // hang-up or ^C reaches COMMAND, and the caller's shell does not wait
    // for it.
    unsafe {
        child.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = child
        .spawn()
        .map_err(|err| exec_error(lock_name, &command[0], errno_of(&err)))?;
    if let Err(err) = held.lock.hand_over(child.id() as i32) {
        // COMMAND must not run on a lock nothing keeps.
        let _ = child.kill();
        return Err(err);
    }
    debug!(
        "{lock_name}: lock held {} by pid {}",
        held.whereabouts(),
        child.id()
    );
    // COMMAND runs whatever becomes of this line: a closed stdout must not
    // make its start look like a failure.
    let _ = std::io::stdout().write_all(format!("{}\n", child.id()).as_bytes());
    Ok(0)
}

/// Puts /dev/null on descriptor 0 or 1 where me-only was started with it
/// closed. Otherwise std's spawn would open its /dev/null (close-on-exec)
/// or its error pipe right there, and "move" it onto itself, so COMMAND
/// would start with the descriptor closed, and the next file it opens would
/// become its stdin or stdout.
fn occupy_closed_stdin_and_stdout() -> Result<(), Errno> {
    for standard in 0..=1 {
        // SAFETY: F_GETFD only looks at the descriptor.
        let closed =
            unsafe { libc::fcntl(standard, libc::F_GETFD) } == -1 && Errno::last() == Errno::EBADF;
        if closed {
            // open() takes the lowest free descriptor: this one, as those
            // below it are open by now. Not close-on-exec, and kept open
            // for good (std's spawn puts its /dev/null over it in COMMAND).
            let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty())?;
            debug_assert_eq!(null.as_raw_fd(), standard);
            let _ = null.into_raw_fd();
        }
    }
    Ok(())
}
