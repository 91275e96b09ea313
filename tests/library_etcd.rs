//! The library's etcd lock (`me_only::etcd::Lock`) and `me-only --etcd`
//! guard each other, in both directions, against a real etcd; and a
//! library holder learns that its lease is lost (`Guard::lost`).

use crate::common;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{Etcd, hostname, lock_name, on};
use common::{Holding, first_line, text};
use me_only::{Error, Wait, etcd::Lock};
use nix::sys::signal::{Signal, kill};

/// How soon a waiter starts once the holder lets go: etcd's watch tells it
/// at once; generously.
const PROMPT: Duration = Duration::from_secs(1);

fn library(etcd: &Etcd, lock: &str) -> Lock {
    Lock::new(lock, &etcd.endpoint).unwrap()
}

/// The example `hold` holding `lock` in `etcd` until released.
fn held_by_the_library(etcd: &Etcd, lock: &str) -> Holding {
    let mut hold = Command::new(common::example("hold"));
    hold.args(["etcd", lock, &etcd.endpoint])
        .stderr(Stdio::null());
    Holding::spawn(hold)
}

#[test]
fn a_library_holder_turns_me_only_away_naming_its_pid() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("library-holds");
    let holder = held_by_the_library(&etcd, &lock);
    assert_eq!(
        common::refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4),
        format!(
            "me-only: {lock}: already held by pid {} on {}\n",
            holder.pid,
            hostname()
        )
    );
    let tested = on(&etcd, &["--test", &lock]).output().unwrap();
    assert_eq!(tested.status.code(), Some(4), "{tested:?}");
    assert_eq!(
        text(&tested.stdout),
        format!("{} {}\n", hostname(), holder.pid)
    );
    assert!(holder.release().success());
    let taken = on(&etcd, &[&lock, "true"]).output().unwrap();
    assert!(taken.status.success(), "{taken:?}");
}

#[test]
fn me_only_wait_starts_as_the_library_guard_drops() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("library-wait");
    let holder = held_by_the_library(&etcd, &lock);
    let mut waiter = common::spawn_waiting(&mut on(
        &etcd,
        &["-v", "--wait", &lock, "sh", "-c", "echo started"],
    ));
    let mut started = std::io::BufReader::new(waiter.stdout.take().unwrap());
    let released = Instant::now();
    assert!(holder.release().success());
    let mut line = String::new();
    started.read_line(&mut line).unwrap();
    let latency = released.elapsed();
    assert_eq!(line, "started\n");
    assert!(waiter.wait().unwrap().success());
    println!("started {latency:?} after the guard dropped");
    assert!(latency < PROMPT, "{latency:?}");
}

#[test]
fn while_me_only_holds_the_library_is_turned_away_with_its_pid() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("library-refused");
    let (command, fence) = first_line(
        on(&etcd, &[&lock, "sh", "-c", "echo $ME_ONLY_FENCE; exec cat"]).stdin(Stdio::piped()),
    );
    let pid = command.0.id() as i32;
    let library = library(&etcd, &lock);
    assert!(library.try_acquire().unwrap().is_none());
    match library.acquire(Wait::For(Duration::from_millis(300))) {
        Err(Error::Busy { holder, waited, .. }) => {
            assert_eq!(holder.pid, Some(pid));
            assert_eq!(holder.host, Some(hostname()));
            assert!(waited >= Some(Duration::from_millis(300)), "{waited:?}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(
        library.probe().unwrap().and_then(|holder| holder.pid),
        Some(pid)
    );
    drop(command);
    let guard = library.acquire(Wait::For(Duration::from_secs(10))).unwrap();
    let fence: i64 = fence.trim().parse().unwrap();
    assert!(guard.fence() > fence, "{} after {fence}", guard.fence());
}

#[test]
fn a_library_waiter_starts_as_me_only_lets_go_and_leaves_no_key_when_it_gives_up() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("library-waits");
    let holder = Holding::start(["--etcd", &etcd.endpoint, &lock]);
    let library = library(&etcd, &lock);
    // A wait that runs out takes its place in line with it.
    assert!(matches!(
        library.acquire(Wait::For(Duration::from_millis(200))),
        Err(Error::Busy { .. })
    ));
    assert_eq!(
        etcd.keys_under(&lock).len(),
        1,
        "{:?}",
        etcd.keys_under(&lock)
    );
    let waiting = std::thread::spawn(move || {
        let guard = library.acquire(Wait::Forever).unwrap();
        (Instant::now(), guard.fence())
    });
    // Queued: its key is in line behind the holder's.
    assert!(common::within(Duration::from_secs(5), || etcd
        .keys_under(&lock)
        .len()
        == 2));
    let released = Instant::now();
    assert!(holder.release().success());
    let (started, _) = waiting.join().unwrap();
    let latency = started - released;
    println!("the library started {latency:?} after me-only let go");
    assert!(latency < PROMPT, "{latency:?}");
    // The guard dropped with the thread: its lease revoked, no key left.
    assert_eq!(etcd.keys_under(&lock), Vec::<String>::new());
}

#[test]
fn a_library_guard_learns_its_key_was_deleted_and_drop_frees_the_lock() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("library-deleted");
    let guard = library(&etcd, &lock)
        .ttl(Duration::from_secs(2))
        .try_acquire()
        .unwrap()
        .expect("free");
    let lost = guard.lost();
    assert!(!lost.is_lost());
    etcd.delete_keys_of(&lock);
    // Seen at the next renewal: a third of the TTL.
    assert!(lost.wait_timeout(Duration::from_secs(3)), "{lost:?}");
    assert_eq!(lost.reason().as_deref(), Some("lock key deleted"));
    drop(guard);
    let taken = on(&etcd, &[&lock, "true"]).output().unwrap();
    assert!(taken.status.success(), "{taken:?}");
}

#[test]
fn a_guard_dropped_revokes_its_lease_at_once() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("library-drop");
    let guard = library(&etcd, &lock).try_acquire().unwrap().expect("free");
    let lost = guard.lost();
    assert_eq!(etcd.keys_under(&lock).len(), 1);
    drop(guard);
    assert_eq!(etcd.keys_under(&lock), Vec::<String>::new());
    // A handle that outlives its guard says so.
    assert!(lost.is_lost());
    assert_eq!(lost.reason().as_deref(), Some("the guard was dropped"));
}

#[test]
fn a_library_holder_cut_off_from_etcd_is_told_before_its_lease_can_run_out() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("library-cut-off");
    let ttl = Duration::from_secs(2);
    let guard = library(&etcd, &lock)
        .ttl(ttl)
        .try_acquire()
        .unwrap()
        .expect("free");
    let lost = guard.lost();
    let granted = Instant::now();
    kill(etcd.pid(), Signal::SIGSTOP).unwrap();
    let told = lost.wait_timeout(ttl * 2);
    let after = granted.elapsed();
    kill(etcd.pid(), Signal::SIGCONT).unwrap();
    assert!(told, "not told in {:?}", ttl * 2);
    // Granted before `granted`, the lease can run out in etcd a TTL after
    // it at the earliest: the holder is told before (a fencing margin
    // before, a quarter of the TTL, less the time to wake it).
    assert!(after < ttl, "told {after:?} after the grant");
    let reason = lost.reason().unwrap();
    assert!(
        reason.starts_with("lease lost: etcd unreachable"),
        "{reason}"
    );
}

#[test]
fn me_only_replace_asks_a_library_holder_to_stop() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("library-replaced");
    let guard = library(&etcd, &lock)
        .ttl(Duration::from_secs(2))
        .try_acquire()
        .unwrap()
        .expect("free");
    let lost = guard.lost();
    let mut replacer = on(&etcd, &["--replace", &lock, "sh", "-c", "echo replaced"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(lost.wait_timeout(Duration::from_secs(5)), "{lost:?}");
    assert_eq!(
        lost.reason().as_deref(),
        Some("replaced (another instance ran me-only --replace)")
    );
    // The holder stops and lets go: the replacer runs.
    drop(guard);
    let mut line = String::new();
    std::io::BufReader::new(replacer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "replaced\n");
    assert!(replacer.wait().unwrap().success());
}

#[test]
fn bad_etcd_input_is_an_error_not_a_panic() {
    assert!(matches!(
        Lock::new("", "http://127.0.0.1:2379"),
        Err(Error::InvalidName(_))
    ));
    assert!(matches!(Lock::new("x", ""), Err(Error::InvalidName(_))));
    assert!(matches!(
        Lock::new("x", "ftp://h"),
        Err(Error::InvalidName(_))
    ));
    // A huge TTL is a day, not an overflow.
    let lock = Lock::new("x", "http://127.0.0.1:9")
        .unwrap()
        .ttl(Duration::MAX);
    // Nothing listens on port 9 of loopback: an error, at once.
    let err = lock.try_acquire().unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with("x: "), "{err}");
}
