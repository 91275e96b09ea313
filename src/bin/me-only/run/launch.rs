//! Handing the lock to COMMAND: exec in place, so COMMAND keeps me-only's
//! pid and holds the lock descriptor itself.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use log::debug;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};

use crate::error::{Error, printable};
use crate::lock::Backend;
use crate::run::sigpipe;
use crate::sys::procfs;

pub use me_only::env::{ENV_FD, ENV_FENCE, ENV_LOCK, ENV_LOCKED_AT, ENV_SHARED, ENV_SLOT};

/// A lock just taken, to be handed to COMMAND.
pub struct Held<'a> {
    pub lock: &'a dyn Backend,
    /// LOCK as given (with --slots, the slot's), for ME_ONLY_LOCK.
    pub given: &'a OsStr,
    /// With --slots, which one, for ME_ONLY_SLOT.
    pub slot: Option<u32>,
    /// The descriptor that holds the lock, if one does.
    pub fd: Option<OwnedFd>,
}

impl Held<'_> {
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// Where the lock is held, for diagnostics: "on fd 3".
    pub fn whereabouts(&self) -> String {
        whereabouts(self.fd.as_ref().map(AsRawFd::as_raw_fd))
    }
}

fn whereabouts(fd: Option<RawFd>) -> String {
    match fd {
        Some(fd) => format!("on fd {fd}"),
        None => "with no descriptor (a lease)".to_owned(),
    }
}

/// COMMAND and its arguments as a person would type them, for diagnostics.
pub fn words(command: &[OsString]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|word| printable(&word.to_string_lossy()))
        .collect();
    words.join(" ")
}

/// Execs COMMAND with the lock descriptor left open; returns only on failure.
///
/// execvp is called directly rather than through std's Command, which
/// would reset the signal mask and SIGPIPE: COMMAND must see what me-only
/// was started with (main.rs keeps std's runtime from changing it).
pub fn exec(held: Held, command: &[OsString]) -> Error {
    let Held {
        lock,
        given,
        slot,
        fd,
    } = held;
    let name = lock.name();
    if let Err(err) = lock.hand_over(std::process::id() as i32) {
        return err;
    }
    if let Some(Err(err)) = fd.as_ref().map(|fd| keep_across_exec(name, fd)) {
        return err;
    }
    // Ownership passes to COMMAND: nothing in me-only may close it now.
    let fd = fd.map(IntoRawFd::into_raw_fd);
    let argv: Vec<CString> = command.iter().map(|arg| c_string(arg)).collect();
    // SAFETY: nothing reads the environment while it changes: the threads
    // me-only may still have, a --flock --timeout waiter and --slots'
    // waiters, only bind, connect, poll, open and flock, none of which
    // reads it. An outer me-only's variables are looked for once (each
    // setenv and unsetenv is a walk through the whole environment); where
    // there are none, which is the common launch, ours are added in one
    // step, without a walk to look for them.
    unsafe {
        if outer_variables_present() {
            replace_outer_variables(given, fd, slot, lock.environment());
        } else {
            let mut ours = vec![entry(ENV_LOCK, given)];
            ours.extend(fd.map(|fd| entry(ENV_FD, OsStr::new(&fd.to_string()))));
            ours.extend(slot.map(|slot| entry(ENV_SLOT, OsStr::new(&slot.to_string()))));
            ours.push(entry(ENV_LOCKED_AT, OsStr::new(&seconds_since_boot())));
            for (variable, value) in lock.environment() {
                ours.push(entry(variable, OsStr::new(&value)));
            }
            add_to_environment(ours);
        }
    }
    debug!(
        "{name}: lock held {}; exec {}",
        whereabouts(fd),
        words(command)
    );
    sigpipe::restore_sigpipe();
    match nix::unistd::execvp(&argv[0], &argv) {
        Err(errno) => exec_error(name, &command[0], errno),
        Ok(never) => match never {},
    }
}

/// Sets ME_ONLY_* where an outer me-only's are in the environment:
/// replaced, or removed where this lock has none.
///
/// # Safety
/// Nothing may read or change the environment meanwhile.
unsafe fn replace_outer_variables(
    given: &OsStr,
    fd: Option<RawFd>,
    slot: Option<u32>,
    backend_variables: Vec<(&'static str, String)>,
) {
    // SAFETY: the caller guarantees that nothing else touches it.
    unsafe {
        std::env::set_var(ENV_LOCK, given);
        match fd {
            Some(fd) => std::env::set_var(ENV_FD, fd.to_string()),
            None => std::env::remove_var(ENV_FD),
        }
        match slot {
            Some(slot) => std::env::set_var(ENV_SLOT, slot.to_string()),
            None => std::env::remove_var(ENV_SLOT),
        }
        std::env::set_var(ENV_LOCKED_AT, seconds_since_boot());
        std::env::remove_var(ENV_FENCE);
        std::env::remove_var(ENV_SHARED);
        for (variable, value) in backend_variables {
            std::env::set_var(variable, value);
        }
    }
}

/// `NAME=value`, for the environment.
fn entry(name: &str, value: &OsStr) -> CString {
    let mut text = Vec::with_capacity(name.len() + 1 + value.len());
    text.extend_from_slice(name.as_bytes());
    text.push(b'=');
    text.extend_from_slice(value.as_bytes());
    c_string(OsStr::from_bytes(&text))
}

/// Adds `entries` (`NAME=value`, none of them set yet) to the environment
/// in one step: a new array of the old entries and these, which is what
/// setenv builds too, without its walk to find each name. Never freed:
/// me-only execs next.
///
/// # Safety
/// Nothing may read or change the environment meanwhile.
unsafe fn add_to_environment(entries: Vec<CString>) {
    use nix::libc::{c_char, environ};
    // SAFETY: environ is a null-terminated array of C strings (or null),
    // which the caller guarantees nothing changes while it is replaced.
    unsafe {
        let mut old = 0;
        while !environ.is_null() && !(*environ.add(old)).is_null() {
            old += 1;
        }
        let mut all: Vec<*mut c_char> = Vec::with_capacity(old + entries.len() + 1);
        if old > 0 {
            all.extend_from_slice(std::slice::from_raw_parts(environ, old));
        }
        all.extend(entries.into_iter().map(CString::into_raw));
        all.push(std::ptr::null_mut());
        environ = all.leak().as_mut_ptr();
    }
}

/// Now, in seconds since boot, to /proc's hundredth.
fn seconds_since_boot() -> String {
    let now = procfs::since_boot();
    seconds_text(now.as_secs(), (now.subsec_millis() / 10) as u8)
}

/// `SECONDS.HH`, written digit by digit: std's formatting machinery costs
/// every launch more than the clock does.
fn seconds_text(seconds: u64, hundredths: u8) -> String {
    let mut text = [0u8; 24];
    let mut start = text.len();
    for digit in [hundredths % 10, hundredths / 10 % 10] {
        start -= 1;
        text[start] = b'0' + digit;
    }
    start -= 1;
    text[start] = b'.';
    let mut rest = seconds;
    loop {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// Whether any ME_ONLY_* variable is set (an outer me-only's, or one
/// inherited from its COMMAND): one walk through the environment that looks
/// at little more than each entry's first byte, where std's `var_os` would
/// copy, and each unsetenv walk it all.
///
/// # Safety
/// Nothing may change the environment meanwhile.
unsafe fn outer_variables_present() -> bool {
    const PREFIX: &[u8] = b"ME_ONLY_";
    // SAFETY: environ is a null-terminated array of C strings, which the
    // caller guarantees nothing changes while it is read.
    unsafe {
        let mut entry = nix::libc::environ as *const *const std::ffi::c_char;
        while !entry.is_null() && !(*entry).is_null() {
            let text = (*entry).cast::<u8>();
            let mut matched = 0;
            while matched < PREFIX.len() && *text.add(matched) == PREFIX[matched] {
                matched += 1;
            }
            if matched == PREFIX.len() {
                return true;
            }
            entry = entry.add(1);
        }
    }
    false
}

/// Clears close-on-exec on the lock descriptor, the one me-only hands on.
pub fn keep_across_exec(lock_name: &str, lock_fd: &OwnedFd) -> Result<(), Error> {
    fcntl(lock_fd, FcntlArg::F_SETFD(FdFlag::empty()))
        .map(drop)
        .map_err(|errno| Error::lock_errno(lock_name, "keep the lock open across exec", errno))
}

/// COMMAND as a child process that starts as if started directly: with
/// `mask`, the signal mask me-only was started with, and SIGPIPE as it was,
/// both of which std's spawn resets; and with ME_ONLY_LOCK, ME_ONLY_SLOT
/// and what the backend adds, an outer me-only's ME_ONLY_FENCE and
/// ME_ONLY_SLOT removed (ME_ONLY_FD is the caller's to set).
pub fn child(command: &[OsString], held: &Held, mask: SigSet) -> Command {
    let mut child = Command::new(&command[0]);
    child
        .args(&command[1..])
        .env(ENV_LOCK, held.given)
        .env_remove(ENV_FENCE)
        .env_remove(ENV_SHARED)
        .env(ENV_LOCKED_AT, seconds_since_boot())
        .envs(held.lock.environment());
    match held.slot {
        Some(slot) => child.env(ENV_SLOT, slot.to_string()),
        None => child.env_remove(ENV_SLOT),
    };
    // SAFETY: between fork and exec only async-signal-safe calls are made:
    // sigprocmask and signal.
    unsafe {
        child.pre_exec(move || {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
            sigpipe::restore_sigpipe();
            Ok(())
        });
    }
    child
}

/// Lets child COMMAND inherit the lock's descriptor, named in ME_ONLY_FD,
/// where there is one: what COMMAND starts then holds the lock as in exec
/// mode, even after me-only and COMMAND are gone.
pub fn share_with(child: &mut Command, held: &Held) -> Result<(), Error> {
    match &held.fd {
        Some(fd) => {
            keep_across_exec(held.name(), fd)?;
            child.env(ENV_FD, fd.as_raw_fd().to_string())
        }
        None => child.env_remove(ENV_FD),
    };
    Ok(())
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

/// Arguments come from the kernel as C strings, so they hold no NUL; should
/// one appear anyway, it ends the string as it would in C, rather than
/// panicking.
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
    fn seconds_are_written_with_two_decimals() {
        assert_eq!(seconds_text(0, 0), "0.00");
        assert_eq!(seconds_text(12345, 7), "12345.07");
        assert_eq!(seconds_text(u64::MAX, 99), format!("{}.99", u64::MAX));
    }

    #[test]
    fn non_utf8_bytes_survive_into_c_strings() {
        let arg = OsString::from_vec(vec![0xff, b'a', 0xfe]);
        assert_eq!(c_string(&arg).as_bytes(), [0xff, b'a', 0xfe]);
    }
}
