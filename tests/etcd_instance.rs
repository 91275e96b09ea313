//! `--etcd` holds its lock as a kernel lock is held (SPEC 7): until every
//! process of the instance, COMMAND and what it started that keeps
//! ME_ONLY_FD, has exited or closed that descriptor; and a fence stops all
//! of them, and no one else. Each test starts its own etcd on loopback.
#![cfg(feature = "etcd")]

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use assert_cmd::prelude::*;
use common::etcd::*;
use common::{Detached, KillOnDrop, gone_within, inherit_fd_as, pipe, refused, spawn_piped};
use nix::sys::signal::{Signal, kill};

/// The descriptor on which COMMAND's children wait for the test's word to
/// end (the end of file of a pipe the test holds the write end of).
const RELEASE_FD: i32 = 5;

/// COMMAND: a background child that keeps every descriptor, ME_ONLY_FD
/// included, and outlives COMMAND until the test lets it go.
const KEEPS_THE_FD: &str = "sh -c 'echo child $$; exec cat <&5 >/dev/null' & echo command $$";

/// COMMAND: a background child that closes ME_ONLY_FD first. (Where
/// ME_ONLY_FD is not set, COMMAND says nothing and fails, rather than
/// close its stdout.)
const CLOSES_THE_FD: &str = ": ${ME_ONLY_FD:?}; sh -c 'eval \"exec $ME_ONLY_FD>&-\"; echo child $$; \
                             exec cat <&5 >/dev/null' & echo command $$";

/// COMMAND: a daemon (double-forked into a session of its own, so no child
/// of COMMAND's) that keeps ME_ONLY_FD and says when SIGTERM reaches it;
/// and one that closed ME_ONLY_FD first, which is not of the instance. The
/// daemon gives up after 20 s, so that a fence that never comes fails the
/// test (its stdout ends) rather than hanging it.
const DAEMONS: &str = ": ${ME_ONLY_FD:?}; (setsid sh -c 'trap \"echo daemon-terminated; exit 0\" TERM; \
                       echo daemon $$; for i in $(seq 20); do sleep 1 & wait $!; done' &); \
                       (setsid sh -c 'eval \"exec $ME_ONLY_FD>&-\"; echo bystander $$; \
                       exec sleep 1000 >/dev/null' &)";

/// The ways a launch runs COMMAND: exec, and as a supervisor.
const MODES: [&[&str]; 3] = [&[], &["--fork"], &["--max-time", "60"]];

/// A launch of `script` on `lock` in `mode`, its COMMAND's children given
/// the read end of a pipe on RELEASE_FD: they run until the returned write
/// end is dropped.
fn launch(
    etcd: &Etcd,
    mode: &[&str],
    lock: &str,
    script: &str,
) -> (KillOnDrop, BufReader<ChildStdout>, std::fs::File) {
    let (release, release_write) = pipe();
    let mut command = on(etcd, &["--ttl", "3", "--kill-after", "1"]);
    command.args(mode).args([lock, "sh", "-c", script]);
    inherit_fd_as(&mut command, release.as_raw_fd(), RELEASE_FD);
    let (run, stdout) = spawn_piped(&mut command);
    (run, stdout, release_write)
}

/// The pids the processes of a launch said, `name PID` a line, by name,
/// once each of `names` has said its own.
fn pids_said(stdout: &mut impl BufRead, names: &[&str]) -> HashMap<String, i32> {
    let mut said = HashMap::new();
    while names.iter().any(|name| !said.contains_key(*name)) {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "ended: {said:?}");
        let (name, pid) = line.trim_end().split_once(' ').expect("NAME PID");
        said.insert(name.to_owned(), pid.parse().expect("a pid"));
    }
    said
}

/// Another launch on `lock` runs now, or within `wait` (a "0" is no wait).
fn a_launch_runs(etcd: &Etcd, lock: &str, wait: &str) {
    on(etcd, &["--timeout", wait, lock, "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
}

/// In every mode, a background child that keeps ME_ONLY_FD holds the lock
/// after COMMAND exits, until it exits too: with exec, the keeper gave the
/// lock back as COMMAND exited, and a second launch ran beside the child.
#[test]
fn a_background_child_that_keeps_me_only_fd_holds_the_etcd_lock() {
    let Some(etcd) = Etcd::start() else { return };
    for mode in MODES {
        let lock = lock_name("background-child");
        let (mut run, mut stdout, release) = launch(&etcd, mode, &lock, KEEPS_THE_FD);
        let said = pids_said(&mut stdout, &["child", "command"]);
        let child = Detached(said["child"]);
        assert!(
            gone_within(said["command"], Duration::from_secs(5)),
            "{mode:?}: COMMAND runs on"
        );
        refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4);
        drop(release);
        assert!(gone_within(child.0, Duration::from_secs(5)), "{mode:?}");
        a_launch_runs(&etcd, &lock, "5");
        assert!(run.0.wait().unwrap().success(), "{mode:?}");
    }
}

/// --max-time stops what COMMAND left running with COMMAND's tree, and the
/// lock goes with it; me-only exits with COMMAND's own status (it ended in
/// time).
#[test]
fn max_time_stops_a_background_child_and_lets_the_etcd_lock_go() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("max-time");
    let (mut run, mut stdout, _release) = launch(&etcd, &["--max-time", "1"], &lock, KEEPS_THE_FD);
    let said = pids_said(&mut stdout, &["child", "command"]);
    let child = Detached(said["child"]);
    assert!(
        gone_within(child.0, Duration::from_secs(5)),
        "the child runs on"
    );
    assert!(run.0.wait().unwrap().success());
    a_launch_runs(&etcd, &lock, "5");
}

/// A background child that closed ME_ONLY_FD is not of the instance: the
/// lock is free once COMMAND has exited, while the child runs on. (A
/// supervisor gives its COMMAND no ME_ONLY_FD, and holds the lock itself
/// until every child is gone, as with a kernel lock.)
#[test]
fn a_child_that_closes_me_only_fd_does_not_hold_the_etcd_lock() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("closed-fd");
    let (mut run, mut stdout, release) = launch(&etcd, &[], &lock, CLOSES_THE_FD);
    let said = pids_said(&mut stdout, &["child", "command"]);
    let child = Detached(said["child"]);
    assert!(run.0.wait().unwrap().success());
    a_launch_runs(&etcd, &lock, "3");
    assert!(
        !gone_within(child.0, Duration::ZERO),
        "the child was stopped"
    );
    drop(release);
}

/// A double-forked daemon that keeps ME_ONLY_FD holds the lock after
/// COMMAND exits, and is fenced off (SIGTERM) with the instance when the
/// lock key is deleted, or by the sentry when the keeper is killed (the
/// sentry ended with COMMAND); a daemon that closed ME_ONLY_FD, and a
/// process that was never of the instance, are not signalled.
#[test]
fn a_daemon_that_keeps_me_only_fd_holds_the_etcd_lock_and_is_fenced() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let outsider = KillOnDrop(
        Command::new("sleep")
            .arg("1000")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for fault in ["key deleted", "keeper killed"] {
        let lock = lock_name("daemon");
        let (mut run, mut stdout, _release) = launch(&etcd, &[], &lock, DAEMONS);
        let said = pids_said(&mut stdout, &["daemon", "bystander"]);
        let (daemon, bystander) = (Detached(said["daemon"]), Detached(said["bystander"]));
        assert!(run.0.wait().unwrap().success());
        refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4);
        let keeper = keeper_of(&lock).expect("a keeper runs");
        let sentry = sentry_of(&lock).expect("a sentry runs");
        match fault {
            "key deleted" => etcd.delete_keys_of(&lock),
            _ => kill(keeper, Signal::SIGKILL).unwrap(),
        }
        common::read_until_a_line_with(&mut stdout, "daemon-terminated");
        assert!(gone_within(daemon.0, Duration::from_secs(5)), "{fault}");
        for helper in [keeper, sentry] {
            assert!(
                gone_within(helper.as_raw(), Duration::from_secs(5)),
                "{fault}"
            );
        }
        assert!(
            !gone_within(bystander.0, Duration::ZERO),
            "{fault}: the daemon that closed ME_ONLY_FD was stopped"
        );
        assert!(
            !gone_within(outsider.0.id() as i32, Duration::ZERO),
            "{fault}: a process not of the instance was stopped"
        );
        a_launch_runs(&etcd, &lock, "0");
    }
}

/// A COMMAND that writes to ME_ONLY_FD (by mistake: `>&$ME_ONLY_FD`) is
/// told no (EAGAIN) once the pipe is full, as a kernel lock's descriptor
/// refuses a write, instead of hanging on a pipe nobody reads (found by
/// review).
#[test]
fn a_write_to_me_only_fd_does_not_hang() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("write-to-fd");
    let run = KillOnDrop(
        on(&etcd, &[&lock])
            .args([
                "sh",
                "-c",
                "head -c 1000000 /dev/zero >&$ME_ONLY_FD; echo done",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        gone_within(run.0.id() as i32, Duration::from_secs(10)),
        "a write to ME_ONLY_FD hangs"
    );
}
