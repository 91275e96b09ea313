//! --max-time: a run that holds the lock too long is stopped, with all it
//! started, and me-only exits 124.

use crate::common;

use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

use common::{each_kernel_lock, first_line, gone_within, me_only, refused, spawn_piped, text};

/// Asserts that the process whose pid COMMAND wrote to `pid_file` (one it
/// started in the background) is gone.
fn assert_background_gone(pid_file: &std::path::Path, context: &str) {
    let background: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        gone_within(background, Duration::from_secs(5)),
        "{context}: what COMMAND started in the background runs on"
    );
}

#[test]
fn a_run_past_its_time_is_stopped_with_what_it_started_and_exits_124() {
    for (backend, lock, _dir) in each_kernel_lock("max-time", 1) {
        let pid_file = tempfile::NamedTempFile::new().unwrap();
        let script = format!(
            "sleep 1000 & echo $! > {}; echo started; wait",
            pid_file.path().display()
        );
        let started = Instant::now();
        let output = me_only()
            .args(["--max-time", "0.3"])
            .args(&lock)
            .args(["sh", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(124), "{backend}: {output:?}");
        assert!(started.elapsed() >= Duration::from_millis(300), "{backend}");
        assert_eq!(text(&output.stdout), "started\n", "{backend}");
        assert_background_gone(pid_file.path(), backend);
        // The lock is free again.
        let output = me_only().arg("--test").args(&lock).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{backend}: {output:?}");
    }
}

#[test]
fn a_run_that_ignores_sigterm_is_killed_after_kill_after() {
    let lock = common::unique_lock("max-time-kill");
    let (mut run, line) = first_line(
        me_only()
            .args(["--max-time", "0.2", "--kill-after", "0.2", &lock])
            .args([
                "sh",
                "-c",
                "trap '' TERM; echo started; while :; do :; done",
            ]),
    );
    assert_eq!(line, "started\n");
    let started = Instant::now();
    assert_eq!(run.0.wait().unwrap().code(), Some(124));
    // Well before the default --kill-after of 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A --kill-after past what the clock can count to is "never SIGKILL"
/// (it panicked once SIGTERM was sent, and what COMMAND started ran on
/// without the lock).
#[test]
fn a_huge_kill_after_still_stops_a_run_that_exits_on_sigterm() {
    let lock = common::unique_lock("max-time-huge-kill-after");
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "sleep 1000 & echo $! > {}; echo started; wait",
        pid_file.path().display()
    );
    let output = me_only()
        .args(["--max-time", "0.3", "--kill-after", "1e19", &lock])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(124), "{output:?}");
    assert_eq!(text(&output.stdout), "started\n");
    assert!(output.stderr.is_empty(), "{output:?}");
    assert_background_gone(pid_file.path(), "--kill-after 1e19");
}

#[test]
fn a_run_within_its_time_ends_as_it_would_without_it() {
    let lock = common::unique_lock("max-time-in-time");
    let output = me_only()
        .args(["--max-time", "60", &lock])
        .args(["sh", "-c", "echo $ME_ONLY_LOCK; exit 7"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    assert_eq!(text(&output.stdout), format!("{lock}\n"));
    // A limit the clock cannot count to is no limit.
    let output = me_only()
        .args(["--max-time", "1e19", &lock, "true"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// timeout(1)'s convention: 0 is no limit (it killed every run at once,
/// so a cron line's `--max-time ${LIMIT:-0}` ran nothing to its end).
#[test]
fn max_time_0_is_no_limit() {
    let lock = common::unique_lock("max-time-0");
    let (mut run, mut stdout) = spawn_piped(me_only().args(["--max-time", "0", &lock]).args([
        "sh",
        "-c",
        "echo started; read line; echo \"$line\"; exit 7",
    ]));
    let mut said = String::new();
    stdout.read_line(&mut said).unwrap();
    assert_eq!(said, "started\n");
    // It ends only once told to, so a run stopped at once cannot pass.
    writeln!(run.0.stdin.take().unwrap(), "finished").unwrap();
    stdout.read_to_string(&mut said).unwrap();
    assert_eq!(said, "started\nfinished\n");
    assert_eq!(run.0.wait().unwrap().code(), Some(7));
}

/// --signal, as timeout(1)'s: the first signal a run past its time gets
/// (a COMMAND that traps INT says so), SIGKILL still after --kill-after.
#[test]
fn signal_is_what_a_run_past_its_time_gets_first() {
    for name in ["INT", "sigint", "2"] {
        let lock = common::unique_lock("max-time-signal");
        let mut command = me_only();
        command
            .args(["--max-time", "0.2", "--signal", name, &lock])
            .args([
                "sh",
                "-c",
                "trap 'echo got INT; exit 3' INT; echo started; read line",
            ]);
        // A suite started in the background (as it was beside other runs)
        // ignores INT: the trap would not take, and only SIGKILL end it.
        common::default_disposition_of(&mut command, &[nix::libc::SIGINT]);
        let (mut run, mut stdout) = spawn_piped(&mut command);
        let mut said = String::new();
        stdout.read_to_string(&mut said).unwrap();
        assert_eq!(said, "started\ngot INT\n", "--signal {name}");
        assert_eq!(run.0.wait().unwrap().code(), Some(124), "{name}");
    }
}

#[test]
fn max_time_holds_the_lock_in_me_only_as_fork_does() {
    let lock = common::unique_lock("max-time-holder");
    let (mut run, line) = first_line(me_only().args(["--max-time", "60", &lock]).args([
        "sh",
        "-c",
        "readlink /proc/$$/fd/$ME_ONLY_FD; eval \"exec $ME_ONLY_FD>&-\"; exec cat",
    ]));
    // Shared with the child, which closes it: me-only still holds the lock.
    assert!(line.starts_with("socket:"), "{line}");
    let output = me_only().args(["--test", &lock]).output().unwrap();
    assert_eq!(text(&output.stdout), format!("{}\n", run.0.id()));
    drop(run.0.stdin.take());
    assert!(run.0.wait().unwrap().success());
}

#[test]
fn bad_max_times_are_usage_errors() {
    let lock = common::unique_lock("max-time-bad");
    for (words, message) in [
        (&["--max-time", "-1"][..], "'-1' is negative"),
        (&["--max-time", "soon"], "'soon' is not a number of seconds"),
        (&["--max-time", "1e20"], "too large"),
        (&["--max-time", "1", "--detach"], "cannot be used with"),
    ] {
        let line = refused(me_only().args(words).args([&lock, "echo", "ran"]), 2);
        assert!(line.contains(message), "{words:?}: {line}");
    }
    let line = refused(me_only().args(["--max-time", "1", "--test", &lock]), 2);
    assert!(line.contains("cannot be used with"), "{line}");
}

/// With --etcd: me-only keeps the time as the holder its keeper watches,
/// and the lock is let go once the capped run is stopped.
#[cfg(feature = "etcd")]
#[test]
fn an_etcd_run_past_its_time_is_stopped_and_lets_go() {
    use common::etcd::{Etcd, lock_name, on};

    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("max-time");
    let output = on(
        &etcd,
        &["--max-time", "0.3", "--ttl", "30", &lock, "sleep", "30"],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(124), "{output:?}");
    // Let go by the keeper as the run ends, not after the 30 s TTL.
    let output = on(&etcd, &["--timeout", "10", &lock, "true"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}
