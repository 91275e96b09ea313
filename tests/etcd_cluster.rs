//! `--etcd` on a 3-member cluster on loopback (tests/common/etcd.rs
//! Cluster): leader elections and lost quorum under a holder, launches
//! while a leader is replaced, and the lease's timing that they test.
#![cfg(feature = "etcd")]

mod common;

use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::Instant;

use common::etcd::*;
use common::{me_only, text};

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
