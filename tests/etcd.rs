//! `--etcd`: the lock lives in a real etcd server, which each test starts on
//! loopback ports with a data directory of its own, and stops. Without an
//! `etcd` on PATH the tests say so in one line and pass.
#![cfg(feature = "etcd")]

use crate::common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use common::etcd::*;
use common::{Holding, free_port, me_only, refused, text};
use nix::sys::signal::{Signal, kill};

#[test]
fn a_holder_keeps_others_out_and_says_where_it_runs() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("held");
    // ME_ONLY_FD: the write end of the pipe that holds the lock with it.
    let script = "[ -p /proc/$$/fd/${ME_ONLY_FD:-none} ] || echo no-fd; \
                  [ \"$ME_ONLY_LOCK\" = \"$0\" ] || echo no-lock; \
                  case \"$ME_ONLY_FENCE\" in ''|*[!0-9]*) echo no-fence;; esac; \
                  echo ready; exec cat";
    let mut command = on(&etcd, &[&lock, "sh", "-c", script, &lock]);
    command.env_remove("ME_ONLY_FD");
    let holder = Holding::spawn(command);
    assert_eq!(
        refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4),
        format!(
            "me-only: {lock}: already held by pid {} on {}\n",
            holder.pid,
            hostname()
        )
    );
    on(&etcd, &["--test", &lock])
        .assert()
        .code(4)
        .stdout(format!("{} {}\n", hostname(), holder.pid));
    assert_eq!(etcd.keys_under(&lock).len(), 1);
    // The keeper is no child of COMMAND's: a COMMAND that reaps all its
    // children never meets it.
    let keeper = keeper_of(&lock).expect("a keeper runs");
    let stat = std::fs::read_to_string(format!("/proc/{keeper}/stat")).unwrap();
    let parent = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap();
    assert_ne!(
        parent,
        holder.pid.to_string(),
        "the keeper is COMMAND's child"
    );
    assert!(holder.release().success());
    // The keeper revokes the lease as COMMAND exits: a waiter gets the lock
    // long before the 30 s TTL would free it.
    let started = Instant::now();
    on(&etcd, &["--ttl", "30", "--timeout", "10", &lock, "true"])
        .assert()
        .success();
    println!("free {:?} after the holder exited", started.elapsed());
}

#[test]
fn the_fencing_token_grows_with_every_holder() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("fence");
    let fence = || {
        let output = on(&etcd, &[&lock, "sh", "-c", "echo $ME_ONLY_FENCE"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        text(&output.stdout).trim().parse::<i64>().unwrap()
    };
    let first = fence();
    // The next holder can only start once the first lease is gone.
    on(&etcd, &["--timeout", "10", &lock, "true"])
        .assert()
        .success();
    let second = fence();
    assert!(second > first, "{second} after {first}");
}

/// kill -9 of COMMAND: the keeper sees it go and revokes at once.
#[test]
fn kill_9_of_the_command_frees_the_lock_within_a_second() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("kill-command");
    let holder = Holding::start(["--etcd", &etcd.endpoint, "--ttl", "30", &lock]);
    holder.signal(Signal::SIGKILL);
    let freed = time_to_take(&etcd, &lock);
    println!("freed {freed:?} after kill -9 of the command");
    assert!(
        freed < Duration::from_secs(3),
        "{freed:?}: not the keeper's revoke"
    );
}

/// kill -9 of COMMAND, its keeper and the keeper's sentry: nothing
/// revokes, the lease runs out.
#[test]
fn kill_9_of_everything_frees_the_lock_within_the_ttl() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("kill-all");
    let holder = Holding::start(["--etcd", &etcd.endpoint, "--ttl", "2", &lock]);
    let keeper = keeper_of(&lock).expect("a keeper runs");
    let sentry = sentry_of(&lock).expect("a sentry runs");
    // All stopped first, so that none sees another die and revokes.
    for pid in [keeper, sentry] {
        kill(pid, Signal::SIGSTOP).unwrap();
    }
    for pid in [keeper, sentry] {
        kill(pid, Signal::SIGKILL).unwrap();
    }
    holder.signal(Signal::SIGKILL);
    common::wait_until_gone(keeper.as_raw());
    common::wait_until_gone(sentry.as_raw());
    let freed = time_to_take(&etcd, &lock);
    println!("freed {freed:?} after kill -9 of the command and its keeper (TTL 2 s)");
    assert!(freed < Duration::from_secs(6), "{freed:?}");
}

#[test]
fn a_deleted_key_fences_the_command_off() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("deleted");
    let (holder, mut stdout) = fenced_holder(&etcd, &lock, "3");
    etcd.delete_keys_of(&lock);
    common::read_until_a_line_with(&mut stdout, "terminated");
    let output = holder.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "me-only: {lock}: lock key deleted; terminating pid"
        )),
        "{stderr}"
    );
}

/// A fenced-off COMMAND that shrugs off SIGTERM gets SIGKILL after
/// --kill-after.
#[test]
fn a_command_that_ignores_sigterm_is_killed_after_kill_after() {
    use std::os::unix::process::ExitStatusExt;

    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("kill-after");
    let script = "trap 'echo got-term' TERM; echo ready; \
                  while :; do sleep 1 >/dev/null 2>&1 & wait $!; done";
    let (holder, mut stdout) = started(&mut on(
        &etcd,
        &[
            "--ttl",
            "3",
            "--kill-after",
            "0.5",
            &lock,
            "sh",
            "-c",
            script,
        ],
    ));
    etcd.delete_keys_of(&lock);
    common::read_until_a_line_with(&mut stdout, "got-term");
    let termed = Instant::now();
    let output = holder.wait_with_output().unwrap();
    let killed_after = termed.elapsed();
    println!("SIGKILL {killed_after:?} after SIGTERM (--kill-after 0.5)");
    assert_eq!(output.status.signal(), Some(9), "{output:?}");
    assert!(killed_after < Duration::from_secs(4), "{killed_after:?}");
    assert!(
        text(&output.stderr).contains("(SIGKILL after 0.5 s)"),
        "{}",
        text(&output.stderr)
    );
}

/// etcd stops answering (SIGSTOP): once the TTL has passed, the command is
/// fenced off, and a newcomer takes the lock once etcd is back.
#[test]
fn an_unreachable_etcd_fences_the_command_off_after_the_ttl() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("unreachable");
    let (holder, mut stdout) = fenced_holder(&etcd, &lock, "2");
    let stopped = Instant::now();
    kill(etcd.pid(), Signal::SIGSTOP).unwrap();
    common::read_until_a_line_with(&mut stdout, "terminated");
    let fenced = stopped.elapsed();
    kill(etcd.pid(), Signal::SIGCONT).unwrap();
    println!("fenced {fenced:?} after etcd stopped answering (TTL 2 s)");
    assert!(fenced < Duration::from_secs(4), "{fenced:?}");
    let output = holder.wait_with_output().unwrap();
    assert_fenced_for_unreachable(&output.stderr, 2);
    on(&etcd, &["--timeout", "10", &lock, "true"])
        .assert()
        .success();
}

/// Waiters queue behind the holder's key and run oldest first.
#[test]
fn waiters_run_in_the_order_they_came() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("queue");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order");
    let holder = Holding::start(["--etcd", &etcd.endpoint, &lock]);
    let waiters: Vec<Child> = (0..3)
        .map(|n| {
            common::spawn_waiting(
                me_only()
                    .args(["-v", "--wait", "--etcd", &etcd.endpoint, &lock])
                    .args(["sh", "-c", "echo $1 >> \"$2\"", "sh", &n.to_string()])
                    .arg(&log),
            )
        })
        .collect();
    // Each waiter says it waits once its key is in line.
    assert_eq!(etcd.keys_under(&lock).len(), 4);
    assert!(holder.release().success());
    for mut waiter in waiters {
        assert!(waiter.wait().unwrap().success());
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "0\n1\n2\n");
}

#[test]
fn timeout_gives_up_and_leaves_no_waiter_key() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("timeout");
    let holder = Holding::start(["--etcd", &etcd.endpoint, &lock]);
    let line = common::gives_up_after(
        &mut on(&etcd, &["--timeout", "0.5", &lock, "echo", "ran"]),
        Duration::from_millis(500),
    );
    // The time it says is the time it waited: the deadline, and the round
    // trips to etcd that follow it (giving the lease back, a last try).
    let prefix = format!(
        "me-only: {lock}: still held by pid {} on {} after ",
        holder.pid,
        hostname()
    );
    let said: f64 = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" s\n"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    assert!((0.5..3.0).contains(&said), "{line:?}");
    assert_eq!(etcd.keys_under(&lock).len(), 1, "a waiter key was left");
}

#[test]
fn an_endpoint_that_does_not_answer_is_a_lock_error() {
    // Refused: nothing listens.
    let port = free_port();
    let closed = format!("http://127.0.0.1:{port}");
    let line = refused(me_only().args(["--etcd", &closed, "job", "echo", "ran"]), 3);
    assert!(
        line.starts_with(&format!(
            "me-only: job: cannot grant a lease: etcd at {closed} does not answer: "
        )),
        "{line}"
    );
    // Silent: it accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let line = refused(me_only().args(["--etcd", &silent, "job", "echo", "ran"]), 3);
    println!("gave up on a silent endpoint after {:?}", started.elapsed());
    assert!(
        line.contains(&format!("etcd at {silent} does not answer")),
        "{line}"
    );
}

#[test]
fn a_malformed_endpoint_is_a_usage_error() {
    // (HOST:PORT without a scheme is one, as etcdctl takes them.)
    for bad in ["ftp://h:2379", "http://h", "h", "https://:1"] {
        let line = refused(me_only().args(["--etcd", bad, "job", "echo", "ran"]), 2);
        assert!(line.contains("is not an etcd endpoint"), "{line}");
    }
    let line = refused(
        me_only()
            .env_remove("ME_ONLY_ETCD_ENDPOINTS")
            .env_remove("ETCDCTL_ENDPOINTS")
            .args(["--etcd=", "job", "echo", "ran"]),
        2,
    );
    assert!(
        line.contains("neither ME_ONLY_ETCD_ENDPOINTS nor ETCDCTL_ENDPOINTS is set"),
        "{line}"
    );
}

#[test]
fn endpoints_come_from_the_environment() {
    let Some(etcd) = Etcd::start() else { return };
    me_only()
        .env("ME_ONLY_ETCD_ENDPOINTS", &etcd.endpoint)
        .args(["--etcd", "-q", &lock_name("env"), "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
}

/// etcdctl lock uses the same keys: the two exclude each other.
#[test]
fn etcdctl_lock_and_me_only_exclude_each_other() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("etcdctl");
    // etcdctl gives its command no stdin: it holds until a FIFO opens.
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    nix::unistd::mkfifo(&release, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut holder = etcd
        .ctl()
        .args([
            "lock",
            &lock,
            "--",
            "sh",
            "-c",
            "echo ready; cat \"$0\" >/dev/null",
        ])
        .arg(&release)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(holder.stdout.take().unwrap());
    common::read_until_a_line_with(&mut stdout, "ready");
    refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4);
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&release)
            .unwrap(),
    );
    let status = holder.wait().unwrap();
    assert!(status.success(), "etcdctl lock: {status}");
    on(&etcd, &["--timeout", "10", &lock, "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
}

#[test]
fn fork_and_detach_hold_an_etcd_lock() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("fork");
    let holder = Holding::start(["--etcd", &etcd.endpoint, "--fork", &lock]);
    on(&etcd, &["--test", &lock])
        .assert()
        .code(4)
        .stdout(format!("{} {}\n", hostname(), holder.pid));
    assert!(holder.release().success());
    a_detached_command_holds(&etcd, &lock);
    on(&etcd, &["--timeout", "10", &lock, "true"])
        .assert()
        .success();
}

/// Hosts for the tests: network namespaces, each joined to this one by a
/// veth pair on a /30 of its own, removed when dropped. Every instance has
/// a block of addresses and names of its own, so tests may run at once.
struct Hosts {
    /// The namespaces, and the host-side end of each one's link.
    names: Vec<(String, String)>,
    block: usize,
    /// Holds the block against other test processes (see `claim_block`).
    _claim: nix::fcntl::Flock<std::fs::File>,
}

impl Hosts {
    /// `count` (at most 7) of them; None (with a line saying why) where
    /// namespaces cannot be made.
    fn create(count: usize) -> Option<Hosts> {
        if !common::root_or_skip("make network namespaces") || !common::programs_or_skip(&["ip"]) {
            return None;
        }
        let (block, claim) = claim_block();
        remove_leftovers_of_block(block);
        let tag = std::process::id() % 10_000;
        let mut hosts = Hosts {
            names: Vec::new(),
            block,
            _claim: claim,
        };
        for n in 1..=count {
            let name = format!("meo{tag}b{block}h{n}");
            let outside = format!("meo{tag}b{block}o{n}");
            let (ours, theirs) = (hosts.gateway_ip(n), hosts.ip(n, 2));
            let commands = [
                format!("ip netns add {name}"),
                format!("ip link add {outside} type veth peer name eth0 netns {name}"),
                format!("ip addr add {ours}/30 dev {outside}"),
                format!("ip link set {outside} up"),
                format!("ip -n {name} addr add {theirs}/30 dev eth0"),
                format!("ip -n {name} link set eth0 up"),
                format!("ip -n {name} link set lo up"),
            ];
            hosts.names.push((name, outside));
            for command in commands {
                let done = Command::new("sh").args(["-c", &command]).output().unwrap();
                if !done.status.success() {
                    common::skip(&format!("{command}: {}", text(&done.stderr).trim()));
                    return None;
                }
            }
        }
        Some(hosts)
    }

    /// Address `last` of host `n`'s /30 (1: this side, 2: the host's).
    fn ip(&self, n: usize, last: u8) -> String {
        format!("10.231.{}.{last}", self.block * 8 + n)
    }

    /// The address of this side of host `n`'s link (1-based), where etcd
    /// listens for it.
    fn gateway_ip(&self, n: usize) -> String {
        self.ip(n, 1)
    }

    /// The etcd endpoint host `n` reaches etcd at, on etcd's `port`.
    fn endpoint(&self, n: usize, etcd: &Etcd) -> String {
        let port = etcd.endpoint.rsplit(':').next().unwrap();
        format!("http://{}:{port}", self.gateway_ip(n))
    }

    /// What etcd must listen on for all of them.
    fn gateway_ips(&self) -> Vec<String> {
        (1..=self.names.len()).map(|n| self.gateway_ip(n)).collect()
    }

    /// `me-only ARGS...` run in host `n`.
    fn me_only_in(&self, n: usize, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.names[n - 1].0, common::ME_ONLY])
            .args(args);
        command
    }

    /// Cuts host `n` off: its link goes down.
    fn cut_off(&self, n: usize) {
        let done = Command::new("ip")
            .args(["link", "set", &self.names[n - 1].1, "down"])
            .output()
            .unwrap();
        assert!(done.status.success(), "{done:?}");
    }
}

/// A block of addresses (10.231.8B.0/21) no other test, in this process or
/// another, uses meanwhile: two host-side links on one subnet would send
/// one test's packets to the other's namespace. Claimed with a flock(2)
/// on a file per block, held as long as the Hosts.
fn claim_block() -> (usize, nix::fcntl::Flock<std::fs::File>) {
    for block in 1..31 {
        let path = std::env::temp_dir().join(format!("me-only-tests-netns-block-{block}"));
        let file = std::fs::File::create(path).unwrap();
        if let Ok(claim) =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            return (block, claim);
        }
    }
    panic!("all address blocks for test hosts are in use");
}

/// Namespaces and links of `block` that a test killed before its Drop
/// left behind (a claimed block is no live test's): with their addresses
/// still up, this test's packets would go to them.
fn remove_leftovers_of_block(block: usize) {
    let of_block = |name: &str, side: char| {
        name.strip_prefix("meo")
            .and_then(|rest| rest.split_once('b'))
            .is_some_and(|(tag, rest)| {
                tag.chars().all(|c| c.is_ascii_digit())
                    && rest
                        .strip_prefix(&block.to_string())
                        .and_then(|rest| rest.strip_prefix(side))
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            })
    };
    let listed = |args: &[&str]| {
        let output = Command::new("ip").args(args).output().unwrap();
        text(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect::<Vec<_>>()
    };
    for name in listed(&["netns", "list"])
        .iter()
        .filter(|name| of_block(name, 'h'))
    {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
    for name in listed(&["-br", "link"])
        .iter()
        .filter(|name| of_block(name, 'o'))
    {
        let _ = Command::new("ip").args(["link", "del", name]).output();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (name, _) in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Three hosts contend on one name at once, round after round: exactly one
/// runs its command each round; it holds the lock until the test lets go,
/// after the other two have given up.
#[test]
fn hosts_in_separate_network_namespaces_run_one_at_a_time() {
    let Some(hosts) = Hosts::create(3) else {
        return;
    };
    let ips = hosts.gateway_ips();
    let Some(etcd) = Etcd::start_also_on(&ips) else {
        return;
    };
    let lock = lock_name("hosts");
    for round in 0..5 {
        let (done, results) = std::sync::mpsc::channel();
        let mut go = Vec::new();
        for n in 1..=3 {
            let endpoint = hosts.endpoint(n, &etcd);
            let contender = hosts.me_only_in(
                n,
                &[
                    "--etcd",
                    &endpoint,
                    &lock,
                    "sh",
                    "-c",
                    "echo $0; exec cat",
                    &n.to_string(),
                ],
            );
            // Waits for its go line on stdin, then execs; the winner's
            // command then holds until stdin closes.
            let mut child = Command::new("sh")
                .args(["-c", "read _ && exec \"$@\"", "launcher"])
                .arg(contender.get_program())
                .args(contender.get_args())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            go.push(child.stdin.take().unwrap());
            let done = done.clone();
            std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
        }
        for stdin in &mut go {
            stdin.write_all(b"\n").unwrap();
        }
        for _ in 0..2 {
            let output = results.recv().unwrap();
            assert_eq!(output.status.code(), Some(4), "round {round}: {output:?}");
        }
        drop(go);
        let winner = results.recv().unwrap();
        assert!(winner.status.success(), "round {round}: {winner:?}");
        println!("round {round}: host {} ran", text(&winner.stdout).trim());
    }
}

/// The holder's host is cut off: after about the TTL its command is
/// fenced off, and a waiter on another host takes the lock; the two
/// commands never run at once (a mkdir witness on the shared filesystem).
#[test]
fn a_cut_off_holder_is_fenced_before_another_host_takes_over() {
    let Some(hosts) = Hosts::create(2) else {
        return;
    };
    let ips = hosts.gateway_ips();
    let Some(etcd) = Etcd::start_also_on(&ips) else {
        return;
    };
    let endpoint = |n: usize| hosts.endpoint(n, &etcd);
    let lock = lock_name("partition");
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("running");
    let witness = witness.to_str().unwrap();
    let holder_script = "mkdir \"$0\" || exit 99; \
                         trap 'rmdir \"$0\"; echo terminated; exit 0' TERM; \
                         echo ready; while :; do sleep 1 & wait $!; done";
    let mut holder = hosts
        .me_only_in(
            1,
            &[
                "--etcd",
                &endpoint(1),
                "--ttl",
                "3",
                &lock,
                "sh",
                "-c",
                holder_script,
                witness,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder_out = BufReader::new(holder.stdout.take().unwrap());
    common::read_until_a_line_with(&mut holder_out, "ready");
    let waiter = hosts
        .me_only_in(
            2,
            &[
                "--etcd",
                &endpoint(2),
                "--wait",
                &lock,
                "sh",
                "-c",
                "mkdir \"$0\" && echo took-over",
                witness,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cut = Instant::now();
    hosts.cut_off(1);
    common::read_until_a_line_with(&mut holder_out, "terminated");
    let fenced = cut.elapsed();
    let output = waiter.wait_with_output().unwrap();
    let took_over = cut.elapsed();
    println!("cut off: fenced after {fenced:?}, taken over after {took_over:?} (TTL 3 s)");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "took-over\n");
    let holder = holder.wait_with_output().unwrap();
    assert_fenced_for_unreachable(&holder.stderr, 3);
}

/// COMMAND cannot be run: exit 1, and the keeper, which saw me-only end,
/// has given the lock back (well before the 30 s TTL).
#[test]
fn a_command_that_cannot_run_leaves_the_lock_free() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("no-command");
    let line = refused(
        &mut on(&etcd, &["--ttl", "30", &lock, "no-such-command-here"]),
        1,
    );
    assert_eq!(
        line,
        format!("me-only: {lock}: no-such-command-here: command not found\n")
    );
    let freed = time_to_take(&etcd, &lock);
    assert!(freed < Duration::from_secs(3), "{freed:?}");
}

/// Lock names nest without colliding: `NAME/inner` held leaves `NAME` free
/// (its keys lie under `NAME/` too, and made it look held), to a waiter
/// too (etcd's lock service, which waiters used to queue in, waits for
/// them).
#[test]
fn a_nested_name_is_a_lock_of_its_own() {
    let Some(etcd) = Etcd::start() else { return };
    let outer = lock_name("nest");
    let inner = format!("{outer}/nightly");
    let holder = Holding::start(["--etcd", &etcd.endpoint, &inner]);
    on(&etcd, &["--test", &outer]).assert().code(0).stdout("");
    on(&etcd, &[&outer, "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
    let outer_holder = Holding::start(["--etcd", &etcd.endpoint, &outer]);
    let mut waiter = common::spawn_waiting(me_only().args([
        "-v",
        "--etcd",
        &etcd.endpoint,
        "--wait",
        &outer,
        "echo",
        "ran",
    ]));
    assert!(outer_holder.release().success());
    let ran = common::gone_within(waiter.id() as i32, Duration::from_secs(5));
    if !ran {
        let _ = waiter.kill();
    }
    let output = waiter.wait_with_output().unwrap();
    assert!(ran, "the waiter waits for the nested holder too");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "ran\n");
    on(&etcd, &["--test", &inner])
        .assert()
        .code(4)
        .stdout(format!("{} {}\n", hostname(), holder.pid));
    refused(&mut on(&etcd, &[&inner, "echo", "ran"]), 4);
}
