//! An instance is COMMAND and every process it started: whatever stops it
//! (--replace, --replace-older, --max-time) stops all of it, the lock is
//! not free while any of it runs, and no signal reaches a process that is
//! not part of it (a pid reused, a process that merely has the lock file
//! open, the replacer itself).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use common::{Holding, KillOnDrop, ME_ONLY, each_kernel_lock, me_only, refused, text};

/// Reads one line of `child`'s stdout (piped) as a pid.
fn read_pid(lines: &mut impl BufRead) -> i32 {
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a pid, got {line:?}"))
}

/// Starts `me-only OPTIONS sh -c SCRIPT` with stdin and stdout piped: the
/// holder (killed on drop) and what its command says.
fn start_saying(options: &[String], script: &str) -> (KillOnDrop, BufReader<ChildStdout>) {
    common::spawn_piped(me_only().args(options).args(["sh", "-c", script]))
}

/// Runs `me-only OPTIONS echo new` to the end.
fn run_new(options: &[String]) -> Output {
    me_only()
        .args(options)
        .args(["echo", "new"])
        .output()
        .unwrap()
}

/// `mode` and `lock`, as one list of words.
fn words(mode: &[&str], lock: &[String]) -> Vec<String> {
    mode.iter()
        .map(|word| word.to_string())
        .chain(lock.iter().cloned())
        .collect()
}

/// Whether process `pid` is alive (and not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Starts `sleep 600` as `uid` with pid `wanted` (the kernel hands out the
/// pid after ns_last_pid), trying a few times since other test threads fork
/// too. None when the pid could not be had.
fn sleep_with_pid(wanted: i32, uid: u32) -> Option<Child> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (wanted - 1).to_string()).ok()?;
        let mut sleep = Command::new("sleep")
            .arg("600")
            .uid(uid)
            .gid(uid)
            .spawn()
            .unwrap();
        if sleep.id() as i32 == wanted {
            return Some(sleep);
        }
        let _ = sleep.kill();
        let _ = sleep.wait();
    }
    None
}

/// Defect 1 of issue 21. The process that took the lock (the pid SO_PEERCRED
/// or /proc/locks records) has exited, leaving the lock to a child that its
/// user cannot look into (not dumpable); the recorded pid is then reused by
/// an unrelated process of the same user. Neither --replace nor --test may
/// take that process for the holder.
#[test]
fn a_reused_pid_of_the_process_that_took_the_lock_is_never_signalled_or_named() {
    if !common::root_or_skip("reuse a pid (ns_last_pid) and run as another user")
        || !common::programs_or_skip(&["python3"])
    {
        return;
    }
    const NOBODY: u32 = 65534;
    for (backend, lock, _dir) in each_kernel_lock("pid-reuse", 1) {
        if let Some(dir) = &_dir {
            // nobody must be able to create the lock file.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let lock_args: Vec<String> = match backend {
            // nobody's own address, as that user names the port.
            "tcp" => vec!["--tcp".into(), lock[1].rsplit(':').next().unwrap().into()],
            _ => lock.clone(),
        };
        let (_bin, mut holder) = common::me_only_as_user(NOBODY);
        // sh takes the lock (its pid is the recorded one), starts a child
        // that cannot be looked into, and exits.
        let child_script = "import ctypes, os, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); \
                            print(os.getpid(), flush=True); time.sleep(600)";
        let mut holder = holder
            .args(&lock_args)
            .args(["sh", "-c", "python3 -c \"$0\" &", child_script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = BufReader::new(holder.stdout.take().unwrap());
        let hidden_holder = read_pid(&mut said);
        let _hidden = Started::new(hidden_holder);
        let recorded = holder.id() as i32;
        assert!(holder.wait().unwrap().success(), "{backend}");
        let Some(stranger) = sleep_with_pid(recorded, NOBODY) else {
            common::skip("pid could not be reused");
            return;
        };
        let stranger = KillOnDrop(stranger);

        let (_bin, mut replacer) = common::me_only_as_user(NOBODY);
        let output = replacer
            .args(["--replace", "--kill-after", "0.5"])
            .args(&lock_args)
            .args(["echo", "new"])
            .output()
            .unwrap();
        assert!(
            alive(stranger.0.id() as i32),
            "{backend}: --replace signalled the process that reused the holder's pid: {output:?}"
        );
        assert!(alive(hidden_holder), "{backend}");
        assert_eq!(output.status.code(), Some(4), "{backend}: {output:?}");
        assert!(output.stdout.is_empty(), "{backend}: {output:?}");
        let message = common::one_error_line(&output.stderr);
        assert!(
            message.contains("cannot stop") && !message.contains(&format!("pid {recorded}")),
            "{backend}: {message}"
        );
        let (_bin, mut test) = common::me_only_as_user(NOBODY);
        let output = test.arg("--test").args(&lock_args).output().unwrap();
        assert_eq!(output.status.code(), Some(4), "{backend}: {output:?}");
        assert!(
            !text(&output.stdout).contains(&recorded.to_string()),
            "{backend}: --test named the pid's new owner: {output:?}"
        );
    }
}

/// A process the test started that is not its child, held by a pidfd
/// opened while it is known to run: killed on drop, or when asked, without
/// ever reaching a process that reused its pid once it is gone (the test
/// of pid reuse makes pids come round again quickly).
struct Started(std::os::fd::OwnedFd);

impl Started {
    fn new(pid: i32) -> Started {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        assert!(
            fd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel just returned this descriptor to us alone.
        Started(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
    }

    fn kill(&self) {
        self.signal(nix::libc::SIGKILL);
    }

    fn signal(&self, signal: nix::libc::c_int) {
        use std::os::fd::AsRawFd;
        // SAFETY: no siginfo is passed; the descriptor is open.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0,
            );
        }
    }
}

impl Started {
    /// Whether it exits within `limit`.
    fn exits_within(&self, limit: Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut exited = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        poll(&mut exited, PollTimeout::try_from(limit).unwrap()).unwrap() == 1
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Defect 3 of issue 21: a process that merely has the lock file open (a
/// shell's `< lockfile`) does not hold the flock, and is neither named nor
/// signalled; the child that was left the lock is.
#[test]
fn a_process_with_the_lock_file_open_is_not_the_flock_holder() {
    let (_dir, file) = common::lock_file();
    std::fs::write(&file, "").unwrap();
    let bystander = KillOnDrop(
        Command::new("sleep")
            .arg("600")
            .stdin(std::fs::File::open(&file).unwrap())
            .spawn()
            .unwrap(),
    );
    // sh takes the lock, leaves it to a background child, and exits.
    let mut holder = common::me_only_flock()
        .arg(&file)
        .args(["sh", "-c", "sleep 600 & echo $!"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = read_pid(&mut BufReader::new(holder.stdout.take().unwrap()));
    let child = Started::new(child_pid);
    assert!(holder.wait().unwrap().success());

    let output = common::me_only_flock()
        .arg("--test")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(text(&output.stdout), format!("{child_pid}\n"), "{output:?}");
    let file_lock = [file.to_string_lossy().into_owned()];
    let output = run_new(&words(
        &["--flock", "--replace", "--kill-after", "0.5"],
        &file_lock,
    ));
    assert!(
        alive(bystander.0.id() as i32),
        "the bystander was signalled"
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "new\n");
    assert!(child.exits_within(Duration::from_secs(5)));
}

/// Defect 4 of issue 21: `me-only --replace LOCK ...` from inside the
/// instance (the replacer inherits the lock's descriptor, or descends from
/// the --fork supervisor that holds it) stops the rest and runs, instead of
/// stopping itself: exec'd as COMMAND (the supervisor would pass its signal
/// on to it, and its death would kill it), or started by COMMAND (the
/// supervisor, a subreaper, would wait for it while it waits for the
/// supervisor: a --kill-after of 600 s would show as such a wait).
#[test]
fn replace_from_inside_the_holder_stops_the_rest_and_runs() {
    for mode in [&[][..], &["--fork"], &["--max-time", "600"]] {
        for how in ["exec", ""] {
            for (backend, lock, _dir) in each_kernel_lock("replace-inside", 1) {
                let lock_words = lock.join(" ");
                let script = format!(
                    "sleep 600 >/dev/null 2>&1 & echo $!; read go; \
                     {how} {ME_ONLY} --replace --kill-after 600 {lock_words} echo new"
                );
                let (mut holder, mut said) = start_saying(&words(mode, &lock), &script);
                // Held by a pidfd while sh waits to go on, so alive.
                let child = Started::new(read_pid(&mut said));
                let started = std::time::Instant::now();
                writeln!(holder.0.stdin.take().unwrap(), "go").unwrap();
                let mut rest = String::new();
                std::io::Read::read_to_string(&mut said, &mut rest).unwrap();
                let case = format!("{mode:?} {how:?} {backend}");
                assert_eq!(rest, "new\n", "{case}");
                assert!(child.exits_within(Duration::from_secs(5)), "{case}");
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{case}: the replacer waited for --kill-after"
                );
            }
        }
    }
}

/// Defect 7 of issue 21: --replace-older judges the instance by its age,
/// and stops all of it or none: an old sh with a young child holding the
/// lock with it is stopped whole.
#[test]
fn replace_older_stops_an_old_instance_whole_even_its_young_processes() {
    for (backend, lock, _dir) in each_kernel_lock("replace-older-whole", 1) {
        let (mut holder, mut said) =
            start_saying(&lock, "echo $$; read go; sleep 600 & echo $!; wait");
        read_pid(&mut said);
        // The instance is older than the limit by then; its child is not.
        std::thread::sleep(Duration::from_millis(1200));
        writeln!(holder.0.stdin.as_mut().unwrap(), "go").unwrap();
        let young = Started::new(read_pid(&mut said));
        let output = run_new(&words(
            &["--replace-older", "1", "--kill-after", "0.5"],
            &lock,
        ));
        assert!(output.status.success(), "{backend}: {output:?}");
        assert_eq!(text(&output.stdout), "new\n", "{backend}");
        assert!(young.exits_within(Duration::from_secs(5)), "{backend}");
        assert!(holder.0.wait().unwrap().signal().is_some(), "{backend}");
    }
}

/// Starts `waiter` (me-only ... --wait ... LOCK) behind a holder of `lock`
/// that lets go 1.2 s later (`meanwhile` done first); returns once the
/// waiter holds the lock (its COMMAND said so), its processes older than a
/// limit of 1 s, its lock not.
fn a_holder_that_waited(
    mut waiter: Command,
    lock: &[String],
    meanwhile: impl FnOnce(),
) -> KillOnDrop {
    let first = Holding::start(lock);
    let mut waiter = KillOnDrop(common::spawn_waiting(waiter.args([
        "sh",
        "-c",
        "echo ready; exec sleep 600",
    ])));
    meanwhile();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(first.release().success());
    let mut line = String::new();
    BufReader::new(waiter.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    waiter
}

/// Defect 7 of issue 21: the instance's age counts from when it took the
/// lock, not from when its processes started: a --wait holder that waited
/// longer than --replace-older's limit, and has just taken the lock, is
/// young (in exec mode, and as a --fork supervisor).
#[test]
fn replace_older_counts_a_holder_that_waited_from_when_it_took_the_lock() {
    for mode in [&[][..], &["--fork"]] {
        for (backend, lock, _dir) in each_kernel_lock("replace-older-waited", 1) {
            let mut waiter = me_only();
            waiter.args(["-v", "--wait"]).args(mode).args(&lock);
            let mut waiter = a_holder_that_waited(waiter, &lock, || {});
            let replacer = words(&["--replace-older", "1"], &lock);
            let message = refused(me_only().args(replacer).args(["echo", "new"]), 4);
            assert!(
                message.contains("already held"),
                "{mode:?} {backend}: {message}"
            );
            assert!(
                waiter.0.try_wait().unwrap().is_none(),
                "{mode:?} {backend}: the holder that just took the lock was stopped"
            );
        }
    }
}

/// Defect 8 of issue 21: a --fork or --max-time holder's children hold no
/// lock descriptor (me-only keeps the lock), and are stopped with it.
#[test]
fn replace_stops_a_supervised_holder_with_every_process_it_started() {
    for mode in [&["--fork"][..], &["--max-time", "600"]] {
        for (backend, lock, _dir) in each_kernel_lock("replace-supervised", 1) {
            let script = "sleep 600 & echo $!; sleep 600 & echo $!; wait";
            let (holder, mut said) = start_saying(&words(mode, &lock), script);
            let children = [read_pid(&mut said), read_pid(&mut said)].map(Started::new);
            let output = run_new(&words(&["--replace", "--kill-after", "0.5"], &lock));
            assert!(output.status.success(), "{mode:?} {backend}: {output:?}");
            for child in &children {
                assert!(
                    child.exits_within(Duration::from_secs(5)),
                    "{mode:?} {backend}: a child runs on beside the new instance"
                );
            }
            drop(holder);
        }
    }
}

/// Defect 9 of issue 21: with --fork or --max-time, a background child that
/// COMMAND left running is still the instance: the lock stays held until it
/// is gone, and --max-time stops it when the time is up.
#[test]
fn a_supervised_commands_background_child_keeps_the_lock() {
    for mode in [&["--fork"][..], &["--max-time", "600"]] {
        for (backend, lock, _dir) in each_kernel_lock("supervised-child", 1) {
            let (mut holder, mut said) =
                start_saying(&words(mode, &lock), "sleep 600 & echo $!; exit 7");
            let child = Started::new(read_pid(&mut said));
            refused(me_only().args(&lock).args(["echo", "ran"]), 4);
            assert!(
                holder.0.try_wait().unwrap().is_none(),
                "{mode:?} {backend}: me-only let go while COMMAND's child runs"
            );
            child.kill();
            let status = holder.0.wait().unwrap();
            assert_eq!(status.code(), Some(7), "{mode:?} {backend}: COMMAND's own");
            let output = run_new(&lock);
            assert!(output.status.success(), "{mode:?} {backend}: {output:?}");
        }
    }
}

/// A supervisor killed with SIGKILL takes COMMAND along (its death
/// signal), but not what COMMAND left running: that must still hold the
/// lock, through the descriptor it inherited, or it would run beside the
/// next instance (found by scripts/chaos, seed 2).
#[test]
fn what_a_killed_supervisors_command_left_running_keeps_the_lock() {
    for mode in [&["--fork"][..], &["--max-time", "600"]] {
        for (backend, lock, _dir) in each_kernel_lock("killed-supervisor", 1) {
            let (mut holder, mut said) =
                start_saying(&words(mode, &lock), "sleep 600 & echo $!; wait");
            let child = Started::new(read_pid(&mut said));
            holder.0.kill().unwrap();
            holder.0.wait().unwrap();
            let output = run_new(&lock);
            assert_eq!(
                output.status.code(),
                Some(4),
                "{mode:?} {backend}: ran beside the killed supervisor's leftover: {output:?}"
            );
            child.kill();
            assert!(child.exits_within(Duration::from_secs(5)), "{backend}");
            let output = run_new(&lock);
            assert!(output.status.success(), "{mode:?} {backend}: {output:?}");
        }
    }
}

/// --max-time caps the whole instance: COMMAND ended in time, its
/// background child did not, and is stopped; me-only exits as COMMAND did
/// (it was not COMMAND that ran out of time).
#[test]
fn max_time_stops_the_background_child_of_a_command_that_ended() {
    for (backend, lock, _dir) in each_kernel_lock("max-time-child", 1) {
        let capped = words(&["--max-time", "0.5", "--kill-after", "0.5"], &lock);
        let (mut holder, mut said) = start_saying(&capped, "sleep 600 & echo $!; exit 3");
        let child = Started::new(read_pid(&mut said));
        let status = holder.0.wait().unwrap();
        assert_eq!(status.code(), Some(3), "{backend}");
        assert!(
            child.exits_within(Duration::ZERO),
            "{backend}: the child runs on past --max-time"
        );
        let output = run_new(&lock);
        assert!(output.status.success(), "{backend}: {output:?}");
    }
}

/// An instance larger than the replacer's descriptor limit (a pidfd per
/// process) is stopped all or not at all: here not at all, every process
/// left as it was (none left frozen; one stopped before, as by ^Z, still
/// stopped), and the replacer says so (exit 4).
#[test]
fn an_instance_too_large_to_hold_is_left_whole_and_running() {
    for (backend, lock, _dir) in each_kernel_lock("replace-too-many", 1) {
        let script = "for i in $(seq 100); do sleep 600 >/dev/null & echo $!; done; wait";
        let (_holder, mut said) = start_saying(&words(&["--fork"], &lock), script);
        let sleeps: Vec<(i32, Started)> = (0..100)
            .map(|_| {
                let pid = read_pid(&mut said);
                (pid, Started::new(pid))
            })
            .collect();
        let (job, job_pidfd) = &sleeps[0];
        job_pidfd.signal(nix::libc::SIGSTOP);
        while !stopped(*job) {
            std::thread::yield_now();
        }
        let replace = format!(
            "ulimit -n 40; exec {ME_ONLY} --replace --kill-after 0.5 {} echo new",
            lock.join(" ")
        );
        let output = Command::new("sh").args(["-c", &replace]).output().unwrap();
        assert_eq!(output.status.code(), Some(4), "{backend}: {output:?}");
        let message = common::one_error_line(&output.stderr);
        assert!(message.contains("descriptor limit"), "{backend}: {message}");
        assert!(stopped(*job), "{backend}: the stopped job was continued");
        for (pid, sleep) in &sleeps[1..] {
            assert!(
                !sleep.exits_within(Duration::ZERO),
                "{backend}: {pid} stopped"
            );
            assert!(
                alive(*pid) && !stopped(*pid),
                "{backend}: {pid} left frozen"
            );
        }
    }
}

/// Whether process `pid` is stopped (state T).
fn stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('T')
    })
}

/// An etcd --fork holder started by a child subreaper (as if it were pid 1
/// of a container, or a service manager had exec'd it) adopts its own lease
/// keeper: it is not COMMAND's, and neither waited for nor stopped (me-only
/// waited for it for ever).
#[cfg(feature = "etcd")]
#[test]
fn an_etcd_keeper_that_comes_back_to_a_fork_holder_is_not_waited_for() {
    use common::etcd::{Etcd, lock_name, on};

    if !common::programs_or_skip(&["python3"]) {
        return;
    }
    let Some(etcd) = Etcd::start() else { return };
    let holder = on(
        &etcd,
        &["--fork", &lock_name("adopted-keeper"), "echo", "ran"],
    );
    let mut words: Vec<&std::ffi::OsStr> = vec![holder.get_program()];
    words.extend(holder.get_args());
    // PR_SET_CHILD_SUBREAPER, kept across exec.
    let subreaper = "import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); \
                     os.execv(sys.argv[1], sys.argv[1:])";
    let (mut run, line) =
        common::first_line(Command::new("python3").args(["-c", subreaper]).args(words));
    assert_eq!(line, "ran\n");
    assert!(
        common::gone_within(run.0.id() as i32, Duration::from_secs(30)),
        "me-only waits for its keeper"
    );
    assert!(run.0.wait().unwrap().success());
}

/// All of it or none, counting what the holders started: a --fork
/// holder's COMMAND that runs as another user (through a set-user-id copy
/// of setpriv) may not be signalled by the replacer, so nothing is stopped
/// (it ran on beside the new COMMAND, the supervisor killed).
#[test]
fn an_instance_with_a_process_the_replacer_may_not_signal_is_left_whole() {
    use std::os::unix::fs::PermissionsExt;

    if !common::root_or_skip("run processes as other users")
        || !common::programs_or_skip(&["setpriv"])
    {
        return;
    }
    let lock = common::unique_lock("replace-other-user");
    let (bin, mut holder) = common::me_only_as_user(65534);
    let setpriv = bin.path().join("setpriv");
    let copied = Command::new("cp")
        .args(["/usr/bin/setpriv".as_ref(), setpriv.as_os_str()])
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::set_permissions(&setpriv, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let script = format!(
        "{} --reuid=65533 --regid=65533 --clear-groups sleep 600 & echo $!; echo $$; wait",
        setpriv.display()
    );
    let mut run = KillOnDrop(
        holder
            .args(["--fork", &lock, "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut said = BufReader::new(run.0.stdout.take().unwrap());
    let other_users = Started::new(read_pid(&mut said));
    let command = read_pid(&mut said);
    let (_bin, mut replacer) = common::me_only_as_user(65534);
    let output = replacer
        .args(["--replace", "--kill-after", "0.5", &lock, "echo", "new"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let message = common::one_error_line(&output.stderr);
    assert!(message.contains("not permitted to signal all"), "{message}");
    assert!(!other_users.exits_within(Duration::ZERO), "it was stopped");
    for pid in [run.0.id() as i32, command] {
        assert!(alive(pid) && !stopped(pid), "{pid} stopped or left frozen");
    }
}

/// A --fork holder that waited is measured by its COMMAND's
/// ME_ONLY_LOCKED_AT even after me-only was upgraded on disk while it ran
/// (its /proc/PID/exe then reads "... (deleted)"): it was taken for a
/// COMMAND, aged by its start, and stopped.
#[test]
fn replace_older_knows_a_fork_holder_that_waited_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("me-only");
    let install = |binary: &std::path::Path| {
        let new = dir.path().join("me-only.new");
        assert!(
            Command::new("cp")
                .arg(ME_ONLY)
                .arg(&new)
                .status()
                .unwrap()
                .success()
        );
        std::fs::rename(&new, binary).unwrap();
    };
    install(&binary);
    let lock = common::unique_lock("replace-older-upgraded");
    let mut waiter = Command::new(&binary);
    waiter.args(["-v", "--wait", "--fork", &lock]);
    // Upgraded while the holder waits, not after it took the lock: the
    // copy of a debug build takes a while, and counts against the limit.
    let upgrade = || install(&binary);
    let mut waiter = a_holder_that_waited(waiter, std::slice::from_ref(&lock), upgrade);
    let message = refused(
        Command::new(&binary).args(["--replace-older", "1", &lock, "echo", "new"]),
        4,
    );
    assert!(message.contains("already held"), "{message}");
    assert!(
        waiter.0.try_wait().unwrap().is_none(),
        "the holder was stopped"
    );
}

/// A holder's age counts from when it took the lock even where the process
/// that took it ran a while before it exec'd me-only (a wrapper script's
/// set-up): the process is older than the limit, the instance is not.
#[test]
fn replace_older_counts_from_the_lock_not_from_a_wrappers_start() {
    for (backend, lock, _dir) in each_kernel_lock("replace-older-wrapper", 1) {
        let wrapper = format!(
            "sleep 1.2; exec {ME_ONLY} {} sh -c 'echo ready; exec sleep 600'",
            lock.join(" ")
        );
        let (_holder, line) = common::first_line(Command::new("sh").args(["-c", &wrapper]));
        assert_eq!(line, "ready\n", "{backend}");
        let replacer = words(&["--replace-older", "1"], &lock);
        let message = refused(me_only().args(replacer).args(["echo", "new"]), 4);
        assert!(message.contains("already held"), "{backend}: {message}");
    }
}
