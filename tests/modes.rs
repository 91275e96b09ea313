//! The modes: --wait and --timeout, --test, --fork.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use assert_cmd::prelude::*;
use common::{Holding, free_port, me_only, one_error_line, text, unique_lock};
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

/// A generous bound for "at once": event-driven handover takes about a
/// millisecond, polling would take up to the 1 s recheck interval.
const PROMPT: Duration = Duration::from_millis(500);

/// Starts `me-only -v <wait options> <lock args> <command...>` and returns
/// once it says it is waiting on the holder.
fn waiting(wait_options: &[&str], lock_and_command: &[&str]) -> Child {
    common::spawn_waiting(
        me_only()
            .arg("-v")
            .args(wait_options)
            .args(lock_and_command),
    )
}

fn handover(lock_args: &[&str]) -> Duration {
    common::handover(Holding::start(lock_args), lock_args)
}

#[test]
fn waiter_starts_promptly_when_the_holder_exits() {
    let latency = handover(&[&unique_lock("handover")]);
    println!("abstract handover latency: {latency:?}");
    assert!(latency < PROMPT, "handover took {latency:?}");
}

#[test]
fn tcp_waiter_starts_promptly_when_the_holder_exits() {
    let address = format!("127.0.0.1:{}", free_port());
    let latency = handover(&["--tcp", &address]);
    println!("tcp handover latency: {latency:?}");
    assert!(latency < PROMPT, "handover took {latency:?}");
}

/// Twenty waiters all run in turn, and no two commands ever overlap: each
/// takes a mkdir witness that a second holder would find taken.
#[test]
fn twenty_waiters_all_run_and_never_overlap() {
    let lock = unique_lock("twenty");
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("held");
    let log = dir.path().join("log");
    let holder = Holding::start([&lock]);
    // The pause only widens the window in which an overlap would show.
    let script = "mkdir \"$1\" || exit 99; echo $$ >> \"$2\"; sleep 0.02; rmdir \"$1\"";
    let waiters: Vec<Child> = (0..20)
        .map(|_| {
            me_only()
                .args(["--wait", &lock, "sh", "-c", script, "sh"])
                .arg(&witness)
                .arg(&log)
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(holder.release().success());
    for mut waiter in waiters {
        assert_eq!(
            waiter.wait().unwrap().code(),
            Some(0),
            "a waiter failed or overlapped"
        );
    }
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(runs.lines().count(), 20, "{runs}");
}

#[test]
fn timeout_gives_up_with_the_conflict_code() {
    let lock = unique_lock("timeout");
    let holder = Holding::start([&lock]);
    let line = common::gives_up_after(
        me_only().args(["--timeout", "0.5", &lock, "echo", "ran"]),
        Duration::from_millis(500),
    );
    assert_eq!(
        line,
        format!(
            "me-only: {lock}: still held by pid {} (uid {}) after 0.5 s\n",
            holder.pid,
            nix::unistd::getuid()
        )
    );
    me_only()
        .args(["-E", "9", "-q", "--timeout", "0.1", &lock, "true"])
        .assert()
        .code(9)
        .stderr("");
}

#[test]
fn timeout_zero_does_not_wait() {
    let lock = unique_lock("timeout-zero");
    let _holder = Holding::start([&lock]);
    let output = me_only()
        .args(["--wait", "--timeout", "0", &lock, "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert!(
        text(&output.stderr).contains("already held by"),
        "{output:?}"
    );
}

#[test]
fn timeout_long_enough_runs_the_command() {
    let lock = unique_lock("timeout-enough");
    let holder = Holding::start([&lock]);
    let waiting = waiting(&["--timeout", "60"], &[&lock, "echo", "ran"]);
    assert!(holder.release().success());
    let output = waiting.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(text(&output.stdout), "ran\n");
}

#[test]
fn test_mode_on_a_free_lock_exits_0_and_prints_nothing() {
    let lock = unique_lock("test-free");
    me_only()
        .args(["--test", &lock])
        .assert()
        .code(0)
        .stdout("")
        .stderr("");
    // It left nothing behind.
    me_only().args([&lock, "true"]).assert().success();
}

#[test]
fn test_mode_prints_exactly_the_holders_pid() {
    let lock = unique_lock("test-held");
    let holder = Holding::start([&lock]);
    me_only()
        .args(["--test", &lock])
        .assert()
        .code(4)
        .stdout(format!("{}\n", holder.pid))
        .stderr("");
    me_only()
        .args(["-t", "-E", "9", &lock, "ignored", "command"])
        .assert()
        .code(9)
        .stdout(format!("{}\n", holder.pid));
}

#[test]
fn test_mode_verbose_names_uid_and_command_line() {
    let lock = unique_lock("test-verbose");
    let holder = Holding::with_script([&lock], "echo ready; cat");
    let output = me_only().args(["-t", "-v", &lock]).output().unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(text(&output.stdout), format!("{}\n", holder.pid));
    let expected = format!(
        "held by pid {} (uid {}): sh -c echo ready; cat",
        holder.pid,
        nix::unistd::getuid()
    );
    assert!(
        text(&output.stderr).contains(&expected),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn test_mode_finds_a_tcp_holders_pid() {
    let address = format!("127.0.0.1:{}", free_port());
    let holder = Holding::start(["--tcp", &address]);
    me_only()
        .args(["--test", "--tcp", &address])
        .assert()
        .code(4)
        .stdout(format!("{}\n", holder.pid));
    assert!(holder.release().success());
    me_only()
        .args(["--test", "--tcp", &address])
        .assert()
        .code(0)
        .stdout("");
}

/// The locker may have exited while a process it handed the lock to holds
/// it on (a daemon's child): the process named is the one holding it now,
/// not the pid the kernel recorded at listen() or flock().
#[test]
fn the_holder_named_is_alive_when_the_locker_has_exited() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lock").display().to_string();
    for lock_args in [
        vec![unique_lock("live-holder")],
        vec!["--tcp".into(), format!("127.0.0.1:{}", free_port())],
        vec!["--flock".into(), file],
    ] {
        let output = me_only()
            .args(&lock_args)
            .args(["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let background: i32 = text(&output.stdout).trim().parse().unwrap();
        let test = me_only().arg("--test").args(&lock_args).output().unwrap();
        let conflict = me_only().args(&lock_args).arg("true").output().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(background), Signal::SIGKILL).unwrap();
        assert_eq!(test.status.code(), Some(4), "{lock_args:?}: {test:?}");
        assert_eq!(
            text(&test.stdout),
            format!("{background}\n"),
            "{lock_args:?}"
        );
        assert!(
            text(&conflict.stderr).contains(&format!("already held by pid {background} ")),
            "{lock_args:?}: {conflict:?}"
        );
    }
}

/// Testing must not disturb the holder nor make the lock harder to take.
#[test]
fn test_mode_leaves_the_lock_as_it_was() {
    for lock_args in [
        vec![unique_lock("test-harmless")],
        vec!["--tcp".into(), format!("127.0.0.1:{}", free_port())],
    ] {
        let holder = Holding::start(&lock_args);
        for _ in 0..20 {
            me_only().arg("--test").args(&lock_args).assert().code(4);
        }
        assert!(holder.release().success());
        me_only().args(&lock_args).arg("true").assert().success();
    }
}

/// A name bound by some other program without listening is held too.
#[test]
fn test_mode_sees_a_bound_name_nobody_listens_on() {
    let lock = unique_lock("test-bound");
    let mut name = vec![0];
    name.extend_from_slice(lock.as_bytes());
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    let address = socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&name)).unwrap();
    socket.bind(&address).unwrap();
    me_only()
        .args(["--test", &lock])
        .assert()
        .code(4)
        .stdout("");
    me_only().args([&lock, "true"]).assert().code(4);
    drop(socket);
    me_only().args(["--test", &lock]).assert().code(0);
}

#[test]
fn fork_passes_the_exit_status_through() {
    let lock = unique_lock("fork-status");
    me_only()
        .args(["--fork", &lock, "sh", "-c", "echo out; exit 7"])
        .assert()
        .code(7)
        .stdout("out\n");
}

/// In fork mode me-only holds the lock: the child shares the descriptor
/// (ME_ONLY_FD), may close everything, and the lock is held while it runs.
#[test]
fn fork_holds_the_lock_in_me_only_whatever_the_child_closes() {
    let lock = unique_lock("fork-holds");
    // Any complaint comes before "ready", and fails Holding::start.
    let script = format!(
        "readlink /proc/$$/fd/$ME_ONLY_FD | grep -q '^socket:' || echo no-fd; \
         [ \"$ME_ONLY_LOCK\" = '{lock}' ] || echo no-lock; \
         eval \"exec $ME_ONLY_FD>&-\"; \
         if ls -l /proc/$$/fd | grep -q socket; then echo still-open; fi; \
         echo ready; exec 0<&- 1>&- 2>&- ; exec sleep 1000"
    );
    let holder = Holding::with_script(["--fork", &lock], &script);
    me_only().args([&lock, "true"]).assert().code(4);
    me_only()
        .args(["--test", &lock])
        .assert()
        .code(4)
        .stdout(format!("{}\n", holder.pid));
    holder.signal(Signal::SIGTERM);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&holder.release()),
        Some(libc::SIGTERM)
    );
    me_only().args([&lock, "true"]).assert().success();
}

/// A child that daemonizes a grandchild (a session of its own, its parent
/// gone) is still the instance (issue 21): the grandchild comes back to
/// me-only, a child subreaper, which holds the lock until it is gone too,
/// then exits with the child's status.
#[test]
fn fork_holds_the_lock_while_a_daemonized_grandchild_runs() {
    let lock = unique_lock("fork-daemon");
    let mut holder = me_only()
        .args([
            "--fork",
            &lock,
            "sh",
            "-c",
            "(setsid sleep 1000 >/dev/null 2>&1 & echo $!); exit 5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grandchild = Pid::from_raw(line.trim().parse().unwrap());
    me_only().args([&lock, "true"]).assert().code(4);
    assert!(holder.try_wait().unwrap().is_none(), "me-only let go");
    nix::sys::signal::kill(grandchild, Signal::SIGKILL).unwrap();
    assert_eq!(holder.wait().unwrap().code(), Some(5), "the child's status");
    me_only().args([&lock, "true"]).assert().success();
}

#[test]
fn fork_forwards_signals_to_the_child() {
    let lock = unique_lock("fork-signals");
    let forwarded = [
        (Signal::SIGTERM, "TERM"),
        (Signal::SIGINT, "INT"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
        (Signal::SIGWINCH, "WINCH"),
    ];
    for (code, (signal, name)) in (40..).zip(forwarded) {
        // `wait` lets the trap run at once; a short background sleep, not a
        // long one killed from the trap: a signal that reaches the forked
        // child before it resets its traps is lost there, and a long sleep
        // then outlives the test (it did, about one run in ten).
        let script = format!(
            "trap 'exit {code}' {name}; echo ready; \
             while :; do sleep 1 >/dev/null 2>&1 & wait $!; done"
        );
        let mut command = me_only();
        command.args(["--fork", &lock, "sh", "-c", &script]);
        common::default_disposition_of(&mut command, &[libc::SIGINT, libc::SIGQUIT, libc::SIGHUP]);
        let holder = Holding::spawn(command);
        holder.signal(signal);
        assert_eq!(
            holder.release().code(),
            Some(code),
            "{name} did not reach the child"
        );
    }
}

#[test]
fn fork_reports_a_missing_command_with_exit_1() {
    let lock = unique_lock("fork-missing");
    let output = me_only()
        .args(["--fork", &lock, "no-such-command-here"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        one_error_line(&output.stderr),
        format!("me-only: {lock}: no-such-command-here: command not found\n")
    );
}

/// CPU time (user + system) a child used, from wait4 on that child alone.
fn cpu_time_of(child: Child) -> (Option<i32>, Duration) {
    use nix::libc;
    let mut status = 0;
    // SAFETY: rusage is a plain C struct that zeroes validly; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child, writing only into the locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let seconds =
        |time: libc::timeval| Duration::new(time.tv_sec as u64, time.tv_usec as u32 * 1000);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// A waiter sleeps: on the holder's hang-up where it can, else on a backoff.
/// The bound is loose; a busy-spinning waiter would use the whole second.
#[test]
fn waiters_do_not_spin() {
    let lock = unique_lock("no-spin");
    let _holder = Holding::start([&lock]);
    let bound_only = unique_lock("no-spin-bound");
    let mut name = vec![0];
    name.extend_from_slice(bound_only.as_bytes());
    let not_listening =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    not_listening
        .bind(&socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&name)).unwrap())
        .unwrap();
    for (what, held) in [
        ("listening holder", &lock),
        ("nothing to watch", &bound_only),
    ] {
        let waiter = me_only()
            .args(["-q", "--timeout", "1", held, "true"])
            .spawn()
            .unwrap();
        let (code, cpu) = cpu_time_of(waiter);
        println!("{what}: 1 s of waiting used {cpu:?} of CPU");
        assert_eq!(code, Some(4));
        assert!(cpu < Duration::from_millis(200), "{what}: {cpu:?}");
    }
}

/// The pids of `pid`'s children, as the kernel lists them.
fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .map(|child| child.parse().unwrap())
        .collect()
}

/// kill -9 of a --fork supervisor (the OOM killer, a service manager's
/// final SIGKILL) must take its child along: the child has no lock of its
/// own, and ran on beside the next instance.
#[test]
fn kill_9_of_a_fork_supervisor_ends_its_child() {
    let lock = unique_lock("fork-kill-9");
    // The child must not end for any other reason: no pipe of the test's
    // closes under it.
    let holder = Holding::with_script(["--fork", &lock], "echo ready; exec sleep 1000");
    let children = children_of(holder.pid);
    assert_eq!(children.len(), 1, "{children:?}");
    let child = common::Detached(children[0]);
    holder.kill();
    assert!(
        common::gone_within(child.0, Duration::from_secs(1)),
        "the child of a killed --fork supervisor runs on without the lock"
    );
    me_only().args([&lock, "true"]).assert().success();
}

/// A child killed by a signal makes me-only die of the same signal, as
/// exec mode would, so that the caller (a shell loop on ^C) sees what
/// happened; a core-dumping signal dumps no core of me-only's.
#[test]
fn fork_dies_of_the_signal_that_killed_its_child() {
    use std::os::unix::process::ExitStatusExt;

    let lock = unique_lock("fork-reraise");
    // Cores, the child's, land in a directory of the test's own.
    let cores = tempfile::tempdir().unwrap();
    for (signal, name) in [(libc::SIGINT, "INT"), (libc::SIGQUIT, "QUIT"), (9, "KILL")] {
        let mut command = me_only();
        command
            .args(["--fork", &lock, "sh", "-c", &format!("kill -{name} $$")])
            .current_dir(cores.path());
        // The default dispositions, whatever the test runner ignores, and
        // cores allowed as far as the hard limit lets: me-only must not
        // dump one even so.
        // SAFETY: signal(), getrlimit() and setrlimit() are
        // async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                for ignored_in_background in [libc::SIGINT, libc::SIGQUIT] {
                    libc::signal(ignored_in_background, libc::SIG_DFL);
                }
                let mut core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_CORE, &mut core);
                core.rlim_cur = core.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &core);
                Ok(())
            });
        }
        let status = command.status().unwrap();
        assert_eq!(status.signal(), Some(signal), "{name}: {status:?}");
        assert!(!status.core_dumped(), "{name}: me-only dumped core");
    }
}

/// `ssh -t host me-only --fork ...`: me-only leads the session, and the
/// terminal's hang-up goes to the session leader alone; the child must
/// have it too, or it runs on after its user is gone.
#[test]
fn fork_passes_a_hang_up_on_when_it_leads_the_session() {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    let lock = unique_lock("fork-hangup");
    let (master, terminal) = pseudo_terminal();
    let raw_terminal = terminal.as_raw_fd();
    let mut command = me_only();
    command.args([
        "--fork",
        &lock,
        "sh",
        "-c",
        "trap 'exit 42' HUP; echo ready; while :; do sleep 1 & wait $!; done",
    ]);
    // SAFETY: setsid, ioctl, dup2 and signal are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid()?;
            if libc::ioctl(raw_terminal, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for standard in 0..3 {
                libc::dup2(raw_terminal, standard);
            }
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut me_only = common::KillOnDrop(command.spawn().unwrap());
    drop(terminal);
    let mut master = master;
    let mut said = Vec::new();
    let mut byte = [0];
    while !said.ends_with(b"ready") {
        assert_eq!(master.read(&mut byte).unwrap(), 1, "{said:?}");
        said.push(byte[0]);
    }
    drop(master); // hang up
    assert!(
        common::gone_within(me_only.0.id() as i32, Duration::from_secs(10)),
        "the child never had the hang-up"
    );
    assert_eq!(me_only.0.wait().unwrap().code(), Some(42));
}

/// A new pseudo-terminal, master and slave, both close-on-exec from the
/// start: a process that another test thread starts meanwhile must not
/// keep either open, or closing the master would not hang up.
fn pseudo_terminal() -> (std::fs::File, std::fs::File) {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;

    let master =
        nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
    nix::pty::grantpt(&master).unwrap();
    nix::pty::unlockpt(&master).unwrap();
    let name = nix::pty::ptsname_r(&master).unwrap();
    // std opens close-on-exec.
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name)
        .unwrap();
    let master = std::fs::File::from(std::os::fd::OwnedFd::from(master));
    (master, terminal)
}

/// From inside a pid namespace the holder's pid is not visible: the kernel
/// says 0 (SO_PEERCRED, /proc/locks), and `kill $(me-only -t LOCK)` must
/// not become `kill 0`. No pid is printed, whether /proc there is the
/// namespace's own or still the outer one (whose pids mean nothing inside).
/// (A /proc of the namespace's own hides flock(2) locks of processes
/// outside it altogether: the README says so; --flock is tested with the
/// outer /proc only.)
#[test]
fn test_mode_prints_no_pid_for_a_holder_outside_its_pid_namespace() {
    if !common::root_or_skip("unshare -p") || !common::programs_or_skip(&["unshare"]) {
        return;
    }
    let (_dir, file) = common::lock_file();
    let own_proc = &["-p", "-f", "--mount-proc"][..];
    let outer_proc = &["-p", "-f"][..];
    for (lock_args, unshares) in [
        (
            vec![unique_lock("other-namespace")],
            vec![own_proc, outer_proc],
        ),
        (
            vec!["--flock".into(), file.display().to_string()],
            vec![outer_proc],
        ),
    ] {
        let holder = Holding::start(&lock_args);
        for unshare in unshares {
            let inside = |args: &[&str]| {
                std::process::Command::new("unshare")
                    .args(unshare)
                    .arg(common::ME_ONLY)
                    .args(&lock_args)
                    .args(args)
                    .output()
                    .unwrap()
            };
            let test = inside(&["--test"]);
            if test.status.code() != Some(4) && text(&test.stderr).starts_with("unshare") {
                common::skip(&format!("unshare {unshare:?} does not work here: {test:?}"));
                return;
            }
            let what = format!("{lock_args:?} in unshare {unshare:?}");
            assert_eq!(test.status.code(), Some(4), "{what}: {test:?}");
            assert_eq!(text(&test.stdout), "", "{what}");
            let conflict = one_error_line(&inside(&["true"]).stderr);
            assert!(!conflict.contains("by pid"), "{what}: {conflict}");
        }
        drop(holder);
    }
}

/// A waiter keeps one connection to the holder for as long as it waits:
/// one per look, never accepted, filled the holder's queue (somaxconn) in
/// about an hour, after which no waiter could watch the holder any more.
#[test]
fn a_waiter_queues_one_connection_however_long_it_waits() {
    if !common::programs_or_skip(&["ss"]) {
        return;
    }
    let lock = unique_lock("queue");
    let _holder = Holding::start([&lock]);
    // Ten looks at the lock, one a second; -q: no connection to ask who
    // holds it, at the end.
    me_only()
        .args(["-q", "--timeout", "10", &lock, "true"])
        .assert()
        .code(4);
    assert_eq!(common::queued_on(&lock), 1);
}

/// The last instant before a deadline is slept, not spun: a poll timeout
/// rounded down to 0 ms made dozens of tries in it.
#[test]
fn a_timeout_tries_a_handful_of_times() {
    let lock = unique_lock("tries");
    let address = format!("127.0.0.1:{}", free_port());
    for lock_args in [vec![lock.as_str()], vec!["--tcp", &address]] {
        let _holder = Holding::start(&lock_args);
        let output = me_only()
            .args(["-v", "--timeout", "0.3"])
            .args(&lock_args)
            .arg("true")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(4), "{output:?}");
        let tries = text(&output.stderr).matches("trying again").count();
        assert!(tries <= 3, "{lock_args:?}: {tries} tries in 0.3 s");
    }
}

/// /proc/net/unix prints a socket's name as it is, newlines and all: a name
/// bound by anyone can carry a forged line that names another lock, which
/// nobody holds. --test must not believe it.
#[test]
fn a_socket_name_with_a_forged_line_does_not_make_a_lock_held() {
    let lock = unique_lock("forged");
    let forged = format!("x\n0000000000000000: 00000002 00000000 00010000 0001 01 99999 @{lock}");
    let mut name = vec![0];
    name.extend_from_slice(forged.as_bytes());
    let spoofer = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    spoofer
        .bind(&socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&name)).unwrap())
        .unwrap();
    me_only()
        .args(["--test", &lock])
        .assert()
        .code(0)
        .stdout("");
    me_only()
        .args([&lock, "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
}
