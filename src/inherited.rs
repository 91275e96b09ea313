//! The process state me-only was started with, captured before the Rust
//! runtime changes it, so that COMMAND gets it back.
//!
//! Before `main`, std ignores SIGPIPE and opens /dev/null on any of fds 0-2
//! that are closed. A wrapper that let those changes through would make
//! COMMAND die differently on a broken pipe, or find a stdin it was not
//! given. A function in `.init_array` runs before std's set-up, so it sees
//! the state as the parent left it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use nix::libc;

static SIGPIPE_IGNORED: AtomicBool = AtomicBool::new(false);
/// Bit N set: fd N (0, 1 or 2) was closed when me-only started.
static CLOSED_STANDARD_FDS: AtomicU8 = AtomicU8::new(0);

#[used]
#[unsafe(link_section = ".init_array")]
static CAPTURE_BEFORE_RUNTIME: extern "C" fn() = capture;

extern "C" fn capture() {
    // SAFETY: a null new action makes sigaction only read the disposition
    // into `current`, which is a plain C struct that zeroes validly.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    let queried = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) };
    if queried == 0 && current.sa_sigaction == libc::SIG_IGN {
        SIGPIPE_IGNORED.store(true, Ordering::Relaxed);
    }
    let mut closed = 0;
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the flags of a descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed |= 1 << fd;
        }
    }
    CLOSED_STANDARD_FDS.store(closed, Ordering::Relaxed);
}

/// Puts back what std changed, just before exec. Async-signal-safe: it
/// also runs between fork and exec.
pub fn restore() {
    let sigpipe = if SIGPIPE_IGNORED.load(Ordering::Relaxed) {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: SIG_IGN and SIG_DFL install no handler; nothing in me-only
    // depends on SIGPIPE once COMMAND is about to run.
    unsafe { libc::signal(libc::SIGPIPE, sigpipe) };
    let closed = CLOSED_STANDARD_FDS.load(Ordering::Relaxed);
    for fd in 0..3 {
        if closed & (1 << fd) != 0 {
            // SAFETY: this fd is std's /dev/null stand-in; nothing in
            // me-only owns it.
            unsafe { libc::close(fd) };
        }
    }
}
