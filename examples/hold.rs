//! Holds a lock the way a Rust daemon would, for as long as its stdin stays
//! open (or until a signal ends it; the kernel then lets go of the lock).
//!
//!     cargo run --example hold -- named nightly-backup
//!     cargo run --example hold -- tcp 5197
//!     cargo run --example hold -- file /run/lock/sync.lock
//!
//! Prints `ready` once the lock is held (and its pid on stderr); meanwhile
//! `me-only nightly-backup true` exits 4 naming that pid. Held already: the
//! holder on stderr, exit 4, as the command.

use std::io::Read;
use std::process::ExitCode;

use me_only::{Error, Lock, Wait};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, name] = args.as_slice() else {
        eprintln!("usage: hold named|tcp|file LOCK");
        return ExitCode::from(2);
    };
    match hold(kind, name) {
        Ok(()) => ExitCode::SUCCESS,
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

fn hold(kind: &str, name: &str) -> Result<(), Error> {
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
    Ok(())
}
