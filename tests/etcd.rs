//! `--etcd`: the lock lives in a real etcd server, which each test starts on
//! loopback ports with a data directory of its own, and stops. Without an
//! `etcd` on PATH the tests say so in one line and pass.
#![cfg(feature = "etcd")]

mod common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use common::{Holding, free_port, me_only, refused, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A single-member etcd cluster on two free loopback ports; stopped when
/// dropped.
struct Etcd {
    server: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Etcd {
    /// Starts one and returns once it serves clients; None (with a line
    /// saying why) where etcd is not installed.
    fn start() -> Option<Etcd> {
        Etcd::start_also_on(&[])
    }

    /// As `start`, for a test that also runs etcdctl (`ctl`, `keys_under`);
    /// None where either is missing.
    fn start_with_etcdctl() -> Option<Etcd> {
        if !common::programs_or_skip(&["etcd", "etcdctl"]) {
            return None;
        }
        Etcd::start()
    }

    /// As `start`, also serving clients on `ips` (the same port).
    fn start_also_on(ips: &[String]) -> Option<Etcd> {
        if !common::programs_or_skip(&["etcd"]) {
            return None;
        }
        let data = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let listen: Vec<String> = std::iter::once(client_url.clone())
            .chain(ips.iter().map(|ip| format!("http://{ip}:{client}")))
            .collect();
        let mut server = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(data.path())
            .args(["--listen-client-urls", &listen.join(",")])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = BufReader::new(server.stderr.take().unwrap());
        common::read_until_a_line_with(&mut log, "ready to serve client requests");
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        Some(Etcd {
            server,
            endpoint: client_url,
            _data: data,
        })
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.server.id() as i32)
    }

    /// `etcdctl` against this server.
    fn ctl(&self) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint]);
        command
    }

    /// The keys under `LOCK/`.
    fn keys_under(&self, lock: &str) -> Vec<String> {
        let output = self
            .ctl()
            .args(["get", "--prefix", "--keys-only", &format!("{lock}/")])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        text(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A lock name no other test uses.
fn lock_name(tag: &str) -> String {
    format!("me-only-test-{}-{tag}", std::process::id())
}

/// `me-only --etcd ENDPOINT <args...>`.
fn on(etcd: &Etcd, args: &[&str]) -> Command {
    let mut command = me_only();
    command.args(["--etcd", &etcd.endpoint]).args(args);
    command
}

/// How long a launch on `lock`, waiting up to 10 s, took to get it (it
/// must).
fn time_to_take(etcd: &Etcd, lock: &str) -> Duration {
    let started = Instant::now();
    on(etcd, &["--timeout", "10", lock, "true"])
        .assert()
        .success();
    started.elapsed()
}

#[test]
fn a_holder_keeps_others_out_and_says_where_it_runs() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("held");
    let script = "[ -z \"${ME_ONLY_FD+set}\" ] || echo fd-set; \
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

/// The keeper of `lock`: a process named me-only-keeper whose command line
/// names the lock.
fn keeper_of(lock: &str) -> Option<Pid> {
    helper_of("me-only-keeper", lock)
}

/// The sentry that watches the keeper of `lock`.
fn sentry_of(lock: &str) -> Option<Pid> {
    helper_of("me-only-sentry", lock)
}

/// The process named `name` whose command line names `lock`.
fn helper_of(name: &str, lock: &str) -> Option<Pid> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let names_lock = cmdline.split(|&b| b == 0).any(|arg| arg == lock.as_bytes());
            (comm.trim() == name && names_lock).then(|| Pid::from_raw(pid))
        })
}

/// Asserts that the keeper said it fenced COMMAND off for etcd being unreachable
/// for most of a `ttl`-second lease.
fn assert_fenced_for_unreachable(stderr: &[u8], ttl: u32) {
    let stderr = text(stderr);
    assert!(
        stderr.contains("lease lost: etcd unreachable for ")
            && stderr.contains(&format!(" s (TTL {ttl} s); terminating pid ")),
        "{stderr}"
    );
}

/// Starts `command` (a holder whose COMMAND prints `ready` once it runs),
/// stdout and stderr piped, and returns once it has said so.
fn started(command: &mut Command) -> (Child, BufReader<ChildStdout>) {
    let mut holder = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(holder.stdout.take().unwrap());
    common::read_until_a_line_with(&mut stdout, "ready");
    (holder, stdout)
}

/// A holder whose command says `terminated` on SIGTERM and then exits.
fn fenced_holder(etcd: &Etcd, lock: &str, ttl: &str) -> (Child, BufReader<ChildStdout>) {
    fenced_holder_at(&etcd.endpoint, lock, ttl, "5")
}

/// As `fenced_holder`, on `endpoints`, with `--kill-after kill_after`.
fn fenced_holder_at(
    endpoints: &str,
    lock: &str,
    ttl: &str,
    kill_after: &str,
) -> (Child, BufReader<ChildStdout>) {
    let script = "trap 'echo terminated; exit 0' TERM; echo ready; \
                  while :; do sleep 1 & wait $!; done";
    started(me_only().args([
        "--etcd",
        endpoints,
        "--ttl",
        ttl,
        "--kill-after",
        kill_after,
        lock,
        "sh",
        "-c",
        script,
    ]))
}

#[test]
fn a_deleted_key_fences_the_command_off() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("deleted");
    let (holder, mut stdout) = fenced_holder(&etcd, &lock, "3");
    let deleted = etcd
        .ctl()
        .args(["del", "--prefix", &format!("{lock}/")])
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
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
    let deleted = etcd
        .ctl()
        .args(["del", "--prefix", &format!("{lock}/")])
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
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

/// Waiters queue in etcd's lock service and run oldest first.
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
    // Each waiter says it waits once its key is queued... almost: the
    // line comes just before the lock call. Wait until all three keys are
    // there before letting go.
    while etcd.keys_under(&lock).len() < 4 {
        std::thread::yield_now();
    }
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
    for bad in ["127.0.0.1:2379", "https://h:2379", "http://h"] {
        let line = refused(me_only().args(["--etcd", bad, "job", "echo", "ran"]), 2);
        assert!(line.contains("is not an etcd endpoint"), "{line}");
    }
    let line = refused(
        me_only()
            .env_remove("ME_ONLY_ETCD_ENDPOINTS")
            .args(["--etcd=", "job", "echo", "ran"]),
        2,
    );
    assert!(line.contains("ME_ONLY_ETCD_ENDPOINTS is not set"), "{line}");
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
    let output = on(
        &etcd,
        &["--timeout", "10", "--detach", &lock, "sleep", "1000"],
    )
    .stderr(Stdio::null())
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let detached = common::Detached(text(&output.stdout).trim().parse().unwrap());
    refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4);
    drop(detached);
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

/// A caller that ignores SIGCHLD (some daemons and job runners do) made
/// every --etcd launch fail ("cannot start the lease keeper"). COMMAND gets
/// the disposition it was given.
#[test]
fn an_ignored_sigchld_neither_stops_the_launch_nor_changes_for_command() {
    use std::os::unix::process::CommandExt;

    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("sigchld");
    for fork in [&[][..], &["--fork"]] {
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
/// `pkill -f job` does not hit it); and a keeper told to stop (SIGTERM)
/// stops COMMAND before it gives the lock back: a new holder never runs
/// beside the old command.
#[test]
fn a_keeper_told_to_stop_fences_the_command_first() {
    let Some(etcd) = Etcd::start() else { return };
    let lock = lock_name("keeper-term");
    let (mut holder, _stdout) = fenced_holder(&etcd, &lock, "30");
    let keeper = keeper_of(&lock).expect("a keeper runs");
    let cmdline = std::fs::read(format!("/proc/{keeper}/cmdline")).unwrap();
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|word| !word.is_empty())
        .map(text)
        .collect();
    assert_eq!(words, ["me-only-keeper", lock.as_str()]);
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
/// passes connections on to etcd. Its threads serve until the test ends.
struct FaultyEndpoint {
    url: String,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
}

impl FaultyEndpoint {
    fn new(etcd: &Etcd, fault: Fault) -> FaultyEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let etcd_address = etcd.endpoint.trim_start_matches("http://").to_owned();
        let fault = std::sync::Arc::new(std::sync::Mutex::new(fault));
        let current = fault.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let fault = *current.lock().unwrap();
                let etcd_address = etcd_address.clone();
                std::thread::spawn(move || serve(connection, fault, &etcd_address));
            }
        });
        FaultyEndpoint { url, fault }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

fn serve(mut client: std::net::TcpStream, fault: Fault, etcd_address: &str) {
    use std::io::Read;

    if fault == Fault::None {
        let Ok(mut server) = std::net::TcpStream::connect(etcd_address) else {
            return;
        };
        let (mut client_in, mut server_out) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut client_in, &mut server_out));
        let _ = std::io::copy(&mut server, &mut client);
        // The other direction's copy holds the connection open: end it.
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
        let lock = lock_name("passed-over");
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
        let deleted = etcd
            .ctl()
            .args(["del", "--prefix", &format!("{lock}/")])
            .output()
            .unwrap();
        assert!(deleted.status.success(), "{deleted:?}");
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

/// Lock names nest without colliding: `NAME/inner` held leaves `NAME` free
/// (its keys lie under `NAME/` too, and made it look held).
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
    on(&etcd, &["--test", &inner])
        .assert()
        .code(4)
        .stdout(format!("{} {}\n", hostname(), holder.pid));
    refused(&mut on(&etcd, &[&inner, "echo", "ran"]), 4);
}
