//! `--test`: tell whether the lock is held, and by whom, running nothing.

use std::io::Write;

use log::info;

use crate::backend::{Backend, Probe};
use crate::error::Error;
use crate::procfs;

/// Exit 0 when free; when held, the conflict code, with the holder's pid
/// alone on stdout's first line (so `pid=$(me-only -t LOCK)` works) and, when
/// verbose, its uid and command line on stderr.
pub fn report(lock: &dyn Backend, conflict_exit_code: u8) -> Result<u8, Error> {
    let holder = match lock.probe()? {
        Probe::Free => {
            info!("{}: free", lock.name());
            return Ok(0);
        }
        Probe::Held(holder) => holder,
    };
    if let Some(pid) = holder.pid {
        // A closed stdout must not turn the answer into a panic.
        let _ = std::io::stdout().write_all(format!("{pid}\n").as_bytes());
        let command_line = procfs::command_line(pid).unwrap_or_default();
        info!("{}: held by {holder}: {command_line}", lock.name());
    } else {
        info!("{}: held by {holder}", lock.name());
    }
    Ok(conflict_exit_code)
}
