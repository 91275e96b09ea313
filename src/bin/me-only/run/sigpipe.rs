//! SIGPIPE as me-only was started with it. While me-only runs it ignores
//! SIGPIPE, so that a closed stdout or stderr is an error it handles (and
//! still exits with the right code) rather than a silent death; COMMAND gets
//! the original disposition back, as if started directly. systemd starts
//! services with SIGPIPE ignored, shells with it at its default: both must
//! reach COMMAND unchanged.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;

static SIGPIPE_WAS_IGNORED: AtomicBool = AtomicBool::new(false);

/// Ignores SIGPIPE, remembering how it was. Called first thing in main.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    SIGPIPE_WAS_IGNORED.store(previous == libc::SIG_IGN, Ordering::Relaxed);
}

/// Puts SIGPIPE back as it was, just before exec. Async-signal-safe: it also
/// runs between fork and exec.
pub fn restore_sigpipe() {
    let original = if SIGPIPE_WAS_IGNORED.load(Ordering::Relaxed) {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: SIG_IGN and SIG_DFL install no handler.
    unsafe { libc::signal(libc::SIGPIPE, original) };
}
