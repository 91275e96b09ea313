//! --respawn, --until-success, --until-failure and --tries: me-only takes
//! the lock once and runs COMMAND again and again, holding the lock
//! throughout, with a back-off between runs.

use crate::common;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, me_only, one_error_line, read_until_a_line_with, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A script for `sh -c` that notes each run's start (a timestamp, one line
/// in `runs`), makes sure it is the only run (a mkdir witness: a run that
/// finds it taken exits 99) and leaves, then `rest`.
fn witnessed(dir: &Path, rest: &str) -> String {
    format!(
        "mkdir {dir}/running || exit 99; date +%s.%N >> {dir}/runs; rmdir {dir}/running; {rest}",
        dir = dir.display()
    )
}

/// The start of each run, in seconds.
fn run_starts(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

fn respawning(options: &[&str], lock: &str, script: &str) -> Command {
    let mut command = me_only();
    command.args(options).arg(lock).args(["sh", "-c", script]);
    command
}

fn run(options: &[&str], lock: &str, script: &str) -> Output {
    respawning(options, lock, script).output().unwrap()
}

/// The delays the restart lines announce, in order.
fn announced_delays(stderr: &[u8]) -> Vec<String> {
    text(stderr)
        .lines()
        .map(|line| {
            let (_, delay) = line
                .rsplit_once("running it again in ")
                .unwrap_or_else(|| panic!("not a restart line: {line:?}"));
            delay.to_owned()
        })
        .collect()
}

#[test]
fn respawn_runs_command_again_with_a_doubling_back_off_and_one_line_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let lock = common::unique_lock("respawn-back-off");
    let output = run(
        &["--respawn", "--respawn-delay", "0.1,0.4", "--tries", "5"],
        &lock,
        &witnessed(dir.path(), "exit 3"),
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let starts = run_starts(dir.path());
    assert_eq!(starts.len(), 5, "{output:?}");
    // 0.1, 0.2, 0.4, then 0.4: MAX caps the doubling.
    for (gap, least) in starts
        .windows(2)
        .map(|w| w[1] - w[0])
        .zip([0.1, 0.2, 0.4, 0.4])
    {
        assert!(
            gap >= least,
            "runs {gap} s apart, less than {least}: {starts:?}"
        );
        assert!(gap < least + 2.0, "runs {gap} s apart: {starts:?}");
    }
    assert_eq!(
        announced_delays(&output.stderr),
        ["0.1 s", "0.2 s", "0.4 s", "0.4 s"]
    );
    assert!(
        text(&output.stderr).starts_with(&format!(
            "me-only: {lock}: sh exited with status 3; running it again in 0.1 s\n"
        )),
        "{output:?}"
    );
}

#[test]
fn the_back_off_starts_over_after_a_run_longer_than_max() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    // The third run lasts longer than MAX (0.2 s).
    let script = format!(
        "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}; \
         [ $n = 3 ] && sleep 0.3; exit 1",
        c = counter.display()
    );
    let lock = common::unique_lock("respawn-reset");
    let output = run(
        &["--respawn", "--respawn-delay", "0.05,0.2", "--tries", "4"],
        &lock,
        &script,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        announced_delays(&output.stderr),
        ["0.05 s", "0.1 s", "0.05 s"]
    );
}

/// What a run leaves running in the background is still the instance: the
/// next run starts only once it is gone (it would find the witness taken).
#[test]
fn the_next_run_waits_for_what_the_last_one_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "mkdir {d}/running || exit 99; date +%s.%N >> {d}/runs; \
         (sleep 0.3; rmdir {d}/running) > /dev/null 2>&1 & exit 1",
        d = dir.path().display()
    );
    let lock = common::unique_lock("respawn-leftovers");
    let output = run(
        &["--respawn", "--respawn-delay", "0.01", "--tries", "3"],
        &lock,
        &script,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let starts = run_starts(dir.path());
    assert_eq!(starts.len(), 3, "{output:?}");
    for gap in starts.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= 0.3,
            "a run started beside the last one's leftovers: {starts:?}"
        );
    }
}

/// Starts a respawning me-only whose runs print `run` and exit 1, with a
/// long back-off, and returns once it announced its first restart: it is
/// then waiting, holding the lock, with no COMMAND running.
fn waiting_to_respawn(lock: &str) -> (KillOnDrop, BufReader<std::process::ChildStderr>) {
    waiting_to_respawn_with(&[], lock)
}

/// As `waiting_to_respawn`, with more `options`.
fn waiting_to_respawn_with(
    options: &[&str],
    lock: &str,
) -> (KillOnDrop, BufReader<std::process::ChildStderr>) {
    let mut all = vec!["--respawn", "--respawn-delay", "30"];
    all.extend_from_slice(options);
    let mut child = respawning(&all, lock, "echo run; exit 1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    read_until_a_line_with(&mut stderr, "running it again in 30 s");
    (KillOnDrop(child), stderr)
}

#[test]
fn the_lock_stays_held_between_runs() {
    let lock = common::unique_lock("respawn-held");
    let (_waiting, _stderr) = waiting_to_respawn(&lock);
    let second = me_only()
        .args(["--respawn", &lock, "true"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(4), "{second:?}");
    one_error_line(&second.stderr);
    // keep-one-running from cron: a second loop is no failure with -E 0.
    let quiet = me_only()
        .args(["--respawn", "-E", "0", "-q", &lock, "true"])
        .output()
        .unwrap();
    assert_eq!(quiet.status.code(), Some(0), "{quiet:?}");
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
}

#[test]
fn sigterm_during_the_back_off_ends_the_loop_with_no_run() {
    let lock = common::unique_lock("respawn-term-waiting");
    let (mut waiting, mut stderr) = waiting_to_respawn(&lock);
    let pid = Pid::from_raw(waiting.0.id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let status = waiting.0.wait().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(rest, "");
    let mut stdout = String::new();
    std::io::Read::read_to_string(waiting.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "run\n", "a run after SIGTERM");
}

#[test]
fn a_signal_is_forwarded_to_the_running_command_and_ends_the_loop() {
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let lock = common::unique_lock("respawn-forward");
        let script = format!(
            "trap 'echo got {signal}; exit 5' {name}; echo ready; while :; do sleep 0.01; done",
            name = &signal.as_str()[3..]
        );
        let mut command = respawning(&["--respawn", "--respawn-delay", "0.01"], &lock, &script);
        // Whatever the suite was started with ignored (nohup, `cargo test &`
        // in a script), me-only and its sh get the signals here.
        common::default_disposition_of(&mut command, &[nix::libc::SIGHUP, nix::libc::SIGINT]);
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut child = KillOnDrop(child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        kill(Pid::from_raw(child.0.id() as i32), signal).unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(status.code(), Some(5), "{signal}: {status:?}");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        assert_eq!(rest, format!("got {signal}\n"), "{signal}: ran again");
    }
}

/// Runs a script that counts its runs in a file ($n) and then runs `tail`;
/// the status and the number of runs.
fn counted(options: &[&str], tail: &str) -> (Output, u32) {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    let script = format!(
        "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}; {tail}",
        c = counter.display()
    );
    let lock = common::unique_lock("respawn-counted");
    let mut all = vec!["--respawn-delay", "0.01"];
    all.extend_from_slice(options);
    let output = run(&all, &lock, &script);
    let runs = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (output, runs)
}

#[test]
fn until_success_stops_after_the_first_run_that_exits_0() {
    let (output, runs) = counted(&["--until-success"], "exit $((n < 3 ? 6 : 0))");
    assert_eq!((output.status.code(), runs), (Some(0), 3), "{output:?}");
    assert_eq!(announced_delays(&output.stderr).len(), 2);
}

#[test]
fn until_failure_stops_after_the_first_run_that_fails_with_its_status() {
    let (output, runs) = counted(&["--until-failure"], "exit $((n < 3 ? 0 : 7))");
    assert_eq!((output.status.code(), runs), (Some(7), 3), "{output:?}");
}

#[test]
fn tries_bounds_each_loop_and_the_last_status_is_the_exit_code() {
    let (output, runs) = counted(&["--until-success", "--tries", "2"], "exit $((n + 10))");
    assert_eq!((output.status.code(), runs), (Some(12), 2), "{output:?}");
    let (output, runs) = counted(&["--until-failure", "--tries=3"], "exit 0");
    assert_eq!((output.status.code(), runs), (Some(0), 3), "{output:?}");
    let (output, runs) = counted(&["--respawn", "--tries", "1"], "exit $n");
    assert_eq!((output.status.code(), runs), (Some(1), 1), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn a_run_killed_by_a_signal_is_said_so_and_run_again() {
    let (output, runs) = counted(&["--respawn", "--tries", "2"], "kill -KILL $$");
    assert_eq!(runs, 2);
    assert_eq!(
        output.status.signal(),
        Some(Signal::SIGKILL as i32),
        "{output:?}"
    );
    assert!(
        text(&output.stderr).contains(": sh was killed by SIGKILL; running it again in 0.01 s\n"),
        "{output:?}"
    );
}

#[test]
fn bad_respawn_options_are_usage_errors() {
    let lock = common::unique_lock("respawn-usage");
    for bad in [
        &["--respawn", "--test"][..],
        &["--respawn", "--list"],
        &["--respawn", "--until-success"],
        &["--until-success", "--until-failure"],
        &["--respawn", "--tries", "0"],
        &["--respawn", "--tries", "-1"],
        &["--tries", "2"],
        &["--respawn-delay", "1"],
        &["--respawn", "--respawn-delay", "2,1"],
        &["--respawn", "--respawn-delay", "-1"],
        &["--respawn", "--respawn-delay", "1,1e30"],
        &["--respawn", "--respawn-delay", "1,2,3"],
        &["--respawn", "--respawn-delay", ""],
        &["--respawn", "--respawn-delay", "soon"],
    ] {
        let output = me_only()
            .args(bad)
            .args([&lock, "sh", "-c", "echo ran"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
        one_error_line(&output.stderr);
        assert!(output.stdout.is_empty(), "{bad:?}: {output:?}");
    }
}

/// --max-time caps each run, from its own start; a capped run (124) is a
/// failure for --until-success.
#[test]
fn max_time_caps_each_run_and_a_capped_run_is_a_failure() {
    let started = std::time::Instant::now();
    let (output, runs) = counted(
        &["--until-success", "--max-time", "0.3", "--kill-after", "1"],
        "[ $n -ge 3 ] && exit 0; exec sleep 100",
    );
    assert_eq!((output.status.code(), runs), (Some(0), 3), "{output:?}");
    assert!(
        started.elapsed().as_secs_f64() >= 0.6,
        "two runs capped at 0.3 s each in {:?}",
        started.elapsed()
    );
    assert!(
        text(&output.stderr)
            .contains(": sh was stopped after --max-time; running it again in 0.01 s\n"),
        "{output:?}"
    );
}

/// --etcd: the lease is taken once and kept across runs (each run sees the
/// same fencing token, the lock key's create revision, which a new lease
/// would have changed), and given back at the end.
#[test]
fn etcd_keeps_one_lease_across_runs() {
    let Some(etcd) = common::etcd::Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = common::etcd::lock_name("respawn-lease");
    let dir = tempfile::tempdir().unwrap();
    let fences = dir.path().join("fences");
    let script = format!(
        "echo $ME_ONLY_FENCE >> {f}; [ $(wc -l < {f}) -ge 5 ]",
        f = fences.display()
    );
    let output = common::etcd::on(
        &etcd,
        &[
            "--until-success",
            "--respawn-delay",
            "0.01",
            &lock,
            "sh",
            "-c",
            &script,
        ],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let fences = std::fs::read_to_string(&fences).unwrap();
    let fences: Vec<&str> = fences.lines().collect();
    assert_eq!(fences.len(), 5, "{fences:?}");
    assert!(!fences[0].is_empty(), "{fences:?}");
    assert!(fences.iter().all(|fence| *fence == fences[0]), "{fences:?}");
    assert_eq!(etcd.keys_under(&lock), Vec::<String>::new());
}

/// A lost lease (the key deleted by an operator) ends the loop: the keeper
/// fences off the supervisor and COMMAND, and nothing runs again.
#[test]
fn a_lost_etcd_lease_ends_the_loop() {
    let Some(etcd) = common::etcd::Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = common::etcd::lock_name("respawn-lost");
    let script = "trap 'echo terminated; exit 0' TERM; echo ready; \
                  while :; do sleep 1 & wait $!; done";
    let (holder, mut stdout) = common::etcd::started(&mut common::etcd::on(
        &etcd,
        &[
            "--respawn",
            "--respawn-delay",
            "0.01",
            "--ttl",
            "3",
            &lock,
            "sh",
            "-c",
            script,
        ],
    ));
    etcd.delete_keys_of(&lock);
    read_until_a_line_with(&mut stdout, "terminated");
    let output = holder.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    // COMMAND may say "terminated" twice: the keeper signals the whole
    // tree, and the supervisor passes its own SIGTERM on too.
    assert!(
        !rest.contains("ready"),
        "ran again after the lease was lost: {rest:?} {output:?}"
    );
    assert!(
        !text(&output.stderr).contains("running it again"),
        "{output:?}"
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        text(&output.stderr).contains(&format!(
            "me-only: {lock}: lock key deleted; terminating pid"
        )),
        "{output:?}"
    );
}

/// --replace stops the whole loop, supervisor and COMMAND, not just the run
/// in progress (which the loop would start again beside the replacer).
#[test]
fn replace_stops_the_whole_loop() {
    let lock = common::unique_lock("respawn-replaced");
    let mut child = respawning(
        &["--respawn", "--respawn-delay", "0.01"],
        &lock,
        "echo ready; exec sleep 100",
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut child = KillOnDrop(child);
    read_until_a_line_with(&mut stdout, "ready");
    let replacer = me_only()
        .args(["--replace", &lock, "echo", "replaced"])
        .output()
        .unwrap();
    assert_eq!(replacer.status.code(), Some(0), "{replacer:?}");
    assert_eq!(text(&replacer.stdout), "replaced\n");
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "", "ran again after it was replaced");
}

/// --slots: each loop keeps the slot it took across its runs (ME_ONLY_SLOT
/// stays), and when all are held the next loop is refused.
#[test]
fn slots_each_loop_keeps_its_slot() {
    let lock = common::unique_lock("respawn-slots");
    let (_first, _stderr) = waiting_to_respawn_with(&["--slots", "2"], &lock);
    let dir = tempfile::tempdir().unwrap();
    let slots = dir.path().join("slots");
    let script = format!("echo $ME_ONLY_SLOT >> {}; exit 1", slots.display());
    let output = run(
        &[
            "--slots",
            "2",
            "--respawn",
            "--respawn-delay",
            "0.01",
            "--tries",
            "3",
        ],
        &lock,
        &script,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(std::fs::read_to_string(&slots).unwrap(), "2\n2\n2\n");
    let (_second, _stderr) = waiting_to_respawn_with(&["--slots", "2"], &lock);
    let third = run(&["--slots", "2", "--respawn"], &lock, "echo ran");
    assert_eq!(third.status.code(), Some(4), "{third:?}");
    assert!(third.stdout.is_empty(), "{third:?}");
}

/// The keeper and its sentry both killed at once (the one fault the etcd
/// lock cannot fence: nothing is left on the host to stop COMMAND) while a
/// run goes on: that run ends as it would, but no other starts, for no
/// lease is kept behind it (the pipe to the keeper is hung up).
#[test]
fn no_run_starts_once_the_etcd_keeper_is_gone() {
    let Some(etcd) = common::etcd::Etcd::start() else {
        return;
    };
    let lock = common::etcd::lock_name("respawn-keeperless");
    let (holder, mut stdout) = common::etcd::started(&mut common::etcd::on(
        &etcd,
        &[
            "--respawn",
            "--respawn-delay",
            "0.2",
            &lock,
            "sh",
            "-c",
            "echo ready; sleep 0.5",
        ],
    ));
    let keeper = common::etcd::keeper_of(&lock).expect("a keeper");
    let sentry = common::etcd::sentry_of(&lock).expect("a sentry");
    // Both at once: SIGKILL, so neither can fence for the other.
    kill(sentry, Signal::SIGKILL).unwrap();
    kill(keeper, Signal::SIGKILL).unwrap();
    // A loop that went on would never end: killed, it fails the test.
    let pid = holder.id() as i32;
    if !common::gone_within(pid, Duration::from_secs(10)) {
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        panic!("the loop went on without a keeper");
    }
    let output = holder.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        !rest.contains("ready"),
        "ran again without a keeper: {rest:?}"
    );
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        one_error_line(&output.stderr)
            .contains("cannot keep the lock between runs (its keeper is gone)"),
        "{output:?}"
    );
}

/// --detach with --respawn: the loop runs in the background, in a session
/// of its own; me-only prints its pid once the first run has started and
/// exits 0 at once; the loop holds the lock, runs again, and ends with
/// TERM like any loop.
#[test]
fn a_detached_loop_runs_in_the_background_and_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lock = common::unique_lock("respawn-detached");
    // Its stderr is the loop's, for as long as the loop runs: not a pipe
    // that output() would read to its end.
    let output = respawning(
        &["--detach", "--respawn", "--respawn-delay", "0.05"],
        &lock,
        &witnessed(dir.path(), "exit 1"),
    )
    .stderr(Stdio::null())
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let pid: i32 = text(&output.stdout).trim().parse().unwrap();
    let loop_ = common::Detached(pid);
    // A session of its own, holding the lock: a launch is refused by it.
    assert_eq!(
        nix::unistd::getsid(Some(Pid::from_raw(pid))),
        Ok(Pid::from_raw(pid))
    );
    assert!(
        common::within(Duration::from_secs(10), || run_starts(dir.path()).len()
            >= 3),
        "{:?}",
        run_starts(dir.path())
    );
    let refused = common::refused(me_only().arg(&lock).arg("true"), 4);
    assert!(refused.contains(&format!("pid {pid}")), "{refused}");
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert!(common::gone_within(pid, Duration::from_secs(5)));
    drop(loop_);
    assert!(me_only().arg(&lock).arg("true").status().unwrap().success());
}

/// A detached loop whose COMMAND cannot run says so, as --detach does:
/// exit 1, one line, nothing left running.
#[test]
fn a_detached_loop_whose_command_cannot_run_says_so() {
    let lock = common::unique_lock("respawn-detached-missing");
    let output = me_only()
        .args(["--detach", "--respawn", &lock, "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(
        one_error_line(&output.stderr).contains("/nonexistent/command"),
        "{output:?}"
    );
    assert!(me_only().arg(&lock).arg("true").status().unwrap().success());
    let slots = me_only()
        .args(["--detach", "--respawn", "--slots", "2", &lock, "true"])
        .output()
        .unwrap();
    assert_eq!(slots.status.code(), Some(2), "{slots:?}");
}

/// A loop started with `signal` ignored (nohup's HUP; INT in a script's
/// `job &`) is not ended by it, during a run or a back-off, as a shell's
/// `while` loop is not: me-only kept it blocked for its signalfd, so the
/// kernel queued it all the same, and the loop ended (in a back-off,
/// me-only died of it) (review of issue 25).
fn an_ignored_signal_does_not_end_the_loop(signal: Signal) {
    let lock = common::unique_lock("respawn-ignored");
    let mut command = respawning(
        &["--respawn", "--respawn-delay", "0.5", "--tries", "3"],
        &lock,
        "echo run; sleep 0.3; exit 1",
    );
    let number = signal as i32;
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            nix::libc::signal(number, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut child = KillOnDrop(child);
    let pid = Pid::from_raw(child.0.id() as i32);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "run\n");
    // During the first run, then during the back-off after it.
    kill(pid, signal).unwrap();
    line.clear();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("running it again"), "{signal}: {line:?}");
    kill(pid, signal).unwrap();
    let status = child.0.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(
        (status.code(), rest.as_str()),
        (Some(1), "run\nrun\n"),
        "{signal}, ignored by the caller, ended the loop: {status:?}"
    );
}

#[test]
fn a_loop_under_nohup_is_not_ended_by_hup() {
    an_ignored_signal_does_not_end_the_loop(Signal::SIGHUP);
}

#[test]
fn a_loop_started_with_int_ignored_is_not_ended_by_int() {
    an_ignored_signal_does_not_end_the_loop(Signal::SIGINT);
}

/// `nohup me-only --fork LOCK daemon`, then `kill -HUP <me-only>` to make
/// the daemon reload: --fork forwards the usual signals (SPEC 2), and a
/// COMMAND that installs its own handler (perl, Go's signal.Notify, nginx)
/// gets HUP although it started with it ignored (review of issue 25: a
/// first fix for ignored signals ending a loop dropped them altogether).
#[test]
fn fork_under_nohup_still_forwards_hup_to_a_command_that_handles_it() {
    if !common::programs_or_skip(&["perl"]) {
        return;
    }
    let lock = common::unique_lock("respawn-nohup-fork");
    let mut command = me_only();
    command.args([
        "--fork",
        &lock,
        "perl",
        "-e",
        "$| = 1; $SIG{HUP} = sub { exit 7 }; print qq(ready\\n); sleep 1 for 1..5; exit 1",
    ]);
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::libc::signal(nix::libc::SIGHUP, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let (mut child, line) = common::first_line(&mut command);
    assert_eq!(line.trim(), "ready");
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGHUP).unwrap();
    let started = Instant::now();
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "HUP to me-only --fork never reached COMMAND's handler ({:?} later: {status:?})",
        started.elapsed()
    );
}

/// A detached loop that fails before its first run with a lock error
/// exits 3 (SPEC 3), also when me-only was started with SIGCHLD ignored
/// (SPEC 7 names it as a fault): the parent's waitpid failed (ECHILD, the
/// kernel had reaped the loop) and it exited 1 (review of issue 25). The lock error is made
/// with the descriptor limit: the parent's pipe fits, the keeper's
/// pidfd does not.
#[test]
fn a_detached_loop_failing_before_its_first_run_exits_3_with_sigchld_ignored() {
    let Some(etcd) = common::etcd::Etcd::start() else {
        return;
    };
    let mut seen = Vec::new();
    for limit in 6..=24u64 {
        let lock = common::etcd::lock_name(&format!("respawn-sigchld-{limit}"));
        let mut command = common::etcd::on(
            &etcd,
            &[
                "--detach",
                "--respawn",
                "--tries",
                "1",
                &lock,
                "sleep",
                "0.2",
            ],
        );
        // SAFETY: signal() and setrlimit() are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                nix::libc::signal(nix::libc::SIGCHLD, nix::libc::SIG_IGN);
                let rlimit = nix::libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &rlimit);
                Ok(())
            });
        }
        let output = command.stderr(Stdio::piped()).output().unwrap();
        // (Where the loop ran, output() waited for its one run's end.)
        let line = text(&output.stderr);
        if line.contains("cannot start the lease keeper") {
            seen.push((limit, output.status.code(), line));
        }
    }
    assert!(!seen.is_empty(), "no limit made the keeper fail");
    assert!(
        seen.iter().all(|(_, code, _)| *code == Some(3)),
        "a lock error, not exit 3: {seen:?}"
    );
}

/// With --etcd, a detached loop's key named the process that took the
/// lock: me-only's parent, which exits once the loop runs. --test then
/// named a dead pid (not the one --detach printed), and every launch that
/// found the lock held waited a second for a holder it thought had exited
/// (plain --detach with --etcd too; review of issue 25).
#[test]
fn an_etcd_detached_loop_is_named_as_the_holder_and_refuses_at_once() {
    let Some(etcd) = common::etcd::Etcd::start() else {
        return;
    };
    let lock = common::etcd::lock_name("respawn-etcd-holder");
    let output = common::etcd::on(
        &etcd,
        &[
            "--detach",
            "--respawn",
            "--respawn-delay",
            "0.1",
            &lock,
            "sleep",
            "0.3",
        ],
    )
    .stderr(Stdio::null())
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let pid: i32 = text(&output.stdout).trim().parse().unwrap();
    let _loop = common::Detached(pid);
    let test = common::etcd::on(&etcd, &["--test", &lock])
        .output()
        .unwrap();
    let named = text(&test.stdout);
    let started = Instant::now();
    let refused = common::etcd::on(&etcd, &[&lock, "true"]).output().unwrap();
    let took = started.elapsed();
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(
        named.split_whitespace().any(|word| word == pid.to_string()),
        "--test names {named:?}, the loop is pid {pid}"
    );
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
}
