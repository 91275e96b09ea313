//! A lock handed from process to process.
//!
//!     cargo run --example worker -- share named nightly-backup
//!
//! takes the lock and starts a copy of itself as `worker adopt`, sharing
//! the guard with it (`Guard::share_with`): the child holds the lock too,
//! so it stays held until both are gone. `worker adopt`, also run as
//! COMMAND by `me-only nightly-backup worker adopt`, adopts the lock it
//! inherited (`me_only::inherited`), prints `inherited LOCK on fd N` (or `none`,
//! exit 1, if it inherited none), then holds it until its stdin ends.

use std::io::Read;
use std::process::{Command, ExitCode};

use me_only::{Error, Lock, Wait};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let done = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["adopt"] => adopt(),
        ["share", kind, name] => share(kind, name),
        _ => {
            eprintln!("usage: worker adopt | worker share named|tcp|file LOCK");
            return ExitCode::from(2);
        }
    };
    match done {
        Ok(code) => code,
        Err(err) => {
            eprintln!("worker: {err}");
            ExitCode::from(3)
        }
    }
}

/// Adopts the inherited lock and holds it until stdin ends.
fn adopt() -> Result<ExitCode, Error> {
    let Some(guard) = me_only::inherited()? else {
        println!("none");
        return Ok(ExitCode::FAILURE);
    };
    use std::os::fd::AsRawFd;
    println!("inherited {} on fd {}", guard.name(), guard.as_raw_fd());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(ExitCode::SUCCESS)
}

/// Takes the lock, then runs `worker adopt` with it and exits as that did.
fn share(kind: &str, name: &str) -> Result<ExitCode, Error> {
    let lock = match kind {
        "named" => Lock::named(name)?,
        "tcp" => Lock::tcp(name)?,
        _ => Lock::file(name)?,
    };
    let guard = lock.acquire(Wait::No)?;
    let mut child = Command::new(std::env::current_exe().map_err(|source| io(&lock, source))?);
    child.arg("adopt");
    guard.share_with(&mut child)?;
    let status = child.status().map_err(|source| io(&lock, source))?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

fn io(lock: &Lock, source: std::io::Error) -> Error {
    Error::Io {
        lock: lock.name().to_owned(),
        action: "run worker adopt",
        source,
    }
}
