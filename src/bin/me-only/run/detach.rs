//! `--detach`: COMMAND runs in the background, holding the lock, while
//! me-only reports its pid and exits. Unlike `me-only LOCK cmd &`, the
//! caller learns whether the lock was taken and COMMAND started (std's spawn
//! reports a failed exec back through a close-on-exec pipe), and COMMAND is
//! no job of the caller's shell.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

use log::debug;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::libc;
use nix::sys::signal::{SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode;

use nix::sys::wait::WaitStatus;
use nix::unistd::ForkResult;

use crate::cli::{MaxTime, Respawn};
use crate::error::{Error, errno_of};
use crate::run::launch::{self, Held, exec_error};
use crate::run::respawn;
use crate::sys::signals;

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

/// `--detach` with `--respawn`, `--until-success` or `--until-failure`:
/// the loop runs in the background, in a process of its own (forked) in a
/// session of its own, holding the lock; me-only prints that process's pid
/// once the loop's first run has started, and exits 0. A loop that ends
/// before (COMMAND cannot be run) says why on stderr, and me-only exits
/// as it did.
pub fn respawning(
    held: Held,
    command: &[OsString],
    max_time: Option<MaxTime>,
    respawn: Respawn,
) -> Result<u8, Error> {
    let lock_name = held.name().to_owned();
    let system_error = |action, errno| Error::lock_errno(&lock_name, action, errno);
    occupy_closed_stdin_and_stdout().map_err(|errno| system_error("open /dev/null", errno))?;
    let (started, started_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|errno| system_error("create a pipe", errno))?;
    // With SIGCHLD ignored (as a caller may have left it) the kernel would
    // reap the loop, and this process could not tell how it ended: the
    // default here, the caller's back in the loop, for COMMAND.
    let inherited = signals::set_default(Signal::SIGCHLD)
        .map_err(|errno| system_error("reset SIGCHLD", errno))?;
    // SAFETY: me-only is single-threaded here (--slots, whose watchers may
    // live on, is refused with it); the child goes on as me-only.
    match unsafe { nix::unistd::fork() }.map_err(|errno| system_error("fork", errno))? {
        ForkResult::Child => {
            drop(started);
            signals::restore(Signal::SIGCHLD, &inherited)
                .map_err(|errno| system_error("restore SIGCHLD", errno))?;
            in_the_background().map_err(|errno| system_error("leave the terminal", errno))?;
            respawn::run(held, command, max_time, respawn, Some(started_write))
        }
        ForkResult::Parent { child } => {
            // The lock is the loop's now: this process's copy goes.
            drop(held);
            drop(started_write);
            let mut byte = [0];
            if std::fs::File::from(started)
                .read(&mut byte)
                .is_ok_and(|read| read == 1)
            {
                debug!("{lock_name}: lock held by the loop, pid {child}");
                let _ = std::io::stdout().write_all(format!("{child}\n").as_bytes());
                return Ok(0);
            }
            // The loop ended before its first run; it said why.
            Ok(match nix::sys::wait::waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => code as u8,
                Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as u8,
                _ => libc::EXIT_FAILURE as u8,
            })
        }
    }
}

/// A session of its own (no terminal's hang-up or ^C), stdin and stdout on
/// /dev/null (`pid=$(me-only -d ...)` must not wait for the loop); stderr
/// stays, for the loop's lines.
fn in_the_background() -> Result<(), Errno> {
    nix::unistd::setsid()?;
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    for standard in 0..=1 {
        // SAFETY: dup2 onto a standard descriptor, from one of ours.
        if unsafe { libc::dup2(null.as_raw_fd(), standard) } < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
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
