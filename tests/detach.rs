//! `--detach`: COMMAND runs in the background holding the lock; me-only
//! prints its pid and exits 0 once it runs, or reports why it could not.

use crate::common;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use assert_cmd::prelude::*;
use common::{Detached, free_port, me_only, one_error_line, text, unique_lock};

/// Runs a `me-only --detach ...` to its end, as `pid=$(me-only -d ...)`
/// would: stdout is read to its end, so this returning at all shows that
/// the background command does not hold it. stderr, which the command keeps
/// (as a shell's `$(...)` leaves it), goes to a file.
fn run_detaching(command: &mut Command) -> Output {
    let mut stderr = tempfile::tempfile().unwrap();
    let child = command
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut output = child.wait_with_output().unwrap();
    stderr.seek(SeekFrom::Start(0)).unwrap();
    stderr.read_to_end(&mut output.stderr).unwrap();
    output
}

/// Runs `me-only --detach <lock_args> <command...>` and returns the pid it
/// printed.
fn detach(lock_args: &[&str], command: &[&str]) -> Detached {
    let output = run_detaching(me_only().arg("--detach").args(lock_args).args(command));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    Detached(stdout.trim().parse().expect("a pid alone on one line"))
}

fn field_of_stat(pid: i32, index: usize) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // pid (comm) state ppid pgrp session ...: split after the comm's ')'.
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(index - 2).unwrap().to_owned()
}

/// The background command holds the lock (its own descriptor, in its own
/// session, stdin and stdout on /dev/null), for every backend; killing it
/// frees the lock.
#[test]
fn detach_returns_the_pid_of_a_running_command_that_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lock").display().to_string();
    let abstract_lock = unique_lock("detach");
    let tcp_lock = format!("127.0.0.1:{}", free_port());
    for lock_args in [
        vec![abstract_lock.as_str()],
        vec!["--tcp", &tcp_lock],
        vec!["--flock", &file],
    ] {
        let lock = *lock_args.last().unwrap();
        let command = detach(&lock_args, &["sleep", "1000"]);
        let pid = command.0;
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap(),
            "sleep\x001000\x00"
        );
        // Its own session, and so its own process group.
        assert_eq!(field_of_stat(pid, 5), pid.to_string(), "session");
        assert_eq!(field_of_stat(pid, 4), pid.to_string(), "process group");
        for fd in [0, 1] {
            let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
            assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
        }
        let environment = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environment = text(&environment);
        assert!(
            environment
                .split('\0')
                .any(|var| var == format!("ME_ONLY_LOCK={lock}")),
            "{environment}"
        );
        let lock_fd = environment
            .split('\0')
            .find_map(|var| var.strip_prefix("ME_ONLY_FD="))
            .expect("ME_ONLY_FD is set");
        assert!(
            std::fs::read_link(format!("/proc/{pid}/fd/{lock_fd}")).is_ok(),
            "ME_ONLY_FD={lock_fd} is not open in the command"
        );
        let output = me_only().args(&lock_args).arg("true").output().unwrap();
        assert_eq!(output.status.code(), Some(4), "{lock_args:?}: {output:?}");
        assert_eq!(
            one_error_line(&output.stderr),
            format!(
                "me-only: {lock}: already held by pid {pid} (uid {})\n",
                nix::unistd::getuid()
            )
        );
        me_only()
            .arg("--test")
            .args(&lock_args)
            .assert()
            .code(4)
            .stdout(format!("{pid}\n"));
        drop(command);
        me_only().args(&lock_args).arg("true").assert().success();
    }
}

#[test]
fn detach_reports_a_missing_command_with_exit_1() {
    let lock = unique_lock("detach-missing");
    let output = run_detaching(me_only().args(["--detach", &lock, "no-such-command-here"]));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "a pid was printed: {output:?}");
    assert_eq!(
        one_error_line(&output.stderr),
        format!("me-only: {lock}: no-such-command-here: command not found\n")
    );
    me_only().args(["--test", &lock]).assert().code(0);
}

#[test]
fn detach_on_a_held_lock_starts_nothing() {
    let lock = unique_lock("detach-held");
    let holder = detach(&[&lock], &["sleep", "1000"]);
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("ran");
    let output = run_detaching(me_only().args(["--detach", &lock, "touch"]).arg(&witness));
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(output.stdout.is_empty());
    assert!(!witness.exists(), "the command ran without the lock");
    drop(holder);
}

/// With --wait, --detach returns once the lock is free and the command
/// runs.
#[test]
fn detach_waits_for_the_lock_when_asked() {
    let lock = unique_lock("detach-wait");
    let first = detach(&[&lock], &["sleep", "1000"]);
    // Once it says it waits, the holder goes.
    let waiter =
        common::spawn_waiting(me_only().args(["-v", "--detach", "--wait", &lock, "sleep", "1000"]));
    drop(first);
    let output = waiter.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let second = Detached(text(&output.stdout).trim().parse().unwrap());
    me_only()
        .args(["--test", &lock])
        .assert()
        .code(4)
        .stdout(format!("{}\n", second.0));
}

/// Started with stdin and stdout closed (as some supervisors and cron
/// set-ups do), COMMAND still gets /dev/null on both, so that the next
/// file it opens does not become its stdin or stdout.
#[test]
fn detach_gives_dev_null_for_closed_stdin_and_stdout() {
    use std::os::unix::process::CommandExt;

    let lock = unique_lock("detach-closed");
    let mut command = me_only();
    command
        .args([
            "--detach",
            &lock,
            "find",
            "/proc/self/fd/",
            "-mindepth",
            "1",
        ])
        .args(["-name", "[01]", "-fprintf", "/dev/stderr", "%f %l\n"])
        .stderr(Stdio::piped());
    // SAFETY: close is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::libc::close(0);
            nix::libc::close(1);
            Ok(())
        });
    }
    // stderr is read to its end: until the background command exits.
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = text(&output.stderr);
    let mut seen: Vec<&str> = stderr.lines().collect();
    seen.sort();
    assert_eq!(seen, ["0 /dev/null", "1 /dev/null"]);
}
