//! `--etcd` under faults: an endpoint that misbehaves (a stand-in in the
//! test process, in front of a real etcd), a keeper or sentry killed or told
//! to stop, a caller that ignores SIGCHLD, a fenced command's descendants.
#![cfg(feature = "etcd")]

use crate::common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use common::etcd::*;
use common::{me_only, refused, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A caller that ignores SIGCHLD (some daemons and job runners do) made
/// every --etcd launch fail ("cannot start the lease keeper"). COMMAND gets
/// the disposition it was given.
#[test]
fn an_ignored_sigchld_neither_stops_the_launch_nor_changes_for_command() {
    use std::os::unix::process::CommandExt;

    let Some(etcd) = Etcd::start() else { return };
    for fork in [&[][..], &["--fork"]] {
        // A lock for each: the last one's keeper gives its lock back just
        // after the command exits.
        let lock = lock_name(&format!("sigchld{}", fork.len()));
        let mut command = on(&etcd, fork);
        command.args([&lock, "grep", "^SigIgn", "/proc/self/status"]);
        // SAFETY: signal() is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::libc::signal(nix::libc::SIGCHLD, nix::libc::SIG_IGN);
                Ok(())
            });
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{fork:?}: {output:?}");
        let ignored = text(&output.stdout);
        let mask = u64::from_str_radix(ignored.trim().rsplit('\t').next().unwrap(), 16).unwrap();
        assert_ne!(
            mask & (1 << (nix::libc::SIGCHLD - 1)),
            0,
            "{fork:?}: {ignored}"
        );
    }
}

/// The keeper's command line names the lock, not COMMAND's words (so that
/// `pkill -f job` does not hit it), and is that alone, whatever the size of
/// the command line it replaced (whose size would give away the length of
/// a password given there); and a keeper told to stop (SIGTERM)
/// stops COMMAND before it gives the lock back: a new holder never runs
/// beside the old command.
#[test]
fn a_keeper_told_to_stop_fences_the_command_first() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("keeper-term");
    let (mut holder, _stdout) = fenced_holder(&etcd, &lock, "30");
    let keeper = keeper_of(&lock).expect("a keeper runs");
    let cmdline = std::fs::read(format!("/proc/{keeper}/cmdline")).unwrap();
    assert_eq!(text(&cmdline), format!("me-only-keeper {lock}\0"));
    kill(keeper, Signal::SIGTERM).unwrap();
    // The command said "terminated" and exited 0 on the keeper's SIGTERM.
    assert!(
        common::gone_within(holder.id() as i32, Duration::from_secs(5)),
        "the command runs on after its keeper stopped"
    );
    let status = holder.wait().unwrap();
    assert!(status.success(), "{status}");
    on(&etcd, &["--timeout", "10", &lock, "true"])
        .assert()
        .success();
}

/// kill -9 (or the OOM killer) of the keeper or of its sentry, whichever:
/// the other stops COMMAND and gives the lock back, at once rather than
/// after the TTL, and never before COMMAND is gone.
#[test]
fn kill_9_of_the_keeper_or_its_sentry_fences_the_command() {
    let Some(etcd) = Etcd::start() else { return };
    for (victim, what) in [
        (keeper_of as fn(&str) -> Option<Pid>, "keeper"),
        (sentry_of, "sentry"),
    ] {
        let lock = lock_name(&format!("kill-{what}"));
        let (mut holder, mut stdout) = fenced_holder(&etcd, &lock, "30");
        let pid = victim(&lock).expect("it runs");
        kill(pid, Signal::SIGKILL).unwrap();
        assert!(
            common::gone_within(holder.id() as i32, Duration::from_secs(5)),
            "{what}: the command runs on"
        );
        common::read_until_a_line_with(&mut stdout, "terminated");
        let status = holder.wait().unwrap();
        assert!(status.success(), "{what}: {status}");
        let freed = time_to_take(&etcd, &lock);
        println!("freed {freed:?} after kill -9 of the {what} (TTL 30 s)");
        assert!(
            freed < Duration::from_secs(3),
            "{what}: {freed:?}: not revoked"
        );
    }
}

/// How a stand-in endpoint misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Passes the connection on to the real etcd.
    None,
    /// HTTP 503 with etcd's message, as a member without quorum answers.
    Unavailable,
    /// HTTP 404 in plain text, as any other HTTP server (or etcd's peer
    /// port) answers.
    NotEtcd,
    /// 200 OK and a body of two GiB.
    Huge,
    /// 200 OK, then one byte every 200 ms, for ever.
    Dribble,
    /// Reads the request and never answers.
    Silent,
}

/// An endpoint on a loopback port of its own that answers with `fault`,
/// switchable at any time (each call is a connection of its own), or
/// passes connections on to etcd (which go silent when the fault changes). Its threads serve until the test ends.
struct FaultyEndpoint {
    url: String,
    state: std::sync::Arc<State>,
    /// A message each time etcd says through this endpoint that it made a
    /// watch.
    watches_made: std::sync::mpsc::Receiver<()>,
}

/// What an endpoint's threads share.
struct State {
    fault: std::sync::Mutex<Fault>,
    watch_made: std::sync::mpsc::Sender<()>,
}

impl FaultyEndpoint {
    fn new(etcd: &Etcd, fault: Fault) -> FaultyEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let etcd_address = etcd.endpoint.trim_start_matches("http://").to_owned();
        let (watch_made, watches_made) = std::sync::mpsc::channel();
        let state = std::sync::Arc::new(State {
            fault: std::sync::Mutex::new(fault),
            watch_made,
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let etcd_address = etcd_address.clone();
                let state = shared.clone();
                std::thread::spawn(move || serve(connection, &etcd_address, &state));
            }
        });
        FaultyEndpoint {
            url,
            state,
            watches_made,
        }
    }

    fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }
}

fn serve(mut client: std::net::TcpStream, etcd_address: &str, state: &std::sync::Arc<State>) {
    use std::io::Read;

    let fault = *state.fault.lock().unwrap();
    if fault == Fault::None {
        let Ok(server) = std::net::TcpStream::connect(etcd_address) else {
            return;
        };
        let (client_in, server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let to_etcd = state.clone();
        std::thread::spawn(move || relay(client_in, server_out, &to_etcd));
        relay(server, client.try_clone().unwrap(), state);
        // The other direction's relay holds the connection open: end it.
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    }
    // The request: its head, then as many bytes as its Content-Length says.
    let mut request = Vec::new();
    let mut byte = [0];
    while !request.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        request.push(byte[0]);
    }
    let head = text(&request).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = vec![0; length];
    let _ = client.read_exact(&mut body);
    let _ = match fault {
        Fault::None => unreachable!(),
        Fault::Unavailable => client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
              Connection: close\r\n\r\n\
              {\"error\":\"etcdserver: no leader\",\"code\":14,\"message\":\"etcdserver: no leader\"}",
        ),
        Fault::NotEtcd => client.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n\
              404 page not found\n",
        ),
        Fault::Huge => client
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2147483648\r\n\r\n")
            .and_then(|()| {
                let zeros = vec![b'0'; 64 * 1024];
                loop {
                    client.write_all(&zeros)?;
                }
            }),
        Fault::Dribble => b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"
            .iter()
            .chain(std::iter::repeat(&b' '))
            .try_for_each(|byte| {
                std::thread::sleep(Duration::from_millis(200));
                client.write_all(&[*byte])
            }),
        Fault::Silent => client.read(&mut byte).map(drop),
    };
}

/// Passes bytes on from `from` to `to` until `from` ends, or, once the
/// endpoint's fault is no longer None, swallows them: the connection stays
/// open and says nothing more, as a member that died without a word (or
/// behind a partition that drops packets).
fn relay(mut from: std::net::TcpStream, mut to: std::net::TcpStream, state: &State) {
    use std::io::Read;

    let mut buffer = [0; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => {
                // Passed on too, so that a closed watch ends at etcd.
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(_) if *state.fault.lock().unwrap() != Fault::None => {}
            Ok(read) => {
                if to.write_all(&buffer[..read]).is_err() {
                    return;
                }
                let made = b"\"created\":true";
                if buffer[..read].windows(made.len()).any(|w| w == made) {
                    let _ = state.watch_made.send(());
                }
            }
        }
    }
}

/// Runs `command` (a me-only) to its end, or kills it after `limit`;
/// returns its output and how long it ran.
fn run_within(command: &mut Command, limit: Duration) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let ended = common::gone_within(pid, limit);
    if !ended {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let output = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(ended, "still running after {limit:?}: {output:?}");
    (output, took)
}

/// An endpoint that fails in any way (a member that cannot serve, HTTP
/// 503; something that is not etcd; a huge, a dribbled or no answer) is
/// passed over for the next, within the call's time; a member that cannot
/// serve, alone, is exit 3 quoting etcd's message.
#[test]
fn an_unavailable_member_is_passed_over() {
    let Some(etcd) = Etcd::start() else { return };
    for fault in [
        Fault::Unavailable,
        Fault::NotEtcd,
        Fault::Huge,
        Fault::Dribble,
        Fault::Silent,
    ] {
        let failing = FaultyEndpoint::new(&etcd, fault);
        let lock = lock_name(&format!("passed-over-{fault:?}"));
        let both = format!("{},{}", failing.url, etcd.endpoint);
        let (output, took) = run_within(
            me_only().args(["--etcd", &both, &lock, "echo", "ran"]),
            Duration::from_secs(20),
        );
        println!("{fault:?} first: ran after {took:?}");
        assert!(output.status.success(), "{fault:?}: {output:?}");
        // Half the first call's 5 s at most: later calls go first to the
        // endpoint that answered.
        assert!(took < Duration::from_secs(4), "{fault:?}: {took:?}");
        assert_eq!(text(&output.stdout), "ran\n", "{fault:?}");
    }
    assert_eq!(
        refused_by_alone(&etcd, Fault::Unavailable),
        "cannot grant a lease: etcd at URL is unavailable (HTTP 503): etcdserver: no leader"
    );
}

/// What a launch says, after `me-only: LOCK: `, when its one endpoint
/// fails with `fault` (exit 3), the endpoint's address shown as URL.
fn refused_by_alone(etcd: &Etcd, fault: Fault) -> String {
    let endpoint = FaultyEndpoint::new(etcd, fault);
    let lock = lock_name("alone");
    let line = refused(
        me_only().args(["--etcd", &endpoint.url, &lock, "echo", "ran"]),
        3,
    );
    line.strip_prefix(&format!("me-only: {lock}: "))
        .and_then(|what| what.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{line}"))
        .replace(&endpoint.url, "URL")
}

/// Something that is not an etcd client endpoint says so, in words a
/// person reads, not a JSON parser's.
#[test]
fn an_endpoint_that_is_not_etcd_says_so() {
    let Some(etcd) = Etcd::start() else { return };
    assert_eq!(
        refused_by_alone(&etcd, Fault::NotEtcd),
        "cannot grant a lease: URL is not an etcd client endpoint (HTTP 404)"
    );
}

/// A huge answer is cut off at a cap (it took 4.2 GB of memory), and one
/// dribbled a byte at a time at the call's deadline (it ran 25 s and more):
/// both are exit 3, in about the call's 5 s at most.
#[test]
fn huge_and_dribbled_answers_are_cut_off() {
    let Some(etcd) = Etcd::start() else { return };
    for (fault, says) in [
        (Fault::Huge, "its answer is larger than 1024 KiB"),
        (Fault::Dribble, "no answer within"),
    ] {
        let endpoint = FaultyEndpoint::new(&etcd, fault);
        let lock = lock_name("cut-off");
        let (output, took) = run_within(
            me_only().args(["--etcd", &endpoint.url, "--timeout", "1", &lock, "true"]),
            Duration::from_secs(20),
        );
        println!("{fault:?}: exit {:?} after {took:?}", output.status.code());
        assert_eq!(output.status.code(), Some(3), "{fault:?}: {output:?}");
        let line = common::one_error_line(&output.stderr);
        assert!(line.contains(says), "{fault:?}: {line}");
        assert!(took < Duration::from_secs(8), "{fault:?}: {took:?}");
    }
}

/// One deadline bounds the keeper's whole renewal, whatever the endpoint
/// does: when renewals stop getting answers (a silent endpoint, or one that
/// dribbles), COMMAND is fenced off no later than the TTL after the last
/// renewal that was answered.
#[test]
fn a_keeper_whose_renewals_go_unanswered_fences_within_the_ttl() {
    let Some(etcd) = Etcd::start() else { return };
    for fault in [Fault::Dribble, Fault::Silent] {
        let endpoint = FaultyEndpoint::new(&etcd, Fault::None);
        let lock = lock_name("renewal-deadline");
        let (mut holder, _stdout) = fenced_holder_at(&endpoint.url, &lock, "3", "1");
        // No renewal is answered from here on: the last one answered was
        // at most this long ago.
        endpoint.set(fault);
        let cut_off = Instant::now();
        let fenced = common::gone_within(holder.id() as i32, Duration::from_secs(10));
        let took = cut_off.elapsed();
        if !fenced {
            // The keeper and its sentry keep stderr open: they go too.
            let _ = holder.kill();
            for helper in [keeper_of(&lock), sentry_of(&lock)].into_iter().flatten() {
                let _ = kill(helper, Signal::SIGKILL);
            }
        }
        let output = holder.wait_with_output().unwrap();
        println!("{fault:?}: fenced {took:?} after the cut (TTL 3 s)");
        assert!(fenced, "{fault:?}: not fenced within 10 s: {output:?}");
        assert!(
            took <= Duration::from_secs(3),
            "{fault:?}: fenced late: {took:?}"
        );
        assert_fenced_for_unreachable(&output.stderr, 3);
    }
}

/// A fenced-off COMMAND's descendants stop too, not COMMAND alone: with
/// `sh -c '...; sleep 1000'` only sh died and sleep ran on, and a child that
/// shrugs off SIGTERM ran on beside the next holder. Both kinds are gone
/// --kill-after after the fence; with --fork too.
#[test]
fn a_fenced_command_takes_its_descendants_along() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    // A child that dies of SIGTERM, and one that ignores it and must be
    // killed; the shell waits for both.
    let script = "sleep 1000 & (trap '' TERM; exec sleep 1001) & echo ready; wait";
    for mode in [&[][..], &["--fork"]] {
        let lock = lock_name("descendants");
        let (holder, _stdout) = started(
            on(&etcd, &["--ttl", "3", "--kill-after", "1"])
                .args(mode)
                .args([&lock, "sh", "-c", script]),
        );
        // The children exec sleep on their own time: look until both have
        // (as util-linux's flock tests look for the holder's child).
        let looking = Instant::now();
        let mut sleeps = sleeps_under(holder.id() as i32);
        while sleeps.len() < 2 && looking.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
            sleeps = sleeps_under(holder.id() as i32);
        }
        let sleeps: Vec<common::Detached> = sleeps.into_iter().map(common::Detached).collect();
        assert_eq!(sleeps.len(), 2, "{mode:?}: the command's children");
        etcd.delete_keys_of(&lock);
        for sleep in &sleeps {
            assert!(
                common::gone_within(sleep.0, Duration::from_secs(5)),
                "{mode:?}: a descendant of the fenced command runs on"
            );
        }
        let output = holder.wait_with_output().unwrap();
        assert!(
            text(&output.stderr).contains("and its descendants (SIGKILL after 1 s)"),
            "{}",
            text(&output.stderr)
        );
    }
}

/// The pids of the `sleep` processes among `pid`'s descendants.
fn sleeps_under(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        for child in children
            .split_whitespace()
            .map(|c| c.parse::<i32>().unwrap())
        {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                found.push(child);
            }
            parents.push(child);
        }
    }
    found
}

/// A waiter whose member dies without a word after it queued (its watch
/// and its renewals through that member go nowhere) moves on to another
/// endpoint: it kept its lease alive through the others while it waited
/// on the dead one, so its key came to hold the lock and nobody ran, for a
/// day. Now it starts once the holder lets go, within a renewal period and
/// a share of a call's time; whether the member died while the waiter read
/// the line or while it watched the key ahead.
#[test]
fn a_waiter_whose_member_dies_silently_moves_on() {
    let Some(etcd) = Etcd::start() else { return };
    for while_watching in [false, true] {
        let member = FaultyEndpoint::new(&etcd, Fault::None);
        // A lock for each round: the last round's waiter's keeper gives its
        // lock back just after the waiter's command exits.
        let lock = lock_name(&format!("silent-waiter-{while_watching}"));
        let holder = common::Holding::start(["--etcd", &etcd.endpoint, &lock]);
        let both = format!("{},{}", member.url, etcd.endpoint);
        let mut waiter = common::spawn_waiting(me_only().args([
            "-v", "--wait", "--etcd", &both, "--ttl", "3", &lock, "echo", "started",
        ]));
        if while_watching {
            member
                .watches_made
                .recv_timeout(Duration::from_secs(10))
                .expect("the waiter watches through the member");
        }
        member.set(Fault::Silent);
        let released = Instant::now();
        assert!(holder.release().success());
        let started = common::gone_within(waiter.id() as i32, Duration::from_secs(20));
        let took = released.elapsed();
        if !started {
            let _ = waiter.kill();
        }
        let output = waiter.wait_with_output().unwrap();
        println!(
            "died while {}: the waiter started {took:?} after the holder let go (TTL 3 s)",
            if while_watching {
                "watching"
            } else {
                "reading"
            }
        );
        assert!(started, "the waiter never heard: {output:?}");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(text(&output.stdout), "started\n");
        // A renewal period (1 s) and the time a call gives the silent
        // member (half of what is left of the lease), with room to spare.
        assert!(took < Duration::from_secs(6), "{took:?}");
    }
}
