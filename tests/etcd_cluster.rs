//! `--etcd` on a 3-member cluster on loopback (tests/common/etcd.rs
//! Cluster): leader elections and lost quorum under a holder, launches
//! while a leader is replaced, and the lease's timing that they test.
#![cfg(feature = "etcd")]

mod common;

use std::time::Instant;

use common::etcd::*;

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
