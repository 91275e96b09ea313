//! Holds a lock the way a Rust daemon would, for as long as its stdin stays
//! open (or until a signal ends it; the kernel then lets go of the lock).
//!
//!     cargo run --example hold -- named nightly-backup
//!     cargo run --example hold -- tcp 5197
//!     cargo run --example hold -- file /run/lock/sync.lock
//!     cargo run --example hold -- etcd nightly http://127.0.0.1:2379
//!
//! Prints `ready` once the lock is held (and its pid on stderr); meanwhile
//! `me-only nightly-backup true` exits 4 naming that pid. Held already: the
//! holder on stderr, exit 4, as the command. An etcd lock whose lease is
//! lost meanwhile: the reason on stderr, exit 1.

use std::io::Read;
use std::process::ExitCode;

use me_only::{Error, Lock, Wait};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let held = match args.as_slice() {
        [kind, name] => hold(kind, name),
        #[cfg(feature = "etcd")]
        [kind, name, endpoints] if kind == "etcd" => hold_in_etcd(name, endpoints),
        _ => {
            eprintln!("usage: hold named|tcp|file LOCK, or hold etcd LOCK ENDPOINTS");
            return ExitCode::from(2);
        }
    };
    match held {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("hold: {err}");
            ExitCode::from(match err {
                Error::Busy { .. } => 4,
                Error::InvalidName(_) => 2,
                _ => 3,
            })
        }
    }
}

/// Holds a kernel lock until stdin ends: true.
fn hold(kind: &str, name: &str) -> Result<bool, Error> {
    let lock = match kind {
        "named" => Lock::named(name)?,
        "tcp" => Lock::tcp(name)?,
        "file" => Lock::file(name)?,
        _ => {
            return Err(Error::InvalidName(format!(
                "{kind}: not named, tcp or file"
            )));
        }
    };
    let guard = lock.acquire(Wait::No)?;
    eprintln!("hold: pid {} holds {}", std::process::id(), guard.name());
    println!("ready");
    // Whatever stdin brings, its end is the signal to let go.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(guard);
    Ok(true)
}

/// Holds an etcd lock until stdin ends (true), or until its lease is lost
/// (false): a holder that lost the lock stops at once.
#[cfg(feature = "etcd")]
fn hold_in_etcd(name: &str, endpoints: &str) -> Result<bool, Error> {
    let guard = me_only::etcd::Lock::new(name, endpoints)?
        .ttl(std::time::Duration::from_secs(3))
        .acquire(Wait::No)?;
    eprintln!(
        "hold: pid {} holds {} (fence {})",
        std::process::id(),
        guard.name(),
        guard.fence()
    );
    println!("ready");
    // An event loop's way: stdin and the lease's handle, in one poll.
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let lost = guard.lost();
    let stdin = std::io::stdin();
    let mut input = [0; 512];
    loop {
        let mut events = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(lost.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut events, PollTimeout::NONE);
        if lost.is_lost() {
            eprintln!("hold: lost: {}", lost.reason().unwrap_or_default());
            return Ok(false);
        }
        // Whatever stdin brings, its end is the signal to let go.
        if events[0].revents().is_some_and(|r| !r.is_empty())
            && stdin.lock().read(&mut input).is_ok_and(|read| read == 0)
        {
            return Ok(true);
        }
    }
}
