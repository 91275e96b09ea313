//! The launcher end to end: the lock is taken, held by the command, and
//! refused to others with the conflict code.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use assert_cmd::prelude::*;
use common::{
    Holding, me_only, me_only_with_standard_descriptors, one_error_line, text, unique_lock,
    wait_until_gone,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn command_runs_and_its_exit_status_is_mine() {
    let lock = unique_lock("status");
    me_only()
        .args([&lock, "sh", "-c", "echo out; echo err >&2; exit 7"])
        .assert()
        .code(7)
        .stdout("out\n")
        .stderr("err\n");
}

#[test]
fn held_lock_exits_4_naming_the_holder_and_runs_nothing() {
    let lock = unique_lock("busy");
    let holder = Holding::start([&lock]);
    let witness = tempfile::tempdir().unwrap();
    let ran = witness.path().join("ran");
    let output = me_only()
        .arg(&lock)
        .arg("touch")
        .arg(&ran)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let uid = nix::unistd::getuid();
    assert_eq!(
        one_error_line(&output.stderr),
        format!(
            "me-only: {lock}: already held by pid {} (uid {uid})\n",
            holder.pid
        )
    );
    assert!(output.stdout.is_empty());
    assert!(!ran.exists(), "the command ran without the lock");
    assert!(holder.release().success());
}

#[test]
fn conflict_exit_code_option_changes_only_the_conflict_code() {
    let lock = unique_lock("conflict-code");
    let _holder = Holding::start([&lock]);
    me_only()
        .args(["-E", "75", &lock, "true"])
        .assert()
        .code(75);
    me_only()
        .args(["--conflict-exit-code", "0", &lock, "true"])
        .assert()
        .code(0);
    let free = unique_lock("conflict-code-free");
    me_only()
        .args(["-E", "75", &free, "sh", "-c", "exit 3"])
        .assert()
        .code(3);
}

#[test]
fn quiet_says_nothing_when_held_but_still_exits_4() {
    let lock = unique_lock("quiet");
    let _holder = Holding::start([&lock]);
    me_only()
        .args(["-q", &lock, "true"])
        .assert()
        .code(4)
        .stdout("")
        .stderr("");
    me_only()
        .args(["--quiet", &lock, "true"])
        .assert()
        .code(4)
        .stderr("");
}

#[test]
fn quiet_still_reports_errors_other_than_conflict() {
    let lock = unique_lock("quiet-errors");
    let output = me_only()
        .args(["-q", &lock, "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    one_error_line(&output.stderr);
}

#[test]
fn lock_is_free_again_once_the_holder_exits() {
    let lock = unique_lock("release");
    let holder = Holding::start([&lock]);
    me_only().args([&lock, "true"]).assert().code(4);
    assert!(holder.release().success());
    me_only().args([&lock, "true"]).assert().code(0);
}

#[test]
fn kill_9_of_the_holder_frees_the_lock_at_once() {
    let lock = unique_lock("kill-9");
    let holder = Holding::start([&lock]);
    me_only().args([&lock, "true"]).assert().code(4);
    holder.kill();
    me_only().args([&lock, "true"]).assert().code(0);
}

#[test]
fn command_keeps_me_onlys_pid() {
    let lock = unique_lock("pid");
    let (pid, stdout) = common::run_noting_pid(me_only().args([&lock, "sh", "-c", "echo $$"]));
    assert_eq!(stdout, format!("{pid}\n"));
}

/// The descriptor named by ME_ONLY_FD is open in the command and is the
/// listening socket bound to the lock's abstract name.
#[test]
fn command_holds_the_listening_lock_socket_on_me_only_fd() {
    let lock = unique_lock("fd");
    let output = me_only()
        .args([
            &lock,
            "sh",
            "-c",
            "echo \"$ME_ONLY_FD\"; readlink /proc/$$/fd/$ME_ONLY_FD; cat /proc/net/unix",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    let fd: u32 = lines
        .next()
        .unwrap()
        .parse()
        .expect("ME_ONLY_FD is a number");
    assert!(fd > 2, "the lock must not take a standard descriptor: {fd}");
    let inode = common::socket_inode(lines.next().unwrap());
    // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path;
    // flags 00010000 is a listening socket, abstract paths start with '@'.
    let fields = common::proc_net_row(lines, 6, inode);
    let entry = fields.join(" ");
    assert_eq!(fields[3], "00010000", "not listening: {entry}");
    assert_eq!(
        fields[7],
        format!("@{lock}"),
        "bound to the wrong name: {entry}"
    );
}

#[test]
fn command_learns_the_lock_from_me_only_lock() {
    let lock = unique_lock("env");
    me_only()
        .args([&lock, "sh", "-c", "printf %s \"$ME_ONLY_LOCK\""])
        .assert()
        .success()
        .stdout(lock);
}

/// An outer me-only's variables never reach an inner COMMAND as if they
/// were its own: an --etcd holder's ME_ONLY_FENCE, and its ME_ONLY_LOCK and
/// ME_ONLY_FD, are replaced or removed, in every mode.
#[test]
fn an_outer_me_onlys_variables_do_not_leak_into_command() {
    let lock = unique_lock("outer-env");
    let show = "printf '%s|%s|%s' \"${ME_ONLY_LOCK-unset}\" \"${ME_ONLY_FD-unset}\" \
                \"${ME_ONLY_FENCE-unset}\" >&2";
    for mode in [&[][..], &["--fork"], &["--detach"]] {
        // With other descriptors inherited (3 to 8), the lock would rightly be on 9.
        let output = me_only_with_standard_descriptors()
            .env("ME_ONLY_LOCK", "outer")
            .env("ME_ONLY_FD", "9")
            .env("ME_ONLY_FENCE", "1234")
            .args(mode)
            .args([&lock, "sh", "-c", show])
            .output()
            .unwrap();
        assert!(output.status.success(), "{mode:?}: {output:?}");
        let seen = text(&output.stderr);
        let (lock_seen, rest) = seen.split_once('|').unwrap();
        let (fd_seen, fence_seen) = rest.split_once('|').unwrap();
        assert_eq!(lock_seen, lock, "{mode:?}");
        assert_ne!(fd_seen, "9", "{mode:?}");
        assert_eq!(fence_seen, "unset", "{mode:?}");
    }
}

#[test]
fn arguments_after_command_pass_untouched() {
    let lock = unique_lock("args");
    me_only()
        .args([
            &lock, "printf", "%s\\n", "-l", "--all", "--", "-x", "-E", "9", "-q",
        ])
        .assert()
        .success()
        .stdout("-l\n--all\n--\n-x\n-E\n9\n-q\n");
}

#[test]
fn non_utf8_arguments_and_lock_names_pass_byte_for_byte() {
    let mut lock = unique_lock("bytes").into_bytes();
    lock.extend_from_slice(b"/\xff\xfe");
    let lock = OsStr::from_bytes(&lock);
    let argument = OsStr::from_bytes(b"caf\xe9\x80 \xff");
    let output = me_only()
        .arg(lock)
        .args(["sh", "-c", "printf '%s|%s' \"$1\" \"$ME_ONLY_LOCK\"", "sh"])
        .arg(argument)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let mut expected = argument.as_bytes().to_vec();
    expected.push(b'|');
    expected.extend_from_slice(lock.as_bytes());
    assert_eq!(output.stdout, expected);
}

#[test]
fn command_without_a_slash_is_found_on_path() {
    let lock = unique_lock("path");
    let bin = tempfile::tempdir().unwrap();
    let job = bin.path().join("nightly-job");
    fs::write(&job, "#!/bin/sh\necho \"job ran with $1\"\n").unwrap();
    fs::set_permissions(&job, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    me_only()
        .env("PATH", path)
        .args([&lock, "nightly-job", "--full"])
        .assert()
        .success()
        .stdout("job ran with --full\n");
}

/// Caveat: every process that inherits the descriptor keeps the lock, so a
/// command that leaves a child behind keeps it held after it exits itself.
#[test]
fn a_background_child_that_inherited_the_fd_keeps_the_lock() {
    let lock = unique_lock("inherited");
    let output = me_only()
        .args([&lock, "sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let background: i32 = text(&output.stdout).trim().parse().unwrap();
    me_only().args([&lock, "true"]).assert().code(4);
    kill(Pid::from_raw(background), Signal::SIGKILL).unwrap();
    wait_until_gone(background);
    me_only().args([&lock, "true"]).assert().code(0);
}

/// Caveat: a command that closes the lock descriptor loses the lock while
/// it still runs.
#[test]
fn a_command_that_closes_the_fd_loses_the_lock() {
    let lock = unique_lock("closed");
    let holder = Holding::with_script(
        [&lock],
        "eval \"exec $ME_ONLY_FD>&-\"; echo ready; exec cat",
    );
    me_only().args([&lock, "true"]).assert().code(0);
    assert!(holder.release().success());
}

#[test]
fn verbose_and_rust_log_print_diagnostics_on_stderr_only_when_asked() {
    let lock = unique_lock("verbose");
    let diagnostics = |options: &[&str], rust_log: Option<&str>| {
        let mut command = me_only_with_standard_descriptors();
        command
            .env_remove("RUST_LOG")
            .args(options)
            .args([&lock, "true"]);
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        text(&output.stderr)
    };
    let expected = format!("me-only: debug: {lock}: lock held on fd ");
    // Said as a person would: "on fd 3; exec true", not "fd Some(3)".
    let verbose = diagnostics(&["-v"], None);
    assert_eq!(
        verbose
            .strip_prefix(&expected)
            .and_then(|rest| rest.split_once(';')),
        Some(("3", " exec true\n")),
        "{verbose}"
    );
    assert!(diagnostics(&["--verbose"], None).starts_with(&expected));
    assert!(diagnostics(&[], Some("debug")).starts_with(&expected));
    assert_eq!(diagnostics(&[], None), "");
    assert_eq!(
        diagnostics(&["-v"], Some("warn")),
        "",
        "RUST_LOG refines -v"
    );
}

#[test]
fn version_and_help_print_on_stdout_and_exit_0() {
    me_only()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("me-only {}\n", env!("CARGO_PKG_VERSION")))
        .stderr("");
    let help = me_only().arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = text(&help.stdout);
    for expected in [
        "Usage: me-only [OPTIONS] <LOCK> <COMMAND> [ARGS]...\n       me-only --test [OPTIONS] <LOCK>\n       me-only --list [OPTIONS] [PREFIX]\n       me-only --auto [OPTIONS] <COMMAND> [ARGS]...",
        "EXIT STATUS:",
        "--conflict-exit-code",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
}

/// README's idiom for a script that locks itself: run by hand, from cron,
/// or as COMMAND of another lock, it runs again under me-only, and once at
/// a time. (It says nothing after `ready`: Holding stops reading there, and
/// a line more would end it with SIGPIPE.)
#[test]
fn a_script_that_locks_itself_runs_once_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let lock = common::unique_lock("script-locks-itself");
    let script = dir.path().join("job");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             [ \"${{ME_ONLY_LOCK:-}}\" = {lock} ] || exec me-only {lock} \"$0\" \"$@\"\n\
             echo ready; exec cat\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let binaries = std::path::Path::new(common::ME_ONLY).parent().unwrap();
    let path = format!("{}:/usr/bin:/bin", binaries.display());
    let mut first = std::process::Command::new(&script);
    first.args(["a", "b"]).env("PATH", &path);
    let first = Holding::spawn(first);
    // Started from another lock's COMMAND too, it is refused: it locks
    // itself, not trusting any ME_ONLY_LOCK.
    for outer in [None, Some(common::unique_lock("outer"))] {
        let mut second = match &outer {
            Some(outer) => {
                let mut command = me_only();
                command.arg(outer).arg(&script);
                command
            }
            None => std::process::Command::new(&script),
        };
        let refused = second.env("PATH", &path).output().unwrap();
        assert_eq!(refused.status.code(), Some(4), "{outer:?}: {refused:?}");
        assert!(text(&refused.stderr).contains(&format!("pid {}", first.pid)));
    }
    assert!(first.release().success());
}
