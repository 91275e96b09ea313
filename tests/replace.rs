//! --replace and --replace-older: the holder is stopped, then COMMAND runs.

use crate::common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use std::time::Duration;

use common::{Holding, each_kernel_lock, gone_within, me_only, refused, text, unique_lock};

/// Runs `me-only OPTIONS LOCK sh -c "echo ran"`, which must replace the
/// holder and run.
fn replaces_and_runs(options: &[&str], lock: &[String], backend: &str) {
    let output = me_only()
        .args(options)
        .args(lock)
        .args(["sh", "-c", "echo ran"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{backend}: {output:?}");
    assert_eq!(text(&output.stdout), "ran\n", "{backend}");
}

#[test]
fn the_holder_gets_sigterm_and_the_command_runs() {
    for (backend, lock, _dir) in each_kernel_lock("replace", 1) {
        let holder = Holding::start(&lock);
        replaces_and_runs(&["--replace"], &lock, backend);
        assert_eq!(
            holder.release().signal(),
            Some(15),
            "{backend}: the holder's end"
        );
    }
}

#[test]
fn a_holder_that_ignores_sigterm_is_killed_and_so_is_the_child_it_left_the_lock_to() {
    for (backend, lock, _dir) in each_kernel_lock("replace", 1) {
        let child_pid_file = tempfile::NamedTempFile::new().unwrap();
        // The child inherits the lock's descriptor and, from sh, the ignored
        // SIGTERM: once sh is killed, the child holds the lock.
        let script = format!(
            "trap '' TERM; sleep 1000 & echo $! > {}; echo ready; wait",
            child_pid_file.path().display()
        );
        let holder = Holding::with_script(&lock, &script);
        let child: i32 = std::fs::read_to_string(child_pid_file.path())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        replaces_and_runs(&["--replace", "--kill-after", "0.2"], &lock, backend);
        assert_eq!(
            holder.release().signal(),
            Some(9),
            "{backend}: the holder's end"
        );
        assert!(
            gone_within(child, Duration::from_secs(5)),
            "{backend}: the holder's child {child} runs on"
        );
    }
}

/// A --kill-after past what the clock can count to is "never SIGKILL"
/// (it panicked once SIGTERM was sent: the holder was stopped and nothing
/// ran).
#[test]
fn a_huge_kill_after_still_replaces_a_holder_that_exits_on_sigterm() {
    for (backend, lock, _dir) in each_kernel_lock("replace-huge", 1) {
        let holder = Holding::start(&lock);
        replaces_and_runs(&["--replace", "--kill-after", "1e19"], &lock, backend);
        assert_eq!(holder.release().signal(), Some(15), "{backend}");
    }
}

/// --signal, as timeout(1)'s: the first signal the holder gets (one that
/// traps USR1 says so, and exits), SIGKILL still after --kill-after.
#[test]
fn signal_is_what_the_holder_gets_first() {
    for (backend, lock, _dir) in each_kernel_lock("replace-signal", 1) {
        let (mut holder, mut said) = common::etcd::started(
            me_only()
                .args(&lock)
                .args([
                    "sh",
                    "-c",
                    "trap 'echo got USR1; exit 0' USR1; echo ready; read line",
                ])
                .stdin(Stdio::piped()),
        );
        let output = me_only()
            .args(["--replace", "--signal", "usr1"])
            .args(&lock)
            .args(["echo", "ran"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{backend}: {output:?}");
        assert_eq!(text(&output.stdout), "ran\n", "{backend}");
        let mut rest = String::new();
        said.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "got USR1\n", "{backend}");
        assert!(holder.wait().unwrap().success(), "{backend}");
    }
}

#[test]
fn replace_older_leaves_a_younger_holder_alone_and_stops_an_older_one() {
    for (backend, lock, _dir) in each_kernel_lock("replace", 1) {
        let holder = Holding::start(&lock);
        let message = refused(
            me_only()
                .args(["--replace-older", "3600"])
                .args(&lock)
                .args(["echo", "ran"]),
            4,
        );
        assert!(
            message.contains(&format!("held by pid {}", holder.pid)),
            "{backend}: {message}"
        );
        let output = me_only()
            .args(["--replace-older", "0"])
            .args(&lock)
            .args(["echo", "ran"])
            .output()
            .unwrap();
        assert_eq!(text(&output.stdout), "ran\n", "{backend}: {output:?}");
        assert_eq!(holder.release().signal(), Some(15), "{backend}");
    }
}

#[test]
fn a_holder_that_may_not_be_signalled_is_a_conflict_and_keeps_running() {
    if !common::root_or_skip("run the replacer as another user than the holder") {
        return;
    }
    let lock = unique_lock("replace-eperm");
    let holder = Holding::start([&lock]);
    let (_dir, mut replacer) = common::me_only_as_user(65534);
    let message = refused(replacer.args(["--replace", &lock, "echo", "ran"]), 4);
    assert!(
        message.contains(&format!("held by pid {} (uid 0)", holder.pid))
            && message.contains("not permitted"),
        "{message}"
    );
    let (_dir, mut replacer) = common::me_only_as_user(65534);
    let status = replacer
        .args(["--replace", "-E", "75", &lock, "true"])
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(75),
        "-E applies to a refused replacement"
    );
    assert!(holder.release().success(), "the holder was stopped");
}

#[test]
fn a_free_lock_just_runs() {
    let output = me_only()
        .args(["--replace", &unique_lock("replace-free"), "echo", "ran"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "ran\n");
}

#[test]
fn replace_options_that_make_no_sense_are_usage_errors() {
    let lock = unique_lock("replace-usage");
    for words in [
        &["--replace", "--test", &lock][..],
        &["--replace-older", "5", "--test", &lock],
        &["--replace", "--replace-older", "5", &lock, "true"],
        &["--replace-older", "-1", &lock, "true"],
        &["--replace-older", "soon", &lock, "true"],
        &["--kill-after", "-1", &lock, "true"],
    ] {
        refused(me_only().args(words), 2);
    }
}

/// With --etcd the holder may run anywhere: its keeper is asked, through
/// its key, to stop it, and the replacer waits in line meanwhile, so the
/// two never run at once.
#[cfg(feature = "etcd")]
#[test]
fn an_etcd_holder_is_stopped_by_its_keeper_and_the_replacer_runs_after_it() {
    use common::etcd::{Etcd, fenced_holder, lock_name, on};
    use std::io::{BufRead, Read};

    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("replace");
    let (mut holder, mut said) = fenced_holder(&etcd, &lock, "2");
    // A younger holder is left alone by --replace-older.
    let line = refused(
        &mut on(&etcd, &["--replace-older", "3600", &lock, "echo", "ran"]),
        4,
    );
    assert!(line.contains("already held by pid"), "{line}");
    let (mut replacer, mut ran) = common::etcd::started(&mut on(
        &etcd,
        &[
            "--replace-older",
            "0",
            "--ttl",
            "2",
            &lock,
            "sh",
            "-c",
            "echo ready; echo ran",
        ],
    ));
    // The replacer's COMMAND runs only once the holder has let go: by then
    // the holder was told to stop, and has exited.
    assert!(
        holder.try_wait().unwrap().is_some(),
        "the replacer runs beside the holder"
    );
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    assert_eq!(line, "terminated\n");
    let mut stderr = String::new();
    holder
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("replaced (another instance ran me-only --replace)"),
        "{stderr}"
    );
    let mut line = String::new();
    ran.read_line(&mut line).unwrap();
    assert_eq!(line, "ran\n");
    assert!(replacer.wait().unwrap().success());
}
