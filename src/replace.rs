//! --replace: stop the instance that holds the lock, so that this one can
//! run (Ubuntu's run-this-one). Each holder in turn gets SIGTERM, then
//! SIGKILL after --kill-after: when COMMAND has exited, a child that
//! inherited the lock descriptor still holds the lock, and is next.
//!
//! Signals go through a pidfd taken while that pid is the holder the lock
//! names, so they never reach a process that reused the pid. An etcd
//! holder, which may run on another host, is asked instead: its keeper
//! stops it and lets go, and this one waits in line meanwhile.

use std::time::Duration;

use log::debug;
use nix::errno::Errno;
use nix::libc;

use crate::acquire::{self, Patience};
use crate::backend::{Backend, Holder, Probe, StopRequest};
use crate::cli::Replace;
use crate::deadline;
use crate::error::Error;
use crate::pidfd::{pidfd_open, send, wait_for_exit};
use crate::procfs;

/// How many holders in turn are stopped at most: a holder that starts a
/// new one each time it is stopped is not chased for ever (the lock is then
/// held, as without --replace).
const MAX_HOLDERS: usize = 64;

/// Stops whoever holds `lock` (if old enough), until it is free. Returns
/// when it is free, or when the holder is to be left alone (younger than
/// --replace-older, or chased too long): the caller's acquisition then
/// finds it free or held, as usual. A holder that cannot be stopped is an
/// error.
pub fn make_way(lock: &dyn Backend, replace: Replace) -> Result<(), Error> {
    if let Some(asked) = lock.ask_holder_to_stop(replace.older_than) {
        return match asked? {
            StopRequest::Free | StopRequest::Younger => Ok(()),
            StopRequest::Sent { holder, within } => wait_for_the_holder(lock, holder, within),
        };
    }
    for _ in 0..MAX_HOLDERS {
        let Probe::Held(holder) = lock.probe()? else {
            return Ok(());
        };
        let refuse = |why: &str| Error::NotReplaced {
            lock: lock.name().to_owned(),
            holder: holder.clone(),
            why: why.to_owned(),
        };
        let pid = holder
            .pid
            .ok_or_else(|| refuse("the kernel does not tell its pid"))?;
        if let Some(older_than) = replace.older_than {
            if procfs::process_age(pid).is_none_or(|age| age < older_than) {
                debug!("{}: pid {pid} is younger than --replace-older", lock.name());
                return Ok(());
            }
        }
        let pidfd = match pidfd_open(pid) {
            Ok(pidfd) => pidfd,
            Err(Errno::ESRCH) => continue,
            Err(_) => return Err(refuse("no pidfd for it")),
        };
        // The pid may have changed hands since the lock named it.
        if !still_held_by(lock, pid)? {
            continue;
        }
        debug!("{}: stopping pid {pid}", lock.name());
        match send(&pidfd, replace.signal) {
            Ok(()) => {}
            Err(Errno::ESRCH) => continue,
            Err(Errno::EPERM) => return Err(refuse("not permitted to signal it")),
            Err(_) => return Err(refuse("it cannot be signalled")),
        }
        if !wait_for_exit(&pidfd, deadline::after(replace.kill_after)) {
            debug!("{}: pid {pid} outlived --kill-after: SIGKILL", lock.name());
            let _ = send(&pidfd, libc::SIGKILL);
            // A process killed in uninterruptible sleep dies when that ends.
            wait_for_exit(&pidfd, deadline::after(replace.kill_after));
        }
    }
    Ok(())
}

/// Waits, in line, for a holder asked to stop (on whatever host it runs)
/// to let go: the lock is then this process's. One that has not within
/// `within` cannot be stopped by asking.
fn wait_for_the_holder(lock: &dyn Backend, holder: Holder, within: Duration) -> Result<(), Error> {
    debug!(
        "{}: asked {holder} to stop; waiting up to {within:?}",
        lock.name()
    );
    match acquire::acquire(lock, Patience::For(within), false) {
        Ok(_) => Ok(()),
        Err(Error::Busy { .. }) => Err(Error::NotReplaced {
            lock: lock.name().to_owned(),
            holder,
            why: format!("it did not stop within {} s", within.as_secs()),
        }),
        Err(err) => Err(err),
    }
}

fn still_held_by(lock: &dyn Backend, pid: i32) -> Result<bool, Error> {
    Ok(matches!(
        lock.probe()?,
        Probe::Held(Holder { pid: Some(holder), .. }) if holder == pid
    ))
}
