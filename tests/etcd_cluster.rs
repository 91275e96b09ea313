//! `--etcd` on a 3-member cluster on loopback (tests/common/etcd.rs
//! Cluster): leader elections and lost quorum under a holder, launches
//! while a leader is replaced, and the lease's timing that they test.
#![cfg(feature = "etcd")]

use crate::common;

use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::etcd::*;
use common::{me_only, refused, text};
use nix::sys::signal::{Signal, kill};

/// The harness the other tests stand on: a leader killed is replaced, and
/// comes back as a member.
#[test]
fn a_cluster_elects_a_new_leader_when_its_leader_is_killed() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let leader = cluster.leader();
    cluster.kill_member(leader);
    let killed = Instant::now();
    let next = cluster.leader();
    println!("a new leader in {:?}", killed.elapsed());
    assert_ne!(next, leader);
    cluster.restart_member(leader);
    assert_eq!(cluster.endpoints().split(',').count(), 3);
}

/// A loopback listener that takes connections (the kernel does, into its
/// backlog) and never answers: a member that hangs, or a host that drops
/// packets once connected. Its URL.
fn silent_endpoint() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// A loopback relay to etcd that holds each chunk carrying a txn (the
/// create that takes the lock) for `delay` before passing it on: a member
/// slow to commit, so that taking the lock takes most of a short TTL. Its
/// URL; its threads serve until the test ends.
fn slow_to_take(etcd: &Etcd, delay: Duration) -> String {
    use std::io::{Read, Write};
    let target = etcd.endpoint.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = std::net::TcpStream::connect(&target).unwrap();
            let (mut from_client, mut to_etcd) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (mut from_etcd, mut to_client) = (upstream, client);
            std::thread::spawn(move || {
                let mut chunk = [0; 65536];
                while let Ok(read @ 1..) = from_client.read(&mut chunk) {
                    if chunk[..read].windows(10).any(|w| w == b"/v3/kv/txn") {
                        std::thread::sleep(delay);
                    }
                    if to_etcd.write_all(&chunk[..read]).is_err() {
                        break;
                    }
                }
                let _ = to_etcd.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_etcd, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    url
}

/// Taking the lock took 2.5 s of a 3 s TTL: past the keeper's deadline, so
/// the launch gives up with exit 3 and COMMAND never starts, in every
/// mode. --detach started COMMAND first and checked the lease after
/// (found by review): COMMAND ran, and what it started first ran on
/// without a lock.
#[test]
fn a_lease_that_cannot_be_kept_never_starts_command() {
    let Some(etcd) = Etcd::start() else { return };
    let slow = slow_to_take(&etcd, Duration::from_millis(2500));
    let dir = tempfile::tempdir().unwrap();
    for mode in [&[][..], &["--detach"], &["--fork"]] {
        let lock = lock_name("cannot-keep");
        let mark = dir.path().join("ran");
        let script = format!("touch {}; exec sleep 30", mark.display());
        let output = me_only()
            .args(["--etcd", &slow, "--ttl", "3"])
            .args(mode)
            .args([&lock, "sh", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{mode:?}: {output:?}");
        assert!(
            text(&output.stderr).contains("cannot keep the lease"),
            "{mode:?}: {output:?}"
        );
        assert!(!mark.exists(), "{mode:?}: COMMAND ran: {output:?}");
    }
}

/// A COMMAND that runs long enough to be fenced if its keeper starts past
/// its deadline, and says that it ran to its end.
const RUNS_A_SECOND: [&str; 3] = ["sh", "-c", "sleep 1; echo ran"];

/// The lease was counted from the start of the grant call: a silent first
/// endpoint took half of the call's 5 s, so with --ttl 3 the keeper started
/// past its deadline and fenced COMMAND at once (exit 143, "lease lost:
/// etcd unreachable for 2.5 s"). It counts from the attempt that got the
/// lease.
#[test]
fn a_silent_first_endpoint_does_not_start_command_on_a_spent_lease() {
    let Some(etcd) = Etcd::start() else { return };
    let (_silent, silent) = silent_endpoint();
    let lock = lock_name("silent-first");
    let endpoints = format!("{silent},{}", etcd.endpoint);
    let output = me_only()
        .args(["--etcd", &endpoints, "--ttl", "3", &lock])
        .args(RUNS_A_SECOND)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "ran\n");
    assert_eq!(text(&output.stderr), "");
}

/// Right after a leader's kill -9, a launch whose grant a follower held
/// through the election started COMMAND on a lease about to lapse, and
/// fenced it at once (exit 143, 4 launches in 5). A launch runs COMMAND to
/// its end, or gives up before it starts (exit 3).
#[test]
fn launches_right_after_a_leader_kill_run_to_the_end_or_give_up() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    for round in 0..3 {
        let leader = cluster.leader();
        cluster.kill_member(leader);
        // Each launch tries the members in another order.
        let launches: Vec<Child> = (0..3)
            .map(|first| {
                let endpoints: Vec<&str> =
                    (0..3).map(|i| cluster.endpoint((first + i) % 3)).collect();
                let lock = lock_name(&format!("after-kill-{round}-{first}"));
                me_only()
                    .args(["--etcd", &endpoints.join(","), "--ttl", "2", &lock])
                    .args(RUNS_A_SECOND)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for launch in launches {
            let output = launch.wait_with_output().unwrap();
            println!(
                "round {round}: {:?} {}",
                output.status.code(),
                text(&output.stderr)
            );
            match output.status.code() {
                Some(0) => assert_eq!(text(&output.stdout), "ran\n"),
                Some(3) => assert_eq!(text(&output.stdout), "", "{output:?}"),
                _ => panic!("round {round}: {output:?}"),
            }
        }
        cluster.restart_member(leader);
    }
}

/// After a renewal got no answer the keeper waited a second before the
/// next, even when its deadline came sooner: a --ttl 3 holder was fenced
/// in most leader kills although a new leader answered well before. Here
/// the leader dies just before a renewal is due, which the followers hold
/// until a new leader answers, in turns too short for an election, and
/// which the dead leader refuses at once: the keeper retries until its
/// deadline, so the holder rides out the election, not fenced, the lock
/// still its own. --ttl 4: an election of E s is ridden out when E <
/// 2/3 T - 1 s less how late in its period the leader died (0.1 s here),
/// and a loaded test machine's took 1.4 s at times. A round whose election
/// took longer than that proves nothing either way (an overloaded machine
/// took 1.8 s): it is not counted, and two that count are needed.
#[test]
fn a_holder_rides_out_a_leader_kill() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let mut counted = 0;
    for round in 0..5 {
        if counted == 2 {
            break;
        }
        let leader = cluster.leader();
        let followers_first: Vec<&str> = (1..=3)
            .map(|i| cluster.endpoint((leader + i) % 3))
            .collect();
        let lock = lock_name(&format!("rides-out-{round}"));
        let (mut holder, _stdout) = fenced_holder_at(&followers_first.join(","), &lock, "4", "1");
        let keeper = keeper_of(&lock).expect("a keeper runs");
        let renewed = next_wake_of(keeper);
        // A renewal is due a third of the TTL (1.33 s) after the last.
        std::thread::sleep(
            (renewed + Duration::from_millis(1230)).saturating_duration_since(Instant::now()),
        );
        cluster.kill_member(leader);
        cluster.leader();
        // The keeper's deadline is 3 s after that renewal; a renewal held
        // by a follower is answered once a new leader is, so one elected
        // this long before it must be in time.
        let elected_in_time =
            Instant::now() + ELECTION_ALLOWANCE < renewed + Duration::from_secs(3);
        // Fenced, it would be by 3 s after that renewal.
        let limit = (renewed + Duration::from_secs(4)).saturating_duration_since(Instant::now());
        let fenced = common::gone_within(holder.id() as i32, limit);
        cluster.restart_member(leader);
        if fenced && !elected_in_time {
            println!("round {round}: the election took too long to count");
            holder.wait().unwrap();
            continue;
        }
        if fenced {
            panic!(
                "round {round}: fenced: {:?}",
                holder.wait_with_output().unwrap()
            );
        }
        counted += 1;
        refused(
            me_only().args(["--etcd", &cluster.endpoints(), &lock, "echo", "ran"]),
            4,
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
    }
    assert_eq!(counted, 2, "elections too slow on this machine to tell");
}

/// How long before the keeper's deadline a new leader must be seen for a
/// renewal to be in time: the follower's answer, and the keeper's wake-up,
/// on a loaded machine.
const ELECTION_ALLOWANCE: Duration = Duration::from_millis(300);

/// A stopped keeper (kill -STOP, a frozen cgroup) let the lease run out
/// while COMMAND ran on: a second launch ran beside it, and the first was
/// fenced only once the keeper went on. The sentry fences COMMAND when the
/// keeper misses its deadline, before the lease can run out, and the next
/// holder starts only after COMMAND is gone.
#[test]
fn a_stalled_keeper_is_fenced_by_its_sentry() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("stalled-keeper");
    let (holder, mut stdout) = fenced_holder_at(&etcd.endpoint, &lock, "3", "1");
    let took = fenced_by_the_sentry(&etcd, &lock, holder);
    assert!(took < Duration::from_secs(3), "{took:?}");
    common::read_until_a_line_with(&mut stdout, "terminated");
}

/// A fenced COMMAND that ignores SIGTERM got SIGKILL only after
/// --kill-after, however long after the lease could run out: the next
/// holder ran beside it meanwhile. SIGKILL now comes before the lease may
/// run out, whatever --kill-after says.
#[test]
fn a_fenced_command_that_ignores_sigterm_is_killed_before_the_lease_runs_out() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("stalled-keeper-term-ignored");
    let script = "trap '' TERM; echo ready; while :; do sleep 1; done";
    let (holder, _stdout) =
        started(on(&etcd, &["--ttl", "3", "--kill-after", "30", &lock]).args(["sh", "-c", script]));
    fenced_by_the_sentry(&etcd, &lock, holder);
}

/// Stops the keeper of `lock` (held by `holder`, whose COMMAND printed
/// `ready`) with SIGSTOP and checks that its sentry fenced COMMAND off
/// before a waiting launch ran: how long after the stop COMMAND was gone.
fn fenced_by_the_sentry(etcd: &Etcd, lock: &str, holder: Child) -> Duration {
    let first = holder.id();
    // The second COMMAND says whether the first runs (a zombie, not yet
    // waited for by this test, has ended).
    let look =
        format!("s=$(cut -d' ' -f3 /proc/{first}/stat 2>/dev/null); echo \"first: ${{s:-gone}}\"");
    let waiter = on(etcd, &["--wait", "--ttl", "3", lock, "sh", "-c", &look])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let keeper = keeper_of(lock).expect("a keeper runs");
    kill(keeper, Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    let fenced = common::gone_within(first as i32, Duration::from_secs(40));
    let took = stopped.elapsed();
    let ran = common::gone_within(waiter.id() as i32, Duration::from_secs(10));
    kill(keeper, Signal::SIGCONT).unwrap();
    let second = waiter.wait_with_output().unwrap();
    let first = holder.wait_with_output().unwrap();
    println!("fenced {took:?} after the keeper stopped (TTL 3 s)");
    assert!(ran, "the second launch never ran: {second:?}");
    assert_eq!(text(&second.stdout), "first: Z\n", "{second:?}");
    assert!(fenced, "{first:?}");
    assert!(
        text(&first.stderr).contains("the lease keeper stalled"),
        "{}",
        text(&first.stderr)
    );
    took
}

/// Measures (ignored: about two minutes) which --ttl rides out a leader's
/// kill -9, at whatever point of its renewals the kill comes: a holder of
/// each TTL under 20 kills, one started again for each that was fenced.
#[test]
#[ignore]
fn measure_the_ttl_that_rides_out_leader_kills() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let ttls = ["1", "2", "3", "4"];
    let endpoints = cluster.endpoints();
    let hold = |ttl: &str, kill: usize| {
        let lock = lock_name(&format!("measure-{ttl}-{kill}"));
        fenced_holder_at(&endpoints, &lock, ttl, "1").0
    };
    let mut holders: Vec<Child> = ttls.iter().map(|ttl| hold(ttl, 0)).collect();
    let mut fenced = [0; 4];
    for kill in 1..=20 {
        let leader = cluster.leader();
        cluster.kill_member(leader);
        let killed = Instant::now();
        let elected = cluster.leader();
        let election = killed.elapsed();
        // Fenced, a holder would be by its TTL after the kill.
        let until = killed + Duration::from_secs(5);
        for (i, holder) in holders.iter_mut().enumerate() {
            let left = until.saturating_duration_since(Instant::now());
            if common::gone_within(holder.id() as i32, left) {
                fenced[i] += 1;
                holder.wait().unwrap();
                *holder = hold(ttls[i], kill);
            }
        }
        println!("kill {kill}: new leader {elected} in {election:?}; fenced so far {fenced:?}");
        cluster.restart_member(leader);
    }
    for (ttl, fenced) in ttls.iter().zip(fenced) {
        println!("--ttl {ttl}: fenced in {fenced} of 20 leader kills");
    }
    for mut holder in holders {
        holder.kill().unwrap();
        holder.wait().unwrap();
    }
}

/// Measures (ignored) how long after the cluster lost its quorum a --ttl 3
/// holder's COMMAND gets SIGTERM: the leader and a follower killed, or
/// both followers.
#[test]
#[ignore]
fn measure_quorum_loss_to_sigterm() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    for (what, leader_too) in [("leader and a follower", true), ("both followers", false)] {
        let mut took = Vec::new();
        for round in 0..5 {
            let leader = cluster.leader();
            let followers: Vec<usize> = (1..3).map(|i| (leader + i) % 3).collect();
            let killed = match leader_too {
                true => [leader, followers[0]],
                false => [followers[0], followers[1]],
            };
            let lock = lock_name(&format!("quorum-{leader_too}-{round}"));
            let (mut holder, mut stdout) = fenced_holder_at(&cluster.endpoints(), &lock, "3", "1");
            for member in killed {
                cluster.kill_member(member);
            }
            let lost = Instant::now();
            common::read_until_a_line_with(&mut stdout, "terminated");
            took.push(lost.elapsed());
            holder.wait().unwrap();
            cluster.restart_members(&killed);
        }
        took.sort();
        println!("{what} killed: SIGTERM after {took:?} (TTL 3 s)");
    }
}
