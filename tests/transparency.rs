//! me-only is a transparent wrapper: the command sees the signal state,
//! descriptors, cwd, umask and environment it would have seen if started
//! directly, plus the lock descriptor and ME_ONLY_*.

use crate::common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::{me_only, text, unique_lock};
use nix::libc;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};

const SIGPIPE_BIT: u64 = 1 << (libc::SIGPIPE - 1);

/// Runs `argv` directly and through me-only, after the same pre-exec set-up
/// in the child (std has just reset SIGPIPE to default and the mask to
/// empty when it runs).
fn direct_and_through_me_only(argv: &[&str], setup: fn()) -> (Output, Output) {
    direct_and_through_me_only_with(&[], argv, setup)
}

fn direct_and_through_me_only_with(
    options: &[&str],
    argv: &[&str],
    setup: fn(),
) -> (Output, Output) {
    let run = |mut command: Command| {
        // SAFETY: the set-up closures make only async-signal-safe calls.
        unsafe {
            command.pre_exec(move || {
                setup();
                Ok(())
            });
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        output
    };
    let mut direct = Command::new(argv[0]);
    direct.args(&argv[1..]);
    let mut wrapped = me_only();
    wrapped
        .args(options)
        .arg(unique_lock("transparent"))
        .args(argv);
    (run(direct), run(wrapped))
}

/// A hex mask line (SigIgn, SigBlk) from /proc/self/status.
fn status_mask(status: &Output, field: &str) -> u64 {
    let stdout = text(&status.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {stdout}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn sigpipe_ignored() {
    // SAFETY: installs SIG_IGN, no handler.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.unwrap();
}

fn sigpipe_default() {}

fn block_usr1_and_term() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGUSR1);
    set.add(Signal::SIGTERM);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).unwrap();
}

/// Runs `cat /proc/self/status` after `setup`, directly and through
/// me-only, and compares the ignored signals.
fn assert_sigpipe_kept(setup: fn(), ignored: bool) {
    let (direct, wrapped) = direct_and_through_me_only(&["cat", "/proc/self/status"], setup);
    let sigpipe_ignored = status_mask(&direct, "SigIgn") & SIGPIPE_BIT != 0;
    assert_eq!(sigpipe_ignored, ignored, "set-up failed");
    assert_eq!(
        status_mask(&wrapped, "SigIgn"),
        status_mask(&direct, "SigIgn")
    );
}

#[test]
fn ignored_sigpipe_stays_ignored() {
    assert_sigpipe_kept(sigpipe_ignored, true);
}

/// The Rust runtime ignores SIGPIPE before main; the command must not
/// inherit that.
#[test]
fn default_sigpipe_stays_default() {
    assert_sigpipe_kept(sigpipe_default, false);
}

/// In fork mode me-only blocks signals and resets SIGCHLD for itself; the
/// child must still get what me-only was started with.
#[test]
fn fork_mode_child_gets_the_original_signal_state() {
    let status = ["cat", "/proc/self/status"];
    for setup in [
        sigpipe_ignored,
        sigpipe_default,
        block_usr1_and_term,
        ignore_sigchld,
    ] {
        let (direct, wrapped) = direct_and_through_me_only_with(&["--fork"], &status, setup);
        for field in ["SigIgn", "SigBlk"] {
            assert_eq!(
                status_mask(&wrapped, field),
                status_mask(&direct, field),
                "{field}"
            );
        }
    }
}

fn ignore_sigchld() {
    // SAFETY: installs SIG_IGN, no handler.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.unwrap();
}

#[test]
fn signal_mask_is_inherited() {
    let (direct, wrapped) =
        direct_and_through_me_only(&["cat", "/proc/self/status"], block_usr1_and_term);
    let blocked = (1 << (libc::SIGUSR1 - 1)) | (1 << (libc::SIGTERM - 1));
    assert_eq!(
        status_mask(&direct, "SigBlk") & blocked,
        blocked,
        "set-up failed"
    );
    assert_eq!(
        status_mask(&wrapped, "SigBlk"),
        status_mask(&direct, "SigBlk")
    );
}

/// What a user sees of SIGPIPE: `yes | head -1` kills yes with SIGPIPE
/// (status 141 in bash) when SIGPIPE is default, and makes it fail with
/// EPIPE when the shell ignores SIGPIPE, with or without me-only.
#[test]
fn yes_into_head_ends_the_same_way_through_me_only() {
    let lock = unique_lock("yes");
    let status_of_yes = |trap: &str, wrapper: &str| {
        let script =
            format!("{trap} {wrapper} yes | head -n 1 >/dev/null; echo ${{PIPESTATUS[0]}}");
        let output = Command::new("bash").args(["-c", &script]).output().unwrap();
        text(&output.stdout)
    };
    let through_me_only = format!("{} {lock}", common::ME_ONLY);
    for (trap, direct_status) in [("", "141\n"), ("trap '' PIPE;", "1\n")] {
        assert_eq!(
            status_of_yes(trap, ""),
            direct_status,
            "set-up with {trap:?}"
        );
        assert_eq!(
            status_of_yes(trap, &through_me_only),
            direct_status,
            "with {trap:?}"
        );
    }
}

#[test]
fn cwd_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let expected = format!("{}\n", dir.path().canonicalize().unwrap().display());
    let output = me_only()
        .current_dir(dir.path())
        .args([&unique_lock("cwd"), "pwd", "-P"])
        .output()
        .unwrap();
    assert_eq!(text(&output.stdout), expected, "{output:?}");
}

#[test]
fn umask_is_kept() {
    let mut command = me_only();
    command.args([&unique_lock("umask"), "sh", "-c", "umask"]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert_eq!(text(&output.stdout), "0027\n", "{output:?}");
}

/// The environment reaches the command as given, byte for byte, with the
/// two ME_ONLY_ variables set (replacing stale ones from an outer run).
#[test]
fn environment_is_kept_plus_lock_variables() {
    let lock = unique_lock("environment");
    let odd_value = OsString::from_vec(b"\xff\xfe raw".to_vec());
    // With 96 descriptors inherited, the lock would rightly be on 99.
    let output = common::me_only_with_standard_descriptors()
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("JOB_MODE", "full nightly")
        .env("ODD", &odd_value)
        .env("ME_ONLY_LOCK", "stale")
        .env("ME_ONLY_FD", "99")
        .args([&lock, "env", "-0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let seen: BTreeSet<Vec<u8>> = output
        .stdout
        .split(|&byte| byte == 0)
        .filter(|entry| !entry.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let fd_entry = seen
        .iter()
        .find(|entry| entry.starts_with(b"ME_ONLY_FD="))
        .expect("ME_ONLY_FD is set")
        .clone();
    // When the lock was taken, in seconds since boot: `SECONDS.HH`.
    let locked_at_entry = seen
        .iter()
        .find(|entry| entry.starts_with(b"ME_ONLY_LOCKED_AT="))
        .expect("ME_ONLY_LOCKED_AT is set")
        .clone();
    let locked_at =
        String::from_utf8_lossy(&locked_at_entry["ME_ONLY_LOCKED_AT=".len()..]).into_owned();
    let (seconds, hundredths) = locked_at.split_once('.').expect("SECONDS.HH");
    assert!(
        seconds.parse::<u64>().is_ok() && hundredths.len() == 2 && hundredths.parse::<u8>().is_ok(),
        "{locked_at}"
    );
    let mut odd_entry = b"ODD=".to_vec();
    odd_entry.extend_from_slice(odd_value.as_encoded_bytes());
    let expected: BTreeSet<Vec<u8>> = [
        format!("PATH={}", std::env::var("PATH").unwrap()).into_bytes(),
        b"JOB_MODE=full nightly".to_vec(),
        odd_entry,
        format!("ME_ONLY_LOCK={lock}").into_bytes(),
        fd_entry.clone(),
        locked_at_entry,
    ]
    .into();
    assert_eq!(seen, expected);
    assert_ne!(fd_entry, b"ME_ONLY_FD=99");
}

/// A descriptor the parent passed down (fd 7 here) is still open in the
/// command, and usable.
#[test]
fn inherited_descriptors_are_kept() {
    let (mut read_end, write_end) = common::pipe();
    let write_fd = write_end.as_raw_fd();
    let mut command = me_only();
    command.args([&unique_lock("fds"), "sh", "-c", "echo through-fd-7 >&7"]);
    common::inherit_fd_as(&mut command, write_fd, 7);
    let status = command.status().unwrap();
    assert!(status.success());
    drop(write_end);
    let mut received = String::new();
    read_end.read_to_string(&mut received).unwrap();
    assert_eq!(received, "through-fd-7\n");
}

/// std opens /dev/null on a closed stdin before main; the command must find
/// stdin closed, as it would without me-only.
#[test]
fn closed_stdin_stays_closed() {
    fn close_stdin() {
        // SAFETY: close is async-signal-safe.
        unsafe { libc::close(0) };
    }
    let listing = "ls /proc/$$/fd; echo \"lock=$ME_ONLY_FD\"";
    let (direct, wrapped) = direct_and_through_me_only(&["sh", "-c", listing], close_stdin);
    let fds = |output: &Output| -> BTreeSet<String> {
        text(&output.stdout)
            .lines()
            .filter(|line| !line.starts_with("lock="))
            .map(str::to_owned)
            .collect()
    };
    let lock_fd = text(&wrapped.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("lock=").map(str::to_owned))
        .unwrap();
    assert!(
        !fds(&direct).contains("0"),
        "set-up failed: {:?}",
        fds(&direct)
    );
    let lock_fd_number: u32 = lock_fd.parse().unwrap();
    assert!(
        lock_fd_number > 2,
        "the lock took standard descriptor {lock_fd}"
    );
    let mut expected = fds(&direct);
    expected.insert(lock_fd);
    assert_eq!(fds(&wrapped), expected);
}
