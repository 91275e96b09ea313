//! A real etcd for the --etcd tests, and what they do with it: started on
//! loopback ports with a data directory of its own, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{free_port, me_only, text};

/// A single-member etcd cluster on two free loopback ports; stopped when
/// dropped.
pub struct Etcd {
    server: Child,
    pub endpoint: String,
    /// What a client needs besides the endpoint: --cacert, --cert, --key
    /// for a TLS one; --user root:... once auth is on (etcdctl only).
    pub client_args: Vec<String>,
    root_login: Option<String>,
    _data: tempfile::TempDir,
}

/// How a test's etcd serves clients.
#[derive(Default)]
pub struct Serving<'a> {
    /// More addresses it listens on (the same port).
    pub also_on: &'a [String],
    /// TLS with these certificates; and whether it asks clients for theirs.
    pub tls: Option<(&'a Pki, bool)>,
    /// More of etcd's options.
    pub options: &'a [&'a str],
}

impl Etcd {
    /// Starts one and returns once it serves clients; None (with a line
    /// saying why) where etcd is not installed.
    pub fn start() -> Option<Etcd> {
        Etcd::start_also_on(&[])
    }

    /// As `start`, for a test that also runs etcdctl (`ctl`, `keys_under`);
    /// None where either is missing.
    pub fn start_with_etcdctl() -> Option<Etcd> {
        if !super::programs_or_skip(&["etcd", "etcdctl"]) {
            return None;
        }
        Etcd::start()
    }

    /// As `start`, also serving clients on `ips` (the same port).
    pub fn start_also_on(ips: &[String]) -> Option<Etcd> {
        Etcd::start_serving(Serving {
            also_on: ips,
            ..Serving::default()
        })
    }

    /// As `start`, serving clients as `serving` says.
    pub fn start_serving(serving: Serving) -> Option<Etcd> {
        if !super::programs_or_skip(&["etcd"]) {
            return None;
        }
        // A free port may be taken by another test's etcd before this one
        // binds it: this one then ends at once, and starts again on others.
        for _ in 0..PORT_ATTEMPTS {
            if let Some(etcd) = Etcd::try_start(&serving) {
                return Some(etcd);
            }
        }
        panic!("etcd ended before serving, on {PORT_ATTEMPTS} pairs of free ports");
    }

    /// Starts one on two free ports; None if it ended before it served.
    fn try_start(serving: &Serving) -> Option<Etcd> {
        let data = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let scheme = if serving.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let listen: Vec<String> = std::iter::once(client_url.clone())
            .chain(
                serving
                    .also_on
                    .iter()
                    .map(|ip| format!("{scheme}://{ip}:{client}")),
            )
            .collect();
        let mut server = Command::new("etcd");
        let mut client_args = Vec::new();
        if let Some((pki, ask_clients)) = serving.tls {
            server
                .args(["--cert-file", &pki.path("server.pem")])
                .args(["--key-file", &pki.path("server.key")]);
            if ask_clients {
                server
                    .args(["--trusted-ca-file", &pki.path("ca.pem")])
                    .arg("--client-cert-auth");
            }
            client_args = pki.client_args("anonymous");
        }
        server
            .args(serving.options)
            .args(["--name", "test", "--data-dir"])
            .arg(data.path())
            .args(["--listen-client-urls", &listen.join(",")])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")]);
        let mut server = spawn_logging(&mut server);
        if !serves(&mut server) {
            let _ = server.kill();
            let _ = server.wait();
            return None;
        }
        Some(Etcd {
            server,
            endpoint: client_url,
            client_args,
            root_login: None,
            _data: data,
        })
    }

    /// Turns auth on, with `user:password` allowed to read and write the
    /// keys under `prefix` only.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) {
        for words in [
            &["user", "add", "root:root-password"][..],
            &["user", "add", &format!("{user}:{password}")],
            &["role", "add", "lockers"],
            &[
                "role",
                "grant-permission",
                "lockers",
                "--prefix=true",
                "readwrite",
                prefix,
            ],
            &["user", "grant-role", user, "lockers"],
            &["auth", "enable"],
        ] {
            let done = self.ctl().args(words).output().unwrap();
            assert!(done.status.success(), "{words:?}: {done:?}");
        }
        self.root_login = Some("root:root-password".into());
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.server.id() as i32)
    }

    /// `etcdctl` against this server.
    pub fn ctl(&self) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .args(&self.client_args);
        if let Some(root) = &self.root_login {
            command.args(["--user", root]);
        }
        command
    }

    /// Puts every key of `keys`, each with `value`, through etcdctl: in
    /// transactions of at most 100 puts (etcd takes 128 operations in one),
    /// so that a test fills etcd with thousands of keys in a few calls.
    pub fn put_many(&self, keys: &[String], value: &str) {
        use std::io::Write;

        for batch in keys.chunks(100) {
            let puts: String = batch
                .iter()
                .map(|key| format!("put {key} \"{value}\"\n"))
                .collect();
            let mut txn = self
                .ctl()
                .arg("txn")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // No condition, the puts as the success branch, no failure branch.
            let script = format!("\n{puts}\n\n");
            txn.stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let done = txn.wait_with_output().unwrap();
            assert!(done.status.success(), "etcdctl txn: {done:?}");
        }
    }

    /// A lease granted by etcdctl for `ttl` seconds: its ID in hex, as
    /// me-only writes it in a lock's key.
    pub fn grant_lease(&self, ttl: u32) -> String {
        let granted = self
            .ctl()
            .args(["lease", "grant", &ttl.to_string()])
            .output()
            .unwrap();
        assert!(granted.status.success(), "{granted:?}");
        // `lease 694d7d5b2bd4b80a granted with TTL(60s)`
        let said = text(&granted.stdout);
        said.split_whitespace().nth(1).unwrap().to_owned()
    }

    /// Deletes the keys under `LOCK/` behind me-only's back, as an operator
    /// with etcdctl would.
    pub fn delete_keys_of(&self, lock: &str) {
        let deleted = self
            .ctl()
            .args(["del", "--prefix", &format!("{lock}/")])
            .output()
            .unwrap();
        assert!(deleted.status.success(), "{deleted:?}");
    }

    /// The keys under `LOCK/`.
    pub fn keys_under(&self, lock: &str) -> Vec<String> {
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

/// Starts `etcd` with its log on a pipe that `until_serving` reads.
fn spawn_logging(etcd: &mut Command) -> Child {
    etcd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Returns once every one of `servers` says it serves clients; panics if
/// one ends first, or if they do not within SERVE_WITHIN.
fn until_serving(servers: Vec<&mut Child>) {
    assert!(all_serve(servers), "etcd ended before serving");
}

/// Whether `etcd` comes to serve clients, or ends first.
fn serves(etcd: &mut Child) -> bool {
    all_serve(vec![etcd])
}

/// Whether every one of `servers` comes to serve clients (a member of a
/// cluster: once the cluster has a leader), within SERVE_WITHIN: false as
/// soon as one ends first (its port taken meanwhile), where reading the
/// others' logs would wait for ever for a quorum that cannot come. Their
/// logs are read by threads of their own, which then read the rest and
/// drop it.
fn all_serve(servers: Vec<&mut Child>) -> bool {
    let (said, heard) = std::sync::mpsc::channel();
    let count = servers.len();
    for server in servers {
        let mut log = BufReader::new(server.stderr.take().unwrap());
        let said = said.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let serving = loop {
                if line.contains("ready to serve client requests") {
                    break true;
                }
                line.clear();
                if log.read_line(&mut line).unwrap_or(0) == 0 {
                    break false;
                }
            };
            let _ = said.send(serving);
            std::io::copy(&mut log, &mut std::io::sink())
        });
    }
    (0..count).all(|_| heard.recv_timeout(SERVE_WITHIN) == Ok(true))
}

/// How long etcd may take to serve, on a loaded machine.
const SERVE_WITHIN: Duration = Duration::from_secs(60);

/// How many pairs of free ports a test's etcd is tried on.
const PORT_ATTEMPTS: usize = 3;

/// A 3-member etcd cluster on loopback, each member on two free ports with
/// a data directory of its own; every member still running is stopped
/// when dropped. Elections are quick (a heartbeat of 50 ms, an election
/// timeout of 500 ms: a leader killed is replaced within about a second),
/// as tests of leader elections need.
pub struct Cluster {
    members: Vec<Member>,
    _data: tempfile::TempDir,
}

/// One member of a Cluster: how it was started, to start it again.
struct Member {
    server: Option<Child>,
    client_url: String,
    command: Vec<String>,
}

/// How often members talk and how long they go without a leader before an
/// election, in ms: small for quick elections, not so small that a loaded
/// test machine holds spurious ones.
const HEARTBEAT_MS: &str = "50";
const ELECTION_TIMEOUT_MS: &str = "500";

impl Cluster {
    /// Starts three members and returns once all serve clients; None (with
    /// a line saying why) where etcd is not installed.
    pub fn start() -> Option<Cluster> {
        if !super::programs_or_skip(&["etcd"]) {
            return None;
        }
        for _ in 0..PORT_ATTEMPTS {
            if let Some(cluster) = Cluster::try_start() {
                return Some(cluster);
            }
        }
        panic!("a cluster did not serve, on {PORT_ATTEMPTS} sets of free ports");
    }

    /// Starts three members on free ports; None if one ended before they
    /// served (its port taken meanwhile), or they did not in time.
    fn try_start() -> Option<Cluster> {
        let data = tempfile::tempdir().unwrap();
        let names = ["m0", "m1", "m2"];
        let peers: Vec<String> = names
            .iter()
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial: Vec<String> = names
            .iter()
            .zip(&peers)
            .map(|(name, peer)| format!("{name}={peer}"))
            .collect();
        // Unique, so that no member of another test's cluster joins this one.
        let token = data
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut members: Vec<Member> = names
            .iter()
            .zip(&peers)
            .map(|(name, peer)| {
                let client_url = format!("http://127.0.0.1:{}", free_port());
                let dir = data.path().join(name).to_string_lossy().into_owned();
                let command = [
                    "--name",
                    name,
                    "--data-dir",
                    &dir,
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                    "--listen-peer-urls",
                    peer,
                    "--initial-advertise-peer-urls",
                    peer,
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-token",
                    &token,
                    "--heartbeat-interval",
                    HEARTBEAT_MS,
                    "--election-timeout",
                    ELECTION_TIMEOUT_MS,
                ]
                .map(str::to_owned)
                .to_vec();
                let server = Some(spawn_logging(Command::new("etcd").args(&command)));
                Member {
                    server,
                    client_url,
                    command,
                }
            })
            .collect();
        // Each says it serves only once the three have a leader.
        let serving = all_serve(
            members
                .iter_mut()
                .map(|m| m.server.as_mut().unwrap())
                .collect(),
        );
        let cluster = Cluster {
            members,
            _data: data,
        };
        // Dropped, it stops those that run.
        serving.then_some(cluster)
    }

    /// The client URLs of all members, joined by ',' as --etcd takes them.
    pub fn endpoints(&self) -> String {
        let urls: Vec<&str> = self.members.iter().map(|m| m.client_url.as_str()).collect();
        urls.join(",")
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> &str {
        &self.members[i].client_url
    }

    /// The member that leads now, as a running member sees it; waits (up
    /// to 10 s) for one to be elected.
    pub fn leader(&self) -> usize {
        let started = Instant::now();
        loop {
            if let Some(leader) = self.running().find_map(|i| self.leader_seen_by(i)) {
                return leader;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no leader elected within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The members still running, by index.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.members[i].server.is_some())
    }

    /// The leader member `i` knows of, if it knows one that runs.
    fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let status = status_of(&self.members[i].client_url)?;
        let leader = json_field(&status, "leader")?;
        let member = json_field(&status, "member_id")?;
        if leader == "0" {
            return None;
        }
        if leader == member {
            return Some(i);
        }
        // A follower names the leader by id: ask the others for theirs.
        self.running().filter(|&j| j != i).find(|&j| {
            status_of(&self.members[j].client_url)
                .and_then(|status| json_field(&status, "member_id"))
                .is_some_and(|id| id == leader)
        })
    }

    /// kill -9 of member `i` (the pid this cluster started).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut server) = self.members[i].server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts member `i` again on its data directory (after kill_member),
    /// returning once it serves clients.
    pub fn restart_member(&mut self, i: usize) {
        self.restart_members(&[i]);
    }

    /// As `restart_member`, for several at once: two members killed must
    /// both start before either serves (with one alone, no quorum).
    pub fn restart_members(&mut self, members: &[usize]) {
        for &i in members {
            let member = &mut self.members[i];
            assert!(member.server.is_none(), "member {i} runs");
            member.server = Some(spawn_logging(Command::new("etcd").args(&member.command)));
        }
        let restarted = self
            .members
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| members.contains(i))
            .map(|(_, member)| member.server.as_mut().unwrap())
            .collect();
        until_serving(restarted);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}

/// The answer of a member's maintenance status call (its id, its leader's),
/// or None if it gives none within a second.
fn status_of(client_url: &str) -> Option<String> {
    use std::io::{Read, Write};

    let address = client_url.trim_start_matches("http://");
    let timeout = Duration::from_secs(1);
    let mut stream = std::net::TcpStream::connect_timeout(&address.parse().ok()?, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!(
        "POST /v3/maintenance/status HTTP/1.1\r\nHost: {address}\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.starts_with("HTTP/1.1 200").then_some(answer)
}

/// The string value of `"name":"VALUE"` in a JSON text.
fn json_field(json: &str, name: &str) -> Option<String> {
    let start = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A lock name no other test uses.
pub fn lock_name(tag: &str) -> String {
    format!("me-only-test-{}-{tag}", std::process::id())
}

/// `me-only --etcd ENDPOINT <args...>`, with the etcd's client arguments.
pub fn on(etcd: &Etcd, args: &[&str]) -> Command {
    let mut command = me_only();
    command
        .args(["--etcd", &etcd.endpoint])
        .args(&etcd.client_args)
        .args(args);
    command
}

/// A --detach launch on `lock` (waiting up to 10 s) holds the lock for as
/// long as its command runs.
pub fn a_detached_command_holds(etcd: &Etcd, lock: &str) {
    let output = on(
        etcd,
        &["--timeout", "10", "--detach", lock, "sleep", "1000"],
    )
    .stderr(Stdio::null())
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let detached = super::Detached(text(&output.stdout).trim().parse().unwrap());
    super::refused(&mut on(etcd, &[lock, "echo", "ran"]), 4);
    drop(detached);
}

/// Certificates made by openssl for a test's TLS etcd, in a directory of
/// their own: a CA (ca.pem), the server's for 127.0.0.1 and localhost
/// (server.pem, server.key), a client's (client.pem, client.key), one that
/// names no user (anonymous.pem, anonymous.key), an expired client
/// certificate for client.key (expired.pem), and a CA that signed none of
/// them (other-ca.pem).
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// None (the test skipped) where openssl or etcd is missing.
    pub fn make() -> Option<Pki> {
        if !super::programs_or_skip(&["openssl", "etcd"]) {
            return None;
        }
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for ca in ["ca", "other-ca"] {
            pki.openssl(&format!(
                "req -x509 {new_key} -keyout {ca}.key -out {ca}.pem -days 2 -subj /CN={ca}"
            ));
        }
        std::fs::write(
            pki.dir.path().join("ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        let sign = "x509 -req -CA ca.pem -CAkey ca.key -CAcreateserial -extfile ext";
        // A client certificate that names no user (no CommonName): with
        // auth on, etcd's gateway takes no other.
        for (name, subject) in [
            ("server", "/CN=server"),
            ("client", "/CN=client"),
            ("anonymous", "/O=me-only-test"),
        ] {
            pki.openssl(&format!(
                "req {new_key} -keyout {name}.key -out {name}.csr -subj {subject}"
            ));
            pki.openssl(&format!("{sign} -in {name}.csr -out {name}.pem -days 2"));
        }
        // Valid for no time at all: expired by the time it is used.
        pki.openssl(&format!("{sign} -in client.csr -out expired.pem -days 0"));
        Some(pki)
    }

    /// Runs openssl with `words` (no word holds a space) in the directory.
    fn openssl(&self, words: &str) {
        let done = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(words.split(' '))
            .output()
            .unwrap();
        assert!(done.status.success(), "openssl {words}: {done:?}");
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// --cacert, --cert, --key for the client certificate `name`.
    pub fn client_args(&self, name: &str) -> Vec<String> {
        let files = [
            "ca.pem".to_owned(),
            format!("{name}.pem"),
            format!("{name}.key"),
        ];
        ["cacert", "cert", "key"]
            .iter()
            .zip(files)
            .flat_map(|(option, file)| [format!("--{option}"), self.path(&file)])
            .collect()
    }
}

/// How long a launch on `lock`, waiting up to 10 s, took to get it (it
/// must).
pub fn time_to_take(etcd: &Etcd, lock: &str) -> Duration {
    let started = Instant::now();
    on(etcd, &["--timeout", "10", lock, "true"])
        .assert()
        .success();
    started.elapsed()
}

/// The keeper of `lock`: a process named me-only-keeper whose command line
/// names the lock.
pub fn keeper_of(lock: &str) -> Option<Pid> {
    helper_of("me-only-keeper", lock)
}

/// The sentry that watches the keeper of `lock`.
pub fn sentry_of(lock: &str) -> Option<Pid> {
    helper_of("me-only-sentry", lock)
}

/// The process named `name` whose command line names `lock`.
pub fn helper_of(name: &str, lock: &str) -> Option<Pid> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let names_lock = cmdline == format!("{name} {lock}\0").as_bytes();
            (comm.trim() == name && names_lock).then(|| Pid::from_raw(pid))
        })
}

/// Asserts that the keeper said it fenced COMMAND off for etcd being unreachable
/// for most of a `ttl`-second lease.
pub fn assert_fenced_for_unreachable(stderr: &[u8], ttl: u32) {
    let stderr = text(stderr);
    assert!(
        stderr.contains("lease lost: etcd unreachable for ")
            && stderr.contains(&format!(" s (TTL {ttl} s); terminating pid ")),
        "{stderr}"
    );
}

/// Starts `command` (a holder whose COMMAND prints `ready` once it runs),
/// stdout and stderr piped, and returns once it has said so.
pub fn started(command: &mut Command) -> (Child, BufReader<ChildStdout>) {
    let mut holder = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(holder.stdout.take().unwrap());
    super::read_until_a_line_with(&mut stdout, "ready");
    (holder, stdout)
}

/// A holder whose command says `terminated` on SIGTERM and then exits.
pub fn fenced_holder(etcd: &Etcd, lock: &str, ttl: &str) -> (Child, BufReader<ChildStdout>) {
    fenced_holder_at(&etcd.endpoint, lock, ttl, "5")
}

/// As `fenced_holder`, on `endpoints`, with `--kill-after kill_after`.
pub fn fenced_holder_at(
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

/// When `pid` (a keeper) next wakes after a quiet stretch, as it does to
/// send a renewal: it has been switched to (voluntary_ctxt_switches in
/// /proc/PID/status; std sends on sockets without write(2), which wchar
/// in /proc/PID/io would count). Looked at every 2 ms, up to 10 s.
pub fn next_wake_of(pid: Pid) -> Instant {
    let switches = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .unwrap()
    };
    let started = Instant::now();
    let mut last = (switches(), Instant::now());
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{pid} does not wake"
        );
        std::thread::sleep(Duration::from_millis(2));
        let now = switches();
        if now == last.0 {
            continue;
        }
        // A wake after 200 ms of quiet starts a renewal; one sooner is
        // part of the last.
        if last.1.elapsed() >= Duration::from_millis(200) {
            return Instant::now();
        }
        last = (now, Instant::now());
    }
}
