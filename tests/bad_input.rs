//! Bad input gets its documented exit code and one clear line on stderr, and
//! the command never runs.

use crate::common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use assert_cmd::prelude::*;
use common::{me_only, one_error_line, text, unique_lock};

/// A command that leaves a trace if it ever runs.
struct Witness {
    dir: tempfile::TempDir,
}

impl Witness {
    fn new() -> Witness {
        Witness {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("ran")
    }

    /// `touch <witness>`, the words to put after LOCK.
    fn command(&self) -> Vec<OsString> {
        vec!["touch".into(), self.path().into()]
    }

    fn assert_not_run(&self) {
        assert!(!self.path().exists(), "the command ran despite bad input");
    }
}

/// Runs me-only with `args`, and asserts the exit code and one error line.
fn refused(args: &[OsString], code: i32) -> String {
    let output = me_only().args(args).output().unwrap();
    assert_refused(&output, code)
}

fn assert_refused(output: &Output, code: i32) -> String {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
    assert!(output.stdout.is_empty(), "stdout: {}", text(&output.stdout));
    one_error_line(&output.stderr)
}

fn words(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

fn with_witness(options: &[&str], witness: &Witness) -> Vec<OsString> {
    let mut args = words(options);
    args.extend(witness.command());
    args
}

#[test]
fn no_arguments_is_usage() {
    let line = refused(&[], 2);
    assert!(line.contains("<LOCK>"), "{line}");
}

#[test]
fn lock_without_command_is_usage() {
    let line = refused(&words(&["/tmp/a"]), 2);
    assert!(line.contains("<COMMAND>"), "{line}");
}

#[test]
fn unknown_option_is_usage() {
    let witness = Witness::new();
    let line = refused(&with_witness(&["--frobnicate", "/tmp/a"], &witness), 2);
    assert!(line.contains("--frobnicate"), "{line}");
    witness.assert_not_run();
}

#[test]
fn conflict_exit_code_out_of_range_is_usage() {
    let witness = Witness::new();
    for bad in ["256", "-1", "four", "99999999999999999999"] {
        let line = refused(&with_witness(&["-E", bad, "/tmp/a"], &witness), 2);
        // What is wrong with the value, not "unexpected argument '-1'".
        assert!(
            line.contains(&format!("'{bad}' is not an exit code (0-255)")),
            "{bad}: {line}"
        );
    }
    witness.assert_not_run();
}

#[test]
fn lock_name_longer_than_107_bytes_is_usage_not_truncated() {
    let witness = Witness::new();
    let prefix = unique_lock("long");
    let long = format!("{prefix}{}", "x".repeat(108 - prefix.len()));
    let line = refused(&with_witness(&[&long], &witness), 2);
    assert!(line.contains("108 bytes"), "{line}");
    witness.assert_not_run();

    // 107 bytes is the kernel's limit, and works.
    let longest = &long[..107];
    me_only().args([longest, "true"]).output().unwrap();
    let status = me_only().args([longest, "true"]).status().unwrap();
    assert!(status.success());
}

#[test]
fn empty_lock_name_is_usage() {
    let witness = Witness::new();
    let line = refused(&with_witness(&[""], &witness), 2);
    assert!(line.contains("empty"), "{line}");
    witness.assert_not_run();
}

#[test]
fn bad_ports_are_usage() {
    let witness = Witness::new();
    for port in [
        "0",
        "65536",
        "99999",
        "http",
        "",
        "127.0.0.1:",
        "127.0.0.1:0",
    ] {
        let line = refused(&with_witness(&["--tcp", port], &witness), 2);
        assert!(line.contains("not a port number"), "{port}: {line}");
    }
    witness.assert_not_run();
}

#[test]
fn non_loopback_addresses_are_usage() {
    let witness = Witness::new();
    for address in [
        "10.0.0.1:5000",
        "0.0.0.0:5000",
        "192.168.1.1:80",
        "localhost:80",
        "::1:80",
    ] {
        let line = refused(&with_witness(&["--tcp", address], &witness), 2);
        assert!(line.contains("not an IPv4 loopback"), "{address}: {line}");
    }
    witness.assert_not_run();
}

#[test]
fn missing_command_exits_1_naming_it() {
    let lock = unique_lock("missing");
    let line = refused(&words(&[&lock, "no-such-command-here"]), 1);
    assert_eq!(
        line,
        format!("me-only: {lock}: no-such-command-here: command not found\n")
    );
    let line = refused(&words(&[&lock, "/nonexistent/bin/job"]), 1);
    assert!(
        line.contains("/nonexistent/bin/job: command not found"),
        "{line}"
    );
}

#[test]
fn non_executable_command_exits_1() {
    let lock = unique_lock("not-executable");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = refused(&[lock.clone().into(), script.clone().into()], 1);
    assert_eq!(
        line,
        format!(
            "me-only: {lock}: cannot run {}: Permission denied\n",
            script.display()
        )
    );
}

#[test]
fn directory_as_command_exits_1() {
    let lock = unique_lock("directory");
    let dir = tempfile::tempdir().unwrap();
    let line = refused(&[lock.clone().into(), dir.path().into()], 1);
    assert_eq!(
        line,
        format!(
            "me-only: {lock}: {}: is a directory\n",
            dir.path().display()
        )
    );
}

#[test]
fn failed_exec_does_not_keep_the_lock() {
    let lock = unique_lock("failed-exec");
    refused(&words(&[&lock, "no-such-command-here"]), 1);
    let status = me_only().args([&lock, "true"]).status().unwrap();
    assert!(status.success());
}

/// A bind refused for a reason other than "in use" is a lock error (3): a
/// port below 1024 for a user without the privilege.
#[test]
fn privileged_port_as_unprivileged_user_is_lock_error_3() {
    let port = 1;
    let unprivileged_start: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .map(|text| text.trim().parse().unwrap())
            .unwrap_or(1024);
    if unprivileged_start <= port {
        common::skip(&format!(
            "every port is unprivileged here (ip_unprivileged_port_start = {unprivileged_start})"
        ));
        return;
    }
    let witness = Witness::new();
    std::fs::set_permissions(witness.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Root may bind anything: run as nobody to see the refusal.
    let (_copy, mut command) = if nix::unistd::geteuid().is_root() {
        common::me_only_as_user(65534)
    } else {
        (tempfile::tempdir().unwrap(), me_only())
    };
    command
        .args(["--tcp", &format!("127.0.0.1:{port}")])
        .args(witness.command());
    let line = assert_refused(&command.output().unwrap(), 3);
    assert_eq!(
        line,
        format!("me-only: 127.0.0.1:{port}: cannot bind: Permission denied\n")
    );
    witness.assert_not_run();
}

/// A broken stderr must not turn a conflict into a panic (exit 101).
#[test]
fn broken_stderr_does_not_panic() {
    let lock = unique_lock("broken-stderr");
    let _holder = common::Holding::start([&lock]);
    let mut child = me_only()
        .args([&lock, "true"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(4));
}

#[test]
fn version_and_help_with_closed_stdout_do_not_panic() {
    for flag in ["--version", "--help"] {
        let mut child = me_only()
            .arg(flag)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{flag}: {output:?}");
        assert!(output.stderr.is_empty(), "{flag}: {}", text(&output.stderr));
    }
}

#[test]
fn incompatible_modes_are_usage() {
    let witness = Witness::new();
    for options in [
        ["--test", "--fork"],
        ["--test", "--wait"],
        ["-t", "--timeout=1"],
    ] {
        let mut args = words(&options);
        args.push("/tmp/a".into());
        args.extend(witness.command());
        let line = refused(&args, 2);
        assert!(line.contains("cannot be used with"), "{options:?}: {line}");
    }
    witness.assert_not_run();
}

#[test]
fn bad_timeouts_are_usage() {
    let witness = Witness::new();
    for timeout in ["soon", "-1", "nan", "inf", "1e400"] {
        let line = refused(
            &with_witness(&["--timeout", timeout, "/tmp/a"], &witness),
            2,
        );
        assert!(line.contains(timeout), "{timeout}: {line}");
    }
    let line = refused(&with_witness(&["--timeout", "-1", "/tmp/a"], &witness), 2);
    assert!(line.contains("'-1' is negative"), "{line}");
    let line = refused(&with_witness(&["--timeout", "1e20", "/tmp/a"], &witness), 2);
    assert!(line.contains("'1e20' is too large"), "{line}");
    witness.assert_not_run();
}

/// A timeout beyond what the clock can count to (1e19 s panicked on an
/// Instant overflow) is a wait without end.
#[test]
fn a_huge_timeout_waits_without_end() {
    let lock = unique_lock("huge-timeout");
    me_only()
        .args(["--timeout", "1e19", &lock, "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n")
        .stderr("");
    let holder = common::Holding::start([&lock]);
    let waiter =
        common::spawn_waiting(me_only().args(["-v", "--timeout", "1e19", &lock, "echo", "ran"]));
    assert!(holder.release().success());
    let output = waiter.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "ran\n");
}

/// Every option that takes SECS: a number past what a Duration holds, or
/// none at all, is a usage error; one the clock cannot count to (1e19 s)
/// is no end, and never a panic.
#[test]
fn huge_and_non_numbers_of_seconds_never_panic() {
    let witness = Witness::new();
    for option in ["--timeout", "--max-time", "--replace-older", "--kill-after"] {
        for bad in ["nan", "inf", "1e400", "1e20"] {
            let line = refused(
                &with_witness(&[option, bad, &unique_lock("bad-secs")], &witness),
                2,
            );
            assert!(line.contains(&format!("'{bad}'")), "{option} {bad}: {line}");
        }
        let lock = unique_lock("huge-secs");
        me_only()
            .args([option, "1e19", &lock, "echo", "ran"])
            .assert()
            .success()
            .stdout("ran\n")
            .stderr("");
    }
    // A holder is never 1e19 s old: a conflict, as without --replace.
    let lock = unique_lock("huge-replace-older");
    let holder = common::Holding::start([&lock]);
    let line = refused(
        &with_witness(&["--replace-older", "1e19", &lock], &witness),
        4,
    );
    assert!(
        line.contains(&format!("held by pid {}", holder.pid)),
        "{line}"
    );
    // --ttl is whole seconds, a day at most.
    let line = refused(
        &with_witness(
            &["--etcd", "http://127.0.0.1:9", "--ttl", "1e19", &lock],
            &witness,
        ),
        2,
    );
    assert!(line.contains("'1e19'"), "{line}");
    witness.assert_not_run();
}

/// --signal takes a signal's name (with or without SIG, in any case) or
/// number, as timeout(1) does; anything else is a usage error.
#[test]
fn bad_signals_are_usage() {
    let witness = Witness::new();
    for bad in ["FOO", "SIG", "SIGTERMS", "0", "65", "1.5", ""] {
        let line = refused(
            &with_witness(
                &[
                    "--max-time",
                    "5",
                    "--signal",
                    bad,
                    &unique_lock("bad-signal"),
                ],
                &witness,
            ),
            2,
        );
        assert!(
            line.contains(&format!("'{bad}' is not a signal")),
            "{bad}: {line}"
        );
    }
    witness.assert_not_run();
}

/// Every error is one line, even when LOCK or COMMAND holds a newline or
/// another control character: they are shown escaped.
#[test]
fn names_with_newlines_still_give_one_line() {
    let lock = format!("{}\nsecond line", unique_lock("newline"));
    let shown = lock.replace('\n', "\\n");
    let line = refused(&words(&[&lock, "no-such\ncommand\r"]), 1);
    assert_eq!(
        line,
        format!("me-only: {shown}: no-such\\ncommand\\r: command not found\n")
    );
    let holder = common::Holding::start([&lock]);
    let line = refused(&words(&[&lock, "true"]), 4);
    assert!(
        line.starts_with(&format!(
            "me-only: {shown}: already held by pid {} ",
            holder.pid
        )),
        "{line}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no\ndir").join("lock");
    let line = refused(
        &[
            OsString::from("--flock"),
            file.clone().into(),
            "true".into(),
        ],
        3,
    );
    assert!(line.contains("no\\ndir/lock: cannot open"), "{line}");
}
