//! A signal's disposition: set to the default for a while (an ignored
//! SIGCHLD would have the kernel reap children whose status is wanted),
//! put back, or asked (one ignored by the caller stays ignored).

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Sets `signal` to its default disposition; the one it had, to put back
/// with `restore`.
pub fn set_default(signal: Signal) -> Result<SigAction, Errno> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installs the default disposition, no handler.
    unsafe { sigaction(signal, &default) }
}

/// Puts back a disposition that `set_default` returned. Async-signal-safe
/// (sigaction), for a child between fork and exec.
pub fn restore(signal: Signal, disposition: &SigAction) -> Result<(), Errno> {
    // SAFETY: what sigaction returned earlier, a handler this process had.
    unsafe { sigaction(signal, disposition) }.map(|_| ())
}

/// Whether `signal` is ignored (SIG_IGN) in this process.
pub fn is_ignored(signal: Signal) -> bool {
    // SAFETY: sigaction is a plain C structure: all zeroes is a value.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `current`,
    // a structure of ours of the type sigaction fills.
    let asked = unsafe { libc::sigaction(signal as libc::c_int, std::ptr::null(), &mut current) };
    asked == 0 && current.sa_sigaction == libc::SIG_IGN
}
