//! The library and the command guard each other: a Rust program holding a
//! lock through `me_only::Lock` (examples/hold.rs, examples/worker.rs) and
//! `me-only` on the same lock, in both directions, for each kernel lock.

use crate::common;

use std::ffi::OsStr;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Holding, each_kernel_lock, first_line, me_only, text};
use me_only::{Error, Lock, Wait};

/// "At once", generously: a waiter sleeps on the holder's hang-up (or in
/// flock(2)) and starts within milliseconds.
const PROMPT: Duration = Duration::from_millis(500);

/// One kernel lock as both sides name it.
struct Case {
    /// The example's and the library's kind: named, tcp or file.
    kind: &'static str,
    /// The lock as given (name, ADDR:PORT, path).
    lock: String,
    /// me-only's options for it.
    cli: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Case {
    fn library(&self) -> Lock {
        match self.kind {
            "named" => Lock::named(&self.lock),
            "tcp" => Lock::tcp(&self.lock),
            _ => Lock::file(&self.lock),
        }
        .unwrap()
    }

    /// `me-only <lock options> ARGS...`.
    fn me_only<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Command {
        let mut command = me_only();
        command.args(&self.cli).args(args);
        command
    }

    /// The example `hold` holding this lock until released.
    fn held_by_the_library(&self) -> Holding {
        let mut hold = Command::new(common::example("hold"));
        // Its line naming its pid is for a person; the test knows the pid.
        hold.args([self.kind, &self.lock]).stderr(Stdio::null());
        Holding::spawn(hold)
    }
}

/// A fresh lock of each kernel kind; `ports` consecutive free ports for TCP.
fn cases(tag: &str, ports: u16) -> Vec<Case> {
    each_kernel_lock(tag, ports)
        .into_iter()
        .map(|(label, cli, dir)| Case {
            kind: match label {
                "abstract" => "named",
                "tcp" => "tcp",
                _ => "file",
            },
            lock: cli.last().unwrap().clone(),
            cli,
            _dir: dir,
        })
        .collect()
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[test]
fn a_library_holder_turns_me_only_away_naming_its_pid() {
    for case in cases("library-holds", 1) {
        let holder = case.held_by_the_library();
        let name = case.library().name().to_owned();
        assert_eq!(
            common::refused(&mut case.me_only(["echo", "ran"]), 4),
            format!(
                "me-only: {name}: already held by pid {} (uid {})\n",
                holder.pid,
                uid()
            ),
            "{}",
            case.kind
        );
        let tested = case.me_only([]).arg("--test").output().unwrap();
        assert_eq!(tested.status.code(), Some(4), "{}: {tested:?}", case.kind);
        assert_eq!(text(&tested.stdout), format!("{}\n", holder.pid));
        assert!(holder.release().success());
        assert!(case.me_only(["true"]).status().unwrap().success());
    }
}

#[test]
fn me_only_wait_starts_as_the_library_guard_drops() {
    for case in cases("library-wait", 1) {
        let holder = case.held_by_the_library();
        let cli: Vec<&str> = case.cli.iter().map(String::as_str).collect();
        let latency = common::handover(holder, &cli);
        println!("{}: started {latency:?} after the guard dropped", case.kind);
        assert!(latency < PROMPT, "{}: {latency:?}", case.kind);
    }
}

#[test]
fn while_me_only_holds_the_library_is_turned_away_with_its_pid() {
    for case in cases("library-refused", 1) {
        let holder = Holding::start(&case.cli);
        let lock = case.library();
        assert!(lock.try_acquire().unwrap().is_none(), "{}", case.kind);
        let wait = Duration::from_millis(200);
        match lock.acquire(Wait::For(wait)) {
            Err(Error::Busy {
                holder: busy,
                waited,
                ..
            }) => {
                assert_eq!(busy.pid, Some(holder.pid as i32), "{}", case.kind);
                assert!(waited.is_some_and(|waited| waited >= wait), "{waited:?}");
            }
            other => panic!("{}: expected Busy, got {other:?}", case.kind),
        }
        match lock.acquire(Wait::No) {
            Err(err @ Error::Busy { waited: None, .. }) => assert_eq!(
                err.to_string(),
                format!(
                    "{}: already held by pid {} (uid {})",
                    lock.name(),
                    holder.pid,
                    uid()
                )
            ),
            other => panic!("{}: expected Busy, got {other:?}", case.kind),
        }
        let probed = lock.probe().unwrap().expect("held");
        assert_eq!(probed.pid, Some(holder.pid as i32), "{}", case.kind);
        assert!(holder.release().success());
        // Not try_acquire: the file lock's timed wait above left a thread
        // blocked in flock(2) (flock has no timeout), which the release
        // wakes and which holds the lock for an instant before it lets go.
        let taken = lock.acquire(Wait::For(Duration::from_secs(2)));
        assert!(taken.is_ok(), "{}: {taken:?}", case.kind);
    }
}

/// A wait that ran out kept what it waited with in the Lock: for a file,
/// the open file whose blocked flock(2) the holder's release then granted,
/// so the lock stayed held by the Lock object that had given up on it.
#[test]
fn a_wait_that_ran_out_leaves_nothing_holding_the_lock() {
    for case in cases("library-gave-up", 1) {
        let holder = Holding::start(&case.cli);
        let lock = case.library();
        let gave_up = lock.acquire(Wait::For(Duration::from_millis(100)));
        assert!(matches!(gave_up, Err(Error::Busy { .. })), "{gave_up:?}");
        assert!(holder.release().success());
        // A waiter's blocked flock(2) may win the release for an instant
        // before it lets go; it must not keep the lock.
        let after = case
            .me_only(["--wait", "--timeout", "2", "true"])
            .output()
            .unwrap();
        assert!(after.status.success(), "{}: {after:?}", case.kind);
        drop(lock);
    }
}

#[test]
fn a_command_of_me_only_adopts_the_lock_it_inherited() {
    for case in cases("library-adopts", 1) {
        let name = case.library().name().to_owned();
        let (mut adopted, line) =
            first_line(case.me_only([]).arg(common::example("worker")).arg("adopt"));
        let fd = line
            .strip_prefix(&format!("inherited {name} on fd "))
            .and_then(|fd| fd.trim_end().parse::<i32>().ok())
            .unwrap_or_else(|| panic!("{}: said {line:?}", case.kind));
        // Adopted, the descriptor is close-on-exec, as any guard's.
        let pid = adopted.0.id();
        let fdinfo = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
        let flags = fdinfo
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .map(|flags| i32::from_str_radix(flags.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & nix::libc::O_CLOEXEC, 0, "{}: {fdinfo}", case.kind);
        // It holds the lock.
        let refused = common::refused(&mut case.me_only(["echo", "ran"]), 4);
        assert!(refused.contains(&format!("by pid {pid} ")), "{refused}");
        drop(adopted.0.stdin.take());
        assert!(adopted.0.wait().unwrap().success());
    }
}

#[test]
fn a_forged_me_only_fd_is_not_taken_for_the_lock() {
    use std::os::fd::AsRawFd;

    for case in cases("library-forged", 2) {
        let _holder = Holding::start(&case.cli);
        let adopt = || {
            let mut worker = Command::new(common::example("worker"));
            worker
                .arg("adopt")
                .env("ME_ONLY_LOCK", &case.lock)
                .stdin(Stdio::null());
            worker
        };
        // A descriptor that is no lock at all.
        let not_a_lock = std::fs::File::open("/dev/null").unwrap();
        let mut forged = adopt();
        forged.env("ME_ONLY_FD", "7");
        common::inherit_fd_as(&mut forged, not_a_lock.as_raw_fd(), 7);
        let said = forged.output().unwrap();
        assert_eq!(text(&said.stdout), "none\n", "{}: {said:?}", case.kind);
        // The descriptor of another lock of the same kind: me-only's
        // COMMAND holds that one, while the environment names this one.
        let other = cases("library-forged-other", 1)
            .into_iter()
            .find(|other| other.kind == case.kind)
            .unwrap();
        let mut under_other = other.me_only(["env", &format!("ME_ONLY_LOCK={}", case.lock)]);
        under_other
            .arg(common::example("worker"))
            .arg("adopt")
            .stdin(Stdio::null());
        let said = under_other.output().unwrap();
        assert_eq!(text(&said.stdout), "none\n", "{}: {said:?}", case.kind);
        assert_eq!(said.status.code(), Some(1));
        // And no ME_ONLY_FD at all.
        let said = adopt().env_remove("ME_ONLY_FD").output().unwrap();
        assert_eq!(text(&said.stdout), "none\n", "{}: {said:?}", case.kind);
    }
}

#[test]
fn a_shared_guard_is_held_by_the_child_too() {
    for case in cases("library-shares", 1) {
        let name = case.library().name().to_owned();
        let (mut share, mut stdout) = common::spawn_piped(
            Command::new(common::example("worker")).args(["share", case.kind, &case.lock]),
        );
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.starts_with(&format!("inherited {name} on fd ")),
            "{}: {line:?}",
            case.kind
        );
        common::refused(&mut case.me_only(["echo", "ran"]), 4);
        drop(share.0.stdin.take());
        assert!(share.0.wait().unwrap().success());
        assert!(case.me_only(["true"]).status().unwrap().success());
    }
}

/// A lock file in a directory of its own, and the guard that holds it.
fn a_held_lock_file() -> (tempfile::TempDir, PathBuf, me_only::Guard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let holder = Lock::file(&path)
        .unwrap()
        .try_acquire()
        .unwrap()
        .expect("free");
    (dir, path, holder)
}

/// Each timed-out wait for a file lock left a thread blocked in flock(2)
/// and its descriptor: without bound in a program that waits again and
/// again, and each took the lock for an instant once the holder let go.
#[test]
fn timed_out_waits_for_a_file_leave_no_thread_or_descriptor_behind() {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    let (_dir, path, holder) = a_held_lock_file();
    let lock = Lock::file(&path).unwrap();
    let threads = count("/proc/self/task");
    let descriptors = count("/proc/self/fd");
    for _ in 0..20 {
        match lock.acquire(Wait::For(Duration::from_millis(5))) {
            Err(Error::Busy { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    // Other tests start and end threads and descriptors meanwhile: twenty
    // more of either is what the waits left.
    assert!(
        count("/proc/self/task") < threads + 20,
        "threads left behind"
    );
    assert!(
        count("/proc/self/fd") < descriptors + 20,
        "descriptors left behind"
    );
    drop(holder);
    assert!(lock.acquire(Wait::For(PROMPT)).is_ok());
}

/// A bounded wait for a file lock watches the file: it ends as the holder
/// lets go, not at its deadline.
#[test]
fn a_bounded_wait_for_a_file_ends_as_the_holder_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let holder = Holding::start([OsStr::new("--flock"), path.as_os_str()]);
    let lock = Lock::file(&path).unwrap();
    let waiter = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        lock.acquire(Wait::For(Duration::from_secs(60)))
            .map(|guard| (guard, started.elapsed()))
    });
    // The waiter is in its wait, or about to be: either way it must get the
    // lock once the holder is gone, long before its minute is up.
    assert!(holder.release().success());
    let (_guard, waited) = waiter.join().unwrap().expect("taken");
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
}

/// share_with used to tell the child the guard's descriptor number: a
/// child spawned after the guard dropped got whatever had that number by
/// then (another lock, taken meanwhile), and kept that lock. Now the spawn
/// fails, and the other lock stays its taker's alone.
#[test]
fn a_command_shared_with_cannot_be_spawned_once_its_guard_dropped() {
    let tag = format!("library-share-late-{}", std::process::id());
    let (a, b) = (
        Lock::named(format!("{tag}-a")).unwrap(),
        Lock::named(format!("{tag}-b")).unwrap(),
    );
    let guard_a = a.try_acquire().unwrap().expect("free");
    let mut child = Command::new("sh");
    child.args(["-c", "exec sleep 30"]);
    guard_a.share_with(&mut child).unwrap();
    drop(guard_a);
    let guard_b = b.try_acquire().unwrap().expect("free");
    let spawned = child.spawn();
    assert!(spawned.is_err(), "spawned without its lock: {spawned:?}");
    drop(guard_b);
    // Waited for: a child that another test forks meanwhile holds every
    // descriptor of this process until its exec.
    assert!(b.acquire(Wait::For(PROMPT)).is_ok(), "lock b is held");
    assert!(a.acquire(Wait::For(PROMPT)).is_ok(), "lock a is held");
}

/// A Command that a guard was shared with kept a copy of the descriptor,
/// and so the lock, for as long as it lived, though its child had ended
/// and the guard dropped.
#[test]
fn a_dropped_guard_lets_go_though_a_command_it_was_shared_with_lives() {
    let lock = Lock::named(format!("library-share-kept-{}", std::process::id())).unwrap();
    let guard = lock.try_acquire().unwrap().expect("free");
    let mut command = Command::new("true");
    guard.share_with(&mut command).unwrap();
    assert!(command.status().unwrap().success());
    drop(guard);
    assert!(
        lock.acquire(Wait::For(PROMPT)).is_ok(),
        "held by the Command"
    );
    drop(command);
}

/// Shared twice with one Command, the child got two descriptors of the
/// lock: closing (or adopting and dropping) the one ME_ONLY_FD names did
/// not let go.
#[test]
fn sharing_twice_gives_the_child_one_descriptor() {
    use std::os::fd::AsRawFd;

    let lock = Lock::named(format!("library-share-twice-{}", std::process::id())).unwrap();
    let guard = lock.try_acquire().unwrap().expect("free");
    let socket = std::fs::read_link(format!("/proc/self/fd/{}", guard.as_raw_fd())).unwrap();
    let mut command = Command::new("sh");
    command.args(["-c", "for fd in /proc/$$/fd/*; do readlink $fd; done"]);
    guard.share_with(&mut command).unwrap();
    guard.share_with(&mut command).unwrap();
    let listed = text(&command.output().unwrap().stdout);
    let copies = listed
        .lines()
        .filter(|line| *line == socket.to_str().unwrap())
        .count();
    assert_eq!(copies, 1, "{listed}");
}

/// The inodes that this process's inotify instances watch (fdinfo's
/// `ino:`, in hex).
fn watched_inodes() -> Vec<u64> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
            if let Some(ino) = line.split(' ').find_map(|w| w.strip_prefix("ino:")) {
                inodes.push(u64::from_str_radix(ino, 16).unwrap());
            }
        }
    }
    inodes
}

/// A bounded wait for a file watched the path afresh at every look: once
/// another file was renamed over the path (or a symbolic link planted
/// there), it watched that one, not the file it had open and waited on.
#[test]
fn a_bounded_wait_watches_the_file_it_waits_on_not_what_the_path_names_now() {
    use std::os::unix::fs::MetadataExt;

    let (dir, path, holder) = a_held_lock_file();
    let waited_on = std::fs::metadata(&path).unwrap().ino();
    let waiter_path = path.clone();
    let waiter = std::thread::spawn(move || {
        Lock::file(&waiter_path)
            .unwrap()
            .acquire(Wait::For(Duration::from_secs(60)))
            .is_ok()
    });
    // The waiter watches the file it waits on: it is in its wait.
    assert!(
        common::within(Duration::from_secs(30), || watched_inodes()
            .contains(&waited_on)),
        "the waiter never watched the file"
    );
    let new = dir.path().join("new");
    std::fs::write(&new, "").unwrap();
    let replacement = std::fs::metadata(&new).unwrap().ino();
    std::fs::rename(&new, &path).unwrap();
    // Eight looks (one each 250 ms): none may watch the replacement.
    let watched_the_replacement = common::within(Duration::from_secs(2), || {
        watched_inodes().contains(&replacement)
    });
    assert!(
        !watched_the_replacement,
        "it watches what the path names now"
    );
    drop(holder);
    assert!(waiter.join().unwrap());
}

#[test]
fn a_guard_is_not_inherited_unless_shared() {
    use std::os::fd::AsRawFd;

    for case in cases("library-cloexec", 1) {
        let guard = case.library().try_acquire().unwrap().expect("free");
        let fd = guard.as_raw_fd();
        // Which descriptors the child has: the guard's, and the one
        // ME_ONLY_FD names (shared: the same).
        let listed = |share: bool| {
            let mut child = Command::new("sh");
            child.args([
                "-c",
                &format!(
                    "test -e /proc/$$/fd/{fd} && echo own; \
                     test -n \"$ME_ONLY_FD\" && test -e /proc/$$/fd/$ME_ONLY_FD && echo shared; :"
                ),
            ]);
            child.env_remove("ME_ONLY_FD");
            if share {
                guard.share_with(&mut child).unwrap();
            }
            text(&child.output().unwrap().stdout)
        };
        assert_eq!(listed(false), "", "{}: inherited unshared", case.kind);
        assert_eq!(listed(true), "own\nshared\n", "{}: shared", case.kind);
    }
}

#[test]
fn flock1_and_the_library_keep_each_other_out() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let case = cases("library-flock1", 1).pop().unwrap();
    assert_eq!(case.kind, "file");
    let holder = case.held_by_the_library();
    let flock = Command::new("flock")
        .args(["-n", &case.lock, "true"])
        .status()
        .unwrap();
    assert_eq!(flock.code(), Some(1));
    assert!(holder.release().success());
    let flock1 = common::flock_holder(std::path::Path::new(&case.lock));
    let lock = case.library();
    assert!(lock.try_acquire().unwrap().is_none());
    assert_eq!(
        lock.probe().unwrap().and_then(|holder| holder.pid),
        Some(flock1.pid as i32)
    );
    assert!(flock1.release().success());
    assert!(lock.try_acquire().unwrap().is_some());
}

/// What `worker adopt` says when ME_ONLY_LOCK names `lock` and ME_ONLY_FD
/// is `fd`, handed to it as descriptor 7.
fn adopted_through(lock: &str, fd: std::os::fd::RawFd) -> String {
    let mut worker = Command::new(common::example("worker"));
    worker
        .arg("adopt")
        .env("ME_ONLY_LOCK", lock)
        .env("ME_ONLY_FD", "7")
        .stdin(Stdio::null());
    common::inherit_fd_as(&mut worker, fd, 7);
    let said = worker.output().unwrap();
    text(&said.stdout)
}

/// A shared flock (flock -s) of the lock file was adopted as the lock: a
/// guard that other shared holders hold at the same time is no lock.
#[test]
fn a_shared_flock_of_the_file_is_not_taken_for_the_lock() {
    use std::os::fd::AsRawFd;

    let (_dir, path) = common::lock_file();
    let lock = path.to_str().unwrap();
    let file_locked = |operation| {
        let file = std::fs::File::create(&path).unwrap();
        assert_eq!(unsafe { nix::libc::flock(file.as_raw_fd(), operation) }, 0);
        file
    };
    let shared = file_locked(nix::libc::LOCK_SH);
    assert_eq!(adopted_through(lock, shared.as_raw_fd()), "none\n");
    drop(shared);
    let exclusive = file_locked(nix::libc::LOCK_EX);
    let said = adopted_through(lock, exclusive.as_raw_fd());
    assert!(
        said.starts_with(&format!("inherited {lock} on fd 7")),
        "{said:?}"
    );
}

/// A socket listening on the wildcard address, on the lock's port, was
/// adopted as the lock: it keeps the lock from being taken, but it is not
/// the lock, and a program holding it is no instance.
#[test]
fn a_socket_listening_on_another_address_is_not_taken_for_the_tcp_lock() {
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    // A port of its own for each listener: a child that another test
    // forks at that moment holds a copy of the last one until it execs.
    for wildcard in ["0.0.0.0", "[::]"] {
        let port = common::free_port();
        let listener = TcpListener::bind(format!("{wildcard}:{port}")).unwrap();
        let said = adopted_through(&format!("127.0.0.1:{port}"), listener.as_raw_fd());
        assert_eq!(said, "none\n", "listening on {wildcard}:{port}");
    }
    let lock = format!("127.0.0.1:{}", common::free_port());
    let listener = TcpListener::bind(&lock).unwrap();
    let said = adopted_through(&lock, listener.as_raw_fd());
    assert!(
        said.starts_with(&format!("inherited {lock} on fd 7")),
        "{said:?}"
    );
}
