//! Exactly one: of many simultaneous launches on one lock, exactly one runs
//! its command and every other exits with the conflict code.
//!
//! Synchronised on events only: a start pipe releases all launchers at once,
//! exits are reported by waiter threads, the winner announces itself on a
//! pipe and holds the lock until the test closes its stdin.

use crate::common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{ME_ONLY, free_port, inherit_fd_as, unique_lock};

const LAUNCHES: usize = 200;
const ROUNDS: usize = 5;
/// Only a failing test waits this long: it means a launch never ended.
const FAILURE_DEADLINE: Duration = Duration::from_secs(120);
/// The start pipe's read end in each launcher, until it execs me-only.
const START_FD: i32 = 9;

/// One round: LAUNCHES shells wait on the start pipe, then all exec
/// `me-only <lock_args> sh -c 'echo $$; exec cat'` at once. They share one
/// stderr, as instances started by cron share a log.
fn exactly_one_runs(lock_args: &[String], conflict_line: impl Fn(&str) -> bool) {
    let _heavy = common::one_heavy_at_a_time();
    // std's pipes are close-on-exec: no launcher of this or a parallel test
    // inherits an end it was not handed on purpose.
    let (start_read, mut start_write) = common::pipe();
    let (release_read, release_write) = common::pipe();
    let (mut ran, ran_write) = common::pipe();
    let (mut errors, errors_write) = common::pipe();

    let launch_script = format!("read _ <&{START_FD} && exec {START_FD}<&- \"$@\"");
    let pipes = LauncherPipes {
        start_read,
        release_read,
        ran_write,
        errors_write,
    };
    let children: Vec<Child> = (0..LAUNCHES)
        .map(|_| spawn_launcher(&launch_script, lock_args, &pipes))
        .collect();
    drop(pipes);
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        errors.read_to_string(&mut text).unwrap();
        text
    });
    let (exits, exit_codes) = mpsc::channel();
    for (index, mut child) in children.into_iter().enumerate() {
        let exits = exits.clone();
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || exits.send((index, child.wait().unwrap().code())).unwrap())
            .unwrap();
    }

    // Go: one line for each launcher's `read`.
    start_write.write_all(&b"\n".repeat(LAUNCHES)).unwrap();

    for conflicts in 0..LAUNCHES - 1 {
        let (index, code) = exit_codes
            .recv_timeout(FAILURE_DEADLINE)
            .unwrap_or_else(|_| {
                panic!(
                    "only {conflicts} launches ended while one held the lock; expected {}",
                    LAUNCHES - 1
                )
            });
        assert_eq!(
            code,
            Some(4),
            "launch {index} did not exit with the conflict code"
        );
    }
    drop(release_write);
    let (index, code) = exit_codes
        .recv_timeout(FAILURE_DEADLINE)
        .expect("the winner ends");
    assert_eq!(code, Some(0), "the winner, launch {index}, failed");

    let mut winners = String::new();
    ran.read_to_string(&mut winners).unwrap();
    assert_eq!(
        winners.lines().count(),
        1,
        "not exactly one command ran: {winners:?}"
    );
    let winner = winners.trim();
    let errors = errors.join().unwrap();
    assert_eq!(errors.lines().count(), LAUNCHES - 1, "{errors}");
    for line in errors.lines() {
        let reason = line
            .strip_prefix(&format!(
                "me-only: {}: already held by ",
                lock_args.last().unwrap()
            ))
            .unwrap_or_else(|| panic!("a garbled or unexpected line: {line:?}"));
        assert!(
            conflict_line(reason.replace(winner, "WINNER").as_str()),
            "{line:?}"
        );
    }
}

/// The ends of the round's pipes that each launcher gets.
struct LauncherPipes {
    start_read: File,
    release_read: File,
    ran_write: File,
    errors_write: File,
}

fn spawn_launcher(launch_script: &str, lock_args: &[String], pipes: &LauncherPipes) -> Child {
    let start_fd = pipes.start_read.as_raw_fd();
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", launch_script, "launcher", ME_ONLY])
        .args(lock_args)
        .args(["sh", "-c", "echo $$; exec cat"])
        .stdin(Stdio::from(pipes.release_read.try_clone().unwrap()))
        .stdout(Stdio::from(pipes.ran_write.try_clone().unwrap()))
        .stderr(Stdio::from(pipes.errors_write.try_clone().unwrap()));
    inherit_fd_as(&mut command, start_fd, START_FD);
    command.spawn().unwrap()
}

#[test]
fn exactly_one_of_200_simultaneous_launches_runs_abstract() {
    let uid = nix::unistd::getuid();
    for _ in 0..ROUNDS {
        // The holder's pid is known once it listens; a contender that
        // connects between its bind and its listen learns no pid.
        exactly_one_runs(&[unique_lock("race")], |holder| {
            holder == format!("pid WINNER (uid {uid})") || holder == "another process"
        });
    }
}

#[test]
fn exactly_one_of_200_simultaneous_launches_runs_tcp() {
    let uid = nix::unistd::getuid();
    for _ in 0..ROUNDS {
        let port = free_port();
        // The holder is found through /proc once it listens.
        exactly_one_runs(&["--tcp".into(), format!("127.0.0.1:{port}")], |holder| {
            holder == format!("pid WINNER (uid {uid})") || holder == "another process"
        });
    }
}

#[test]
fn exactly_one_of_200_simultaneous_launches_runs_flock() {
    let uid = nix::unistd::getuid();
    for _ in 0..ROUNDS {
        // A new file each round: the launchers also race to create it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock").display().to_string();
        // /proc/locks lists the winner from its flock() on.
        exactly_one_runs(&["--flock".into(), path], |holder| {
            holder == format!("pid WINNER (uid {uid})")
        });
    }
}
