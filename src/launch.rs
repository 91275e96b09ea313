//! Handing the lock to COMMAND: exec in place, so COMMAND keeps me-only's
//! pid and holds the lock descriptor itself.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use log::debug;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::error::Error;
use crate::inherited;

/// Names COMMAND learns its lock by.
pub const ENV_LOCK: &str = "ME_ONLY_LOCK";
pub const ENV_FD: &str = "ME_ONLY_FD";

/// Execs COMMAND with the lock descriptor left open; returns only on failure.
///
/// execvpe is called directly rather than through std's Command, which
/// would reset the signal mask and SIGPIPE: COMMAND must see what me-only
/// was started with.
pub fn exec(lock_name: &str, lock: &OsStr, lock_fd: OwnedFd, command: &[OsString]) -> Error {
    if let Err(errno) = fcntl(&lock_fd, FcntlArg::F_SETFD(FdFlag::empty())) {
        return Error::Lock {
            lock: lock_name.to_owned(),
            action: "keep the lock open across exec",
            errno,
        };
    }
    // Ownership passes to COMMAND: nothing in me-only may close it now.
    let fd = lock_fd.into_raw_fd();
    let argv: Vec<CString> = command.iter().map(|arg| c_string(arg)).collect();
    let env = environment_with_lock(lock, fd);
    debug!("{lock_name}: lock held on fd {fd}; exec {:?}", command);
    inherited::restore();
    match nix::unistd::execvpe(&argv[0], &argv, &env) {
        Err(errno) => exec_error(lock_name, &command[0], errno),
        Ok(never) => match never {},
    }
}

/// COMMAND could not be started.
pub fn exec_error(lock_name: &str, program: &OsStr, errno: Errno) -> Error {
    Error::Exec {
        lock: lock_name.to_owned(),
        command: program.to_string_lossy().into_owned(),
        errno,
        is_directory: errno == Errno::EACCES && names_a_directory(program),
    }
}

/// me-only's own environment with ME_ONLY_LOCK and ME_ONLY_FD set (replacing
/// any from an outer me-only).
fn environment_with_lock(lock: &OsStr, fd: i32) -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != ENV_LOCK && key != ENV_FD)
        .map(|(key, value)| env_entry(&key, &value))
        .collect();
    env.push(env_entry(OsStr::new(ENV_LOCK), lock));
    env.push(env_entry(OsStr::new(ENV_FD), OsStr::new(&fd.to_string())));
    env
}

fn env_entry(key: &OsStr, value: &OsStr) -> CString {
    let mut entry = key.to_os_string();
    entry.push("=");
    entry.push(value);
    c_string(&entry)
}

/// Arguments and environment entries come from the kernel as C strings, so
/// they hold no NUL; should one appear anyway, it ends the string as it would
/// in C, rather than panicking.
fn c_string(text: &OsStr) -> CString {
    let bytes = text.as_bytes();
    let until_nul = bytes.split(|&byte| byte == 0).next().unwrap_or_default();
    CString::new(until_nul).unwrap_or_default()
}

/// A command given by path that is a directory gets a clearer message than
/// execve's "Permission denied".
fn names_a_directory(command: &OsStr) -> bool {
    command.as_bytes().contains(&b'/') && Path::new(command).is_dir()
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    #[test]
    fn non_utf8_bytes_survive_into_c_strings() {
        let arg = OsString::from_vec(vec![0xff, b'a', 0xfe]);
        assert_eq!(c_string(&arg).as_bytes(), [0xff, b'a', 0xfe]);
    }

    #[test]
    fn environment_carries_the_lock_once() {
        let env = environment_with_lock(OsStr::new("/tmp/a"), 3);
        let lock_entries: Vec<_> = env
            .iter()
            .filter(|entry| entry.as_bytes().starts_with(b"ME_ONLY_"))
            .collect();
        assert_eq!(lock_entries.len(), 2);
        assert!(
            env.iter()
                .any(|entry| entry.as_bytes() == b"ME_ONLY_LOCK=/tmp/a")
        );
        assert!(env.iter().any(|entry| entry.as_bytes() == b"ME_ONLY_FD=3"));
    }
}
