//! --slots N: at most N instances at once, each told its slot.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use common::{
    Detached, Holding, KillOnDrop, each_kernel_lock, gives_up_after, gone_within, me_only, refused,
    spawn_waiting, text,
};

/// A holder of one of LOCK's slots (`lock` holds the lock options, LOCK
/// last) that runs until released.
fn slot_holder(slots: &str, lock: &[String]) -> Holding {
    let mut options = vec!["--slots".to_owned(), slots.to_owned()];
    options.extend_from_slice(lock);
    Holding::start(&options)
}

/// `me-only --slots COUNT --test LOCK`'s output.
fn test_slots(count: &str, lock: &[String]) -> std::process::Output {
    me_only()
        .args(["--slots", count, "--test"])
        .args(lock)
        .output()
        .unwrap()
}

/// Lets `holder` go, and returns what `waiter` (waiting for any slot, with
/// stdout piped) printed once it ran, after it exited successfully.
fn handed_over(holder: Holding, waiter: &mut KillOnDrop) -> String {
    assert!(holder.release().success());
    what_it_said(waiter)
}

/// What `waiter` (stdout piped) printed, after it exited successfully.
fn what_it_said(waiter: &mut KillOnDrop) -> String {
    let mut said = String::new();
    waiter
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(waiter.0.wait().unwrap().success(), "{said}");
    said
}

/// What COMMAND learns: `ME_ONLY_SLOT ME_ONLY_LOCK`.
const SAY_SLOT: &str = "echo \"$ME_ONLY_SLOT $ME_ONLY_LOCK\"";

/// LOCK's slot `number` as its lock is written: `LOCK.number`, or for a
/// port, the one `number - 1` above it.
fn slot_name(backend: &str, lock: &str, number: u16) -> String {
    match backend {
        "tcp" => {
            let (address, port) = lock.rsplit_once(':').unwrap();
            format!("{address}:{}", port.parse::<u16>().unwrap() + number - 1)
        }
        _ => format!("{lock}.{number}"),
    }
}

#[test]
fn each_instance_takes_the_first_free_slot_and_learns_which() {
    for (backend, lock, _dir) in each_kernel_lock("slots", 3) {
        let name = lock.last().unwrap();
        let first = slot_holder("3", &lock);
        let output = me_only()
            .args(["--slots", "3"])
            .args(&lock)
            .args(["sh", "-c", SAY_SLOT])
            .output()
            .unwrap();
        assert!(output.status.success(), "{backend}: {output:?}");
        assert_eq!(
            text(&output.stdout),
            format!("2 {}\n", slot_name(backend, name, 2)),
            "{backend}"
        );
        drop(first);
    }
}

#[test]
fn a_slot_is_the_lock_of_its_name_for_every_other_locker() {
    for (backend, lock, _dir) in each_kernel_lock("slots-named", 2) {
        let name = lock.last().unwrap();
        // Slot 1 taken by a plain launch on its name.
        let mut plain = lock.clone();
        *plain.last_mut().unwrap() = slot_name(backend, name, 1);
        let plain = Holding::start(&plain);
        let second = slot_holder("2", &lock);
        // Both held: --test names both holders, slot 1's first.
        let output = test_slots("2", &lock);
        assert_eq!(output.status.code(), Some(4), "{backend}: {output:?}");
        assert_eq!(
            text(&output.stdout),
            format!("{}\n{}\n", plain.pid, second.pid),
            "{backend}"
        );
        // Slot 2's holder holds the lock of slot 2's name.
        let mut slot_2 = lock.clone();
        *slot_2.last_mut().unwrap() = slot_name(backend, name, 2);
        let output = me_only().arg("--test").args(&slot_2).output().unwrap();
        assert_eq!(
            text(&output.stdout),
            format!("{}\n", second.pid),
            "{backend}"
        );
        drop(second);
        let output = test_slots("2", &lock);
        assert_eq!(output.status.code(), Some(0), "{backend}: {output:?}");
        assert!(output.stdout.is_empty(), "{backend}: {output:?}");
    }
}

#[test]
fn all_slots_held_is_a_conflict_naming_every_holder() {
    for (backend, lock, _dir) in each_kernel_lock("slots-full", 2) {
        let holders = [slot_holder("2", &lock), slot_holder("2", &lock)];
        let line = refused(
            me_only()
                .args(["--slots", "2"])
                .args(&lock)
                .args(["echo", "ran"]),
            4,
        );
        let name = lock.last().unwrap();
        let uid = nix::unistd::getuid();
        assert_eq!(
            line,
            format!(
                "me-only: {name}: all 2 slots are held, by pid {} (uid {uid}), pid {} (uid {uid})\n",
                holders[0].pid, holders[1].pid
            ),
            "{backend}"
        );
        let output = me_only()
            .args(["-q", "-E", "75", "--slots", "2"])
            .args(&lock)
            .args(["echo", "ran"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(75), "{backend}");
        assert!(
            output.stderr.is_empty() && output.stdout.is_empty(),
            "{backend}: {output:?}"
        );
        let line = gives_up_after(
            me_only()
                .args(["--slots", "2", "--timeout", "0.3"])
                .args(&lock)
                .args(["echo", "ran"]),
            Duration::from_millis(300),
        );
        assert!(
            line.contains(": all 2 slots are still held after 0."),
            "{backend}: {line}"
        );
    }
}

#[test]
fn a_waiter_takes_whichever_slot_comes_free() {
    for (backend, lock, _dir) in each_kernel_lock("slots-wait", 3) {
        let name = lock.last().unwrap();
        for freed in [3, 1] {
            let mut holders = vec![
                slot_holder("3", &lock),
                slot_holder("3", &lock),
                slot_holder("3", &lock),
            ];
            let mut waiter = KillOnDrop(spawn_waiting(
                me_only()
                    .args(["-v", "--wait", "--slots", "3"])
                    .args(&lock)
                    .args(["sh", "-c", SAY_SLOT]),
            ));
            let said = handed_over(holders.remove(freed - 1), &mut waiter);
            assert_eq!(
                said,
                format!("{freed} {}\n", slot_name(backend, name, freed as u16)),
                "{backend}"
            );
        }
    }
}

/// Of many launches at once, exactly N run: each winner says its slot and
/// holds it until the test closes its stdin; each loser exits 4 at once.
#[test]
fn of_many_simultaneous_launches_exactly_n_run() {
    const LAUNCHES: usize = 24;
    let _heavy = common::one_heavy_at_a_time();
    for (backend, lock, _dir) in each_kernel_lock("slots-race", 3) {
        let mut launches: Vec<KillOnDrop> = (0..LAUNCHES)
            .map(|_| {
                KillOnDrop(
                    me_only()
                        .args(["-q", "--slots", "3"])
                        .args(&lock)
                        .args(["sh", "-c", "echo $ME_ONLY_SLOT; exec cat"])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        // A winner's line comes before it waits on stdin; a loser's stdout
        // ends empty when it exits.
        let mut slots: Vec<String> = Vec::new();
        for launch in &mut launches {
            let mut line = String::new();
            BufReader::new(launch.0.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            if !line.is_empty() {
                slots.push(line.trim().to_owned());
            }
        }
        slots.sort();
        assert_eq!(slots, ["1", "2", "3"], "{backend}");
        for mut launch in launches {
            drop(launch.0.stdin.take());
            let status = launch.0.wait().unwrap();
            assert!(matches!(status.code(), Some(0 | 4)), "{backend}: {status}");
        }
    }
}

#[test]
fn fork_and_detach_tell_the_slot_too_and_an_outer_slot_is_not_passed_on() {
    let lock = common::unique_lock("slots-fork");
    let output = me_only()
        .args(["--fork", "--slots", "2", &lock, "sh", "-c", SAY_SLOT])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), format!("1 {lock}.1\n"));
    // --detach: COMMAND writes what it learnt to a file, then exits.
    let said = tempfile::NamedTempFile::new().unwrap();
    let script = format!("{SAY_SLOT} > {}", said.path().display());
    let output = me_only()
        .args(["--detach", "--slots", "2", &lock, "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let pid: i32 = text(&output.stdout).trim().parse().unwrap();
    common::wait_until_gone(pid);
    assert_eq!(
        std::fs::read_to_string(said.path()).unwrap(),
        format!("1 {lock}.1\n")
    );
    for mode in [&[][..], &["--fork"]] {
        let output = me_only()
            .env("ME_ONLY_SLOT", "7")
            .args(mode)
            .args([&lock, "sh", "-c", "echo ${ME_ONLY_SLOT-unset}"])
            .output()
            .unwrap();
        assert_eq!(text(&output.stdout), "unset\n", "{mode:?}");
    }
}

#[test]
fn bad_slot_counts_and_names_are_usage_errors() {
    let lock = common::unique_lock("slots-bad");
    for (words, message) in [
        (
            vec!["--slots", "0"],
            "'0' is not a number of slots (1-1024)",
        ),
        (
            vec!["--slots", "1025"],
            "'1025' is not a number of slots (1-1024)",
        ),
        (vec!["--slots", "-1"], "is not a number of slots"),
        (vec!["--slots", "x"], "'x' is not a number of slots"),
        (vec!["--slots", "2", "--replace"], "cannot be used with"),
        (
            vec!["--slots", "2", "--tcp", "127.0.0.1:65535"],
            "127.0.0.1:65535: slot 2 would be port 65536, past 65535",
        ),
    ] {
        let mut command = me_only();
        command.args(&words);
        if !words.contains(&"--tcp") {
            command.arg(&lock);
        }
        let line = refused(command.args(["echo", "ran"]), 2);
        assert!(line.contains(message), "{words:?}: {line}");
    }
    // LOCK.10 is too long where LOCK is not.
    let long = "x".repeat(105);
    let line = refused(me_only().args(["--slots", "10", &long, "echo", "ran"]), 2);
    assert!(
        line.contains(&format!("{long}.10: lock name is 108 bytes")),
        "{line}"
    );
}

/// With --etcd, slot k is the etcd lock LOCK.k, taken in turn as a launch
/// without --wait takes one lock.
#[cfg(feature = "etcd")]
#[test]
fn etcd_slots_are_etcd_locks_named_as_kernel_slots_are() {
    use common::etcd::{Etcd, hostname, lock_name, on};

    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("slots");
    let first = Holding::spawn(on(
        &etcd,
        &["--slots", "2", &lock, "sh", "-c", "echo ready; exec cat"],
    ));
    let output = on(&etcd, &["--slots", "2", &lock, "sh", "-c", SAY_SLOT])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), format!("2 {lock}.2\n"));
    let second = Holding::spawn(on(
        &etcd,
        &["--slots", "2", &lock, "sh", "-c", "echo ready; exec cat"],
    ));
    let host = hostname();
    assert_eq!(
        refused(&mut on(&etcd, &["--slots", "2", &lock, "echo", "ran"]), 4),
        format!(
            "me-only: {lock}: all 2 slots are held, by pid {} on {host}, pid {} on {host}\n",
            first.pid, second.pid
        )
    );
    let output = on(&etcd, &[&format!("{lock}.1"), "--test"])
        .output()
        .unwrap();
    assert_eq!(text(&output.stdout), format!("{host} {}\n", first.pid));
}

/// An etcd waiter queues on every slot and takes the first freed; the
/// places it no longer needs are gone before its COMMAND starts, so they
/// block no slot.
#[cfg(feature = "etcd")]
#[test]
fn an_etcd_waiter_takes_whichever_slot_comes_free_and_leaves_no_place_behind() {
    use common::etcd::{Etcd, lock_name, on};

    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    for freed in [2, 1] {
        let lock = lock_name(&format!("slots-wait-{freed}"));
        let hold = |_| {
            Holding::spawn(on(
                &etcd,
                &["--slots", "2", &lock, "sh", "-c", "echo ready; exec cat"],
            ))
        };
        let mut holders: Vec<Holding> = (1..=2).map(hold).collect();
        let mut waiter = KillOnDrop(spawn_waiting(&mut on(
            &etcd,
            &["-v", "--wait", "--slots", "2", &lock, "sh", "-c", SAY_SLOT],
        )));
        let said = handed_over(holders.remove(freed - 1), &mut waiter);
        assert_eq!(said, format!("{freed} {lock}.{freed}\n"));
        let other = 3 - freed;
        assert_eq!(
            etcd.keys_under(&format!("{lock}.{other}")).len(),
            1,
            "the holder's key alone: the waiter's place in line is gone"
        );
    }
}

/// `me-only -v --wait --slots 3 OPTIONS LOCK sh -c SCRIPT`, started once
/// all 3 slots are held and waiting on them by the time slot 1's holder
/// lets go. The other two holders are returned, still holding: the
/// waiter's losing threads are still waiting on them when COMMAND starts.
fn waiter_handed_slot_1(
    lock: &[String],
    options: &[&str],
    script: &str,
) -> (KillOnDrop, Vec<Holding>) {
    let mut holders: Vec<Holding> = (0..3).map(|_| slot_holder("3", lock)).collect();
    let waiter = KillOnDrop(spawn_waiting(
        me_only()
            .args(["-v", "--wait", "--slots", "3"])
            .args(options)
            .args(lock)
            .args(["sh", "-c", script]),
    ));
    assert!(holders.remove(0).release().success());
    (waiter, holders)
}

/// The supervising modes, as a --slots waiter may start COMMAND.
const SUPERVISING: [&[&str]; 2] = [&["--fork"], &["--max-time", "60"]];

/// A losing waiter thread that took the SIGCHLD of COMMAND's exit left the
/// supervisor waiting for ever, COMMAND a zombie and the slot held (1 run
/// in 6): every run must see COMMAND exit and pass on its status.
#[test]
fn a_supervising_slot_waiter_sees_its_command_exit_every_time() {
    for (backend, lock, _dir) in each_kernel_lock("slots-fork-exit", 3) {
        for round in 0..10 {
            for options in SUPERVISING {
                let (mut waiter, _holders) = waiter_handed_slot_1(&lock, options, "exit 7");
                assert!(
                    gone_within(waiter.0.id() as i32, Duration::from_secs(10)),
                    "{backend} {options:?}, run {round}: COMMAND's exit was not seen"
                );
                let status = waiter.0.wait().unwrap();
                assert_eq!(status.code(), Some(7), "{backend} {options:?}: {status}");
            }
        }
    }
}

/// A losing waiter thread took the SIGTERM meant for COMMAND: me-only died
/// of it (143), COMMAND was killed and its child orphaned. The signal must
/// reach COMMAND, which traps it, stops its child and exits 3. The child
/// says its pid once it runs a shell of its own (a forked shell that has
/// not yet exec'd still has the parent's trap, which would take the
/// signal), and COMMAND says "ready" once it knows the child's pid.
#[test]
fn sigterm_to_a_supervising_slot_waiter_reaches_its_command() {
    const SCRIPT: &str = "trap 'echo term; kill $child; exit 3' TERM; \
        sh -c 'echo $$; exec sleep 300 >/dev/null' & child=$!; echo ready; wait";
    for (backend, lock, _dir) in each_kernel_lock("slots-fork-term", 3) {
        for options in SUPERVISING {
            let (mut waiter, _holders) = waiter_handed_slot_1(&lock, options, SCRIPT);
            let mut said = BufReader::new(waiter.0.stdout.take().unwrap());
            let mut lines = [String::new(), String::new()];
            for line in &mut lines {
                said.read_line(line).unwrap();
            }
            let pid = lines.iter().find_map(|line| line.trim().parse().ok());
            let child = Detached(pid.expect("the child's pid"));
            signal(waiter.0.id(), Signal::SIGTERM);
            assert!(
                gone_within(waiter.0.id() as i32, Duration::from_secs(10)),
                "{backend} {options:?}: me-only did not exit"
            );
            let status = waiter.0.wait().unwrap();
            let mut rest = String::new();
            said.read_to_string(&mut rest).unwrap();
            assert_eq!(
                (status.code(), rest.as_str()),
                (Some(3), "term\n"),
                "{backend} {options:?}: {status}"
            );
            assert!(
                gone_within(child.0, Duration::from_secs(5)),
                "{backend} {options:?}: COMMAND's child was orphaned"
            );
        }
    }
}

/// --max-time's SIGCHLD was lost the same way: the capped COMMAND stayed a
/// zombie and me-only never exited.
#[test]
fn max_time_still_caps_a_slot_waiters_command() {
    for (backend, lock, _dir) in each_kernel_lock("slots-max-time", 3) {
        for round in 0..5 {
            let (mut waiter, _holders) =
                waiter_handed_slot_1(&lock, &["--max-time", "0.2"], "exec sleep 300");
            assert!(
                gone_within(waiter.0.id() as i32, Duration::from_secs(10)),
                "{backend}, run {round}: --max-time did not end it"
            );
            let status = waiter.0.wait().unwrap();
            assert_eq!(status.code(), Some(124), "{backend}: {status}");
        }
    }
}

fn signal(pid: u32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Slots 1 to `count` of abstract LOCK held cheaply, by listening sockets
/// of the test's own.
fn listeners_on_slots(lock: &str, count: u32) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
    };
    use std::os::fd::AsRawFd;

    (1..=count)
        .map(|number| {
            let name = format!("{lock}.{number}");
            let socket = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            bind(
                socket.as_raw_fd(),
                &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
            )
            .unwrap();
            listen(&socket, Backlog::new(8).unwrap()).unwrap();
            socket
        })
        .collect()
}

/// me-only with the usual limit of 1024 open descriptors, soft and hard.
fn me_only_with_1024_fds() -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "ulimit -n 1024; exec \"$0\" \"$@\"", common::ME_ONLY]);
    command
}

/// The tests of 1024 slots run one at a time, and not beside another heavy
/// test of the suite: each starts some 500 waiter threads in me-only, and
/// two at once on two cores measured the other's load (the 1 s --timeout
/// came after 1.6-2.6 s) rather than me-only's.
fn one_thousand_slots_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    common::one_heavy_at_a_time()
}

/// Waiting on 1024 slots under `ulimit -n 1024` failed (exit 3, too many
/// open files); out of time, its line named all 1024 holders (~20 KB) and
/// came late. It must give up in time, in one short line.
#[test]
fn waiting_on_1024_held_slots_gives_up_in_time_in_one_short_line() {
    let _alone = one_thousand_slots_at_a_time();
    let lock = common::unique_lock("slots-1024");
    let _held = listeners_on_slots(&lock, 1024);
    let started = std::time::Instant::now();
    let line = refused(
        me_only_with_1024_fds()
            .args(["--wait", "--timeout", "1", "--slots", "1024", &lock])
            .args(["echo", "ran"]),
        4,
    );
    let waited = started.elapsed();
    let pid = std::process::id();
    let uid = nix::unistd::getuid();
    assert_eq!(
        line,
        format!(
            "me-only: {lock}: all 1024 slots are still held after 1.0 s, by pid {pid} \
             (uid {uid}), pid {pid} (uid {uid}), pid {pid} (uid {uid}) and 1021 more\n"
        )
    );
    assert!(
        (Duration::from_secs(1)..Duration::from_millis(1100)).contains(&waited),
        "gave up after {waited:?}"
    );
}

/// ... and a slot freed while it waits is taken, whichever it is.
#[test]
fn a_waiter_on_1024_slots_takes_the_one_freed() {
    let _alone = one_thousand_slots_at_a_time();
    for freed in [1000, 2] {
        // A name of its own each round: the last round's listeners, closed,
        // may still be open in a child that another test forked and that
        // has not exec'd yet (EADDRINUSE).
        let lock = common::unique_lock("slots-1024-freed");
        let mut held = listeners_on_slots(&lock, 1024);
        let mut waiter = KillOnDrop(spawn_waiting(
            me_only_with_1024_fds()
                .args(["-v", "--wait", "--slots", "1024", &lock])
                .args(["sh", "-c", SAY_SLOT]),
        ));
        drop(held.remove(freed - 1));
        let said = what_it_said(&mut waiter);
        assert_eq!(said, format!("{freed} {lock}.{freed}\n"));
    }
}

/// "all 1 slots are held": one slot is a slot.
#[test]
fn one_slot_held_is_said_in_the_singular() {
    let lock = common::unique_lock("slots-one");
    let holder = slot_holder("1", std::slice::from_ref(&lock));
    let uid = nix::unistd::getuid();
    assert_eq!(
        refused(me_only().args(["--slots", "1", &lock, "echo", "ran"]), 4),
        format!(
            "me-only: {lock}: its one slot is held, by pid {} (uid {uid})\n",
            holder.pid
        )
    );
    let line = gives_up_after(
        me_only()
            .args(["--slots", "1", "--timeout", "0.3"])
            .args([&lock, "echo", "ran"]),
        Duration::from_millis(300),
    );
    assert!(
        line.contains(": its one slot is still held after 0."),
        "{line}"
    );
}
