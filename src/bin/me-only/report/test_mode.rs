//! `--test`: tell whether the lock is held, and by whom, running nothing.

use std::io::Write;

use log::info;

use crate::error::Error;
use crate::lock::slots::Slot;
use crate::lock::{Backend, Holder, Probe};
use crate::sys::procfs;

/// Exit 0 when free (with --shared: when a shared lock could be taken
/// now, no exclusive holder holding it); when held, the conflict code,
/// with the holder's pid alone on stdout's first line (so `pid=$(me-only
/// -t LOCK)` works; for etcd, `HOST PID`; for a file's shared holders, each
/// pid on a line of its own, as --slots names each slot's) and, when
/// verbose, its uid and command line on stderr.
pub fn report(lock: &dyn Backend, conflict_exit_code: u8) -> Result<u8, Error> {
    let holders = lock.holders()?;
    if holders.is_empty() {
        info!("{}: free", lock.name());
        return Ok(0);
    }
    for holding in &holders {
        tell(lock, &holding.holder);
    }
    Ok(conflict_exit_code)
}

/// --test with --slots: exit 0 when any slot is free; when all are held,
/// the conflict code, with each holder's pid on a line of its own, slot 1's
/// first.
pub fn report_slots(slots: &[Slot], conflict_exit_code: u8) -> Result<u8, Error> {
    let mut held = Vec::with_capacity(slots.len());
    for slot in slots {
        match slot.lock.probe()? {
            Probe::Free => {
                info!("{}: free (slot {})", slot.lock.name(), slot.number);
                return Ok(0);
            }
            Probe::Held(holder) => held.push((slot, holder)),
        }
    }
    for (slot, holder) in held {
        tell(slot.lock.as_ref(), &holder);
    }
    Ok(conflict_exit_code)
}

/// Prints the holder's pid (where known) on stdout and, when verbose, who
/// it is on stderr.
fn tell(lock: &dyn Backend, holder: &Holder) {
    if let Some(pid) = holder.pid {
        // Where the holder may be on another host (etcd), `HOST PID`.
        let line = match &holder.host {
            Some(host) => format!("{host} {pid}\n"),
            None => format!("{pid}\n"),
        };
        // A closed stdout must not turn the answer into a panic.
        let _ = std::io::stdout().write_all(line.as_bytes());
        // /proc is read only for the diagnostic, and only where the pid is
        // one of this host's: an etcd holder elsewhere shares only its number.
        if log::log_enabled!(log::Level::Info) && runs_here(holder) {
            let command_line = procfs::command_line(pid).unwrap_or_default();
            info!("{}: held by {holder}: {command_line}", lock.name());
            return;
        }
    }
    info!("{}: held by {holder}", lock.name());
}

/// Whether the holder runs on this host (where the lock names no host, it
/// is a kernel lock of this host's).
fn runs_here(holder: &Holder) -> bool {
    match &holder.host {
        None => true,
        Some(host) => nix::unistd::gethostname().is_ok_and(|ours| ours == host.as_str()),
    }
}
