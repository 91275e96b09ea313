//! `--replace` with `--etcd`: the holder, on whatever host it runs, is
//! asked through its key to stop; its keeper stops it and lets go, while
//! the replacer waits in line.
#![cfg(feature = "etcd")]

use crate::common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::etcd::{Etcd, fenced_holder_at, hostname, lock_name, on};
use common::{KillOnDrop, ME_ONLY, gone_within, inherit_fd_as, pipe};

/// The holder's and the replacers' lease TTL and --kill-after, in seconds.
const TTL: &str = "2";
const KILL_AFTER: &str = "1";
/// Beyond TTL + --kill-after, for the calls to etcd and the launches (a
/// replacer that waits for the holder to be stopped by asking waits up to
/// TTL + --kill-after + 5 s).
const ALLOWANCE: Duration = Duration::from_secs(2);

/// Defect 7 of issue 22: of two replacers started together, the one that
/// was behind the other in line waited on after the holder had stopped,
/// until its wait for the holder ran out (~18 s with the default TTL), and
/// then blamed the holder, long gone ("which --replace cannot stop"). As
/// when two replace a kernel lock's holder at once, one runs, and the other
/// finds the lock taken by it and stops it in turn: each asked holder is
/// stopped, and each replacer runs, within the TTL + --kill-after.
#[test]
fn of_two_replacers_at_once_one_runs_then_the_other_replaces_it() {
    let Some(etcd) = Etcd::start() else { return };
    let bound = seconds(TTL) + seconds(KILL_AFTER) + ALLOWANCE;
    for round in 0..3 {
        let lock = lock_name(&format!("replace-two-{round}"));
        let (mut holder, _) = fenced_holder_at(&etcd.endpoint, &lock, TTL, KILL_AFTER);
        let (go, cue) = pipe();
        let (said, say) = pipe();
        let mut replacers: Vec<KillOnDrop> = (0..2)
            .map(|_| start_replacer(&etcd, &lock, &go, &say))
            .collect();
        drop(say);
        let ran = lines_of(said);
        // Both go at once.
        drop(cue);
        let started = Instant::now();
        let first = ran_within(&ran, &replacers, started + bound, "first");
        assert!(holder.try_wait().unwrap().is_some(), "the holder runs on");
        let second = ran_within(&ran, &replacers, started + bound, "second");
        assert_ne!(first, second);
        let (stopped, stderr) = ended(&mut replacers[first]);
        assert_eq!(stopped.signal(), Some(15), "the first to run: {stderr}");
        assert!(
            stderr.contains(&format!(
                "me-only: {lock}: replaced (another instance ran me-only --replace)"
            )),
            "{stderr}"
        );
        drop(replacers[second].0.stdin.take());
        let (status, stderr) = ended(&mut replacers[second]);
        assert!(status.success(), "the second to run: {status}: {stderr}");
        assert_eq!(stderr, "", "the second to run");
    }
}

/// Review of issue 22: a `--replace-older --wait` launch whose wait for
/// the old holder it asked ran out just before that holder let go, to a
/// waiter younger than --replace-older, gave up at once (exit 4) instead of
/// waiting for the young one, which --replace-older leaves alone: its
/// --wait still looked for the key of the holder it had asked, and that
/// key was gone. The old holder is a key that names a pid gone from this
/// host, on a lease etcdctl keeps alive: nothing stops it when asked, and a
/// launch that meets it waits a moment (a second) for it to go, its keeper
/// being about to revoke it: that is when the test lets it go. A machine
/// so loaded that it went only after that moment proves nothing: that
/// round is not counted, and one of three must count.
#[test]
fn a_replacer_that_waits_waits_for_a_young_holder_that_took_over_from_the_asked_one() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let counted = (0..3).any(|round| the_replacer_waits_for_the_young_holder(&etcd, round));
    assert!(counted, "the old holder never went in time");
}

/// One round of the test above; false if it does not count.
fn the_replacer_waits_for_the_young_holder(etcd: &Etcd, round: usize) -> bool {
    let lock = lock_name(&format!("replace-older-wait-{round}"));
    let (lease, _kept_alive) = old_holder_gone_from_here(etcd, &lock);
    let waiter_args = ["-v", "--wait", "--ttl", TTL, &lock, "sh", "-c"];
    let (mut waiter, _) = started_saying(
        on(etcd, &waiter_args).arg("echo ready; read line || :"),
        "waiting for the holder to let go",
    );
    let replacer_args = [
        "-v",
        "--replace-older",
        "100",
        "--wait",
        "--ttl",
        TTL,
        "--kill-after",
        "0",
        &lock,
        "echo",
        "replacer ran",
    ];
    let (mut replacer, mut said) = started_saying(
        &mut on(etcd, &replacer_args),
        // Its wait for the old holder (TTL + 5 s) has run out, and it
        // tries once more.
        "trying again after",
    );
    said.until(&["is gone: waiting for its key to go"]);
    revoke_at_once(etcd, &lease);
    let too_late = "did not stop within";
    if said.until(&["let go, to another", too_late]) == 1 {
        println!("round {round} does not count: the old holder went too late");
        return false;
    }
    said.until(&["waiting for the holder to let go"]);
    let mut ready = String::new();
    BufReader::new(waiter.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n", "the young holder runs");
    // One look at the line, a call of a few ms, is all it took to give up;
    // the young holder lets go only once that look is surely over.
    let pid = replacer.0.id() as i32;
    assert!(
        !gone_within(pid, Duration::from_millis(500)),
        "the replacer gave up: {}",
        said.rest()
    );
    drop(waiter.0.stdin.take());
    assert!(waiter.0.wait().unwrap().success());
    let mut stdout = String::new();
    let mut ran = replacer.0.stdout.take().unwrap();
    ran.read_to_string(&mut stdout).unwrap();
    let status = replacer.0.wait().unwrap();
    assert!(status.success(), "{status}: {}", said.rest());
    assert_eq!(stdout, "replacer ran\n");
    true
}

/// Revokes `lease` (its ID in hex) through etcd's HTTP API, in a moment:
/// etcdctl would take tens of ms to start, more on a loaded machine.
fn revoke_at_once(etcd: &Etcd, lease: &str) {
    let id = u64::from_str_radix(lease, 16).unwrap() as i64;
    let address = etcd.endpoint.trim_start_matches("http://");
    let body = format!("{{\"ID\":\"{id}\"}}");
    let request = format!(
        "POST /v3/lease/revoke HTTP/1.1\r\nHost: {address}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A holder of `lock` that took it long ago, as its key's value says, and
/// whose pid is gone from this host, on a lease of TTL seconds that
/// etcdctl keeps alive (until the returned process is dropped): the
/// lease's ID.
fn old_holder_gone_from_here(etcd: &Etcd, lock: &str) -> (String, KillOnDrop) {
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let lease = etcd.grant_lease(TTL.parse().unwrap());
    let kept_alive = etcd
        .ctl()
        .args(["lease", "keep-alive", &lease])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let put = etcd
        .ctl()
        .args(["put", &format!("--lease={lease}")])
        .arg(format!("{lock}/{lease}"))
        .arg(format!("{} {pid} {}", hostname(), epoch.as_secs() - 1000))
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    (lease, KillOnDrop(kept_alive))
}

/// What a launch says on stderr, line by line, as it comes.
struct Said {
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for a failure's message.
    so_far: String,
}

impl Said {
    /// Reads lines until one contains one of `texts`, for up to
    /// LINE_WAIT; which one.
    fn until(&mut self, texts: &[&str]) -> usize {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!("did not say {texts:?}; said:\n{}", self.so_far);
            };
            self.so_far.push_str(&line);
            self.so_far.push('\n');
            if let Some(which) = texts.iter().position(|text| line.contains(text)) {
                return which;
            }
        }
    }

    /// Everything said, up to the end (or LINE_WAIT).
    fn rest(&mut self) -> &str {
        while let Ok(line) = self.lines.recv_timeout(LINE_WAIT) {
            self.so_far.push_str(&line);
            self.so_far.push('\n');
        }
        &self.so_far
    }
}

/// How long a test waits for a launch to say what it is doing.
const LINE_WAIT: Duration = Duration::from_secs(20);

/// Starts `command` (stdin, stdout and stderr piped) and returns once it
/// has said `text` on stderr.
fn started_saying(command: &mut std::process::Command, text: &str) -> (KillOnDrop, Said) {
    let mut child = KillOnDrop(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut said = Said {
        lines: lines_of(child.0.stderr.take().unwrap()),
        so_far: String::new(),
    };
    said.until(&[text]);
    (child, said)
}

fn seconds(option: &str) -> Duration {
    Duration::from_secs(option.parse().unwrap())
}

/// The lines read from `pipe`, as they come.
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let _ = sender.send(line.unwrap());
        }
    });
    lines
}

/// Which of `replacers` said it ran (`ran PID`), by `deadline`; `which`
/// names it for a failure.
fn ran_within(
    ran: &mpsc::Receiver<String>,
    replacers: &[KillOnDrop],
    deadline: Instant,
    which: &str,
) -> usize {
    let left = deadline.saturating_duration_since(Instant::now());
    let line = ran
        .recv_timeout(left)
        .unwrap_or_else(|_| panic!("the {which} replacer did not run in time"));
    let pid: u32 = line
        .strip_prefix("ran ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    replacers
        .iter()
        .position(|replacer| replacer.0.id() == pid)
        .unwrap_or_else(|| panic!("pid {pid} is no replacer"))
}

/// How `replacer` ended, and what it said on stderr.
fn ended(replacer: &mut KillOnDrop) -> (ExitStatus, String) {
    let mut stderr = String::new();
    let mut said = replacer.0.stderr.take().unwrap();
    said.read_to_string(&mut stderr).unwrap();
    (replacer.0.wait().unwrap(), stderr)
}

/// `me-only --replace` on `lock` (with the TTL and --kill-after above),
/// started at once but waiting for `go` to end before it execs me-only.
/// Its COMMAND says `ran PID` on `say`, then waits for its stdin to end.
fn start_replacer(etcd: &Etcd, lock: &str, go: &File, say: &File) -> KillOnDrop {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "read go <&3; exec 3<&-; exec \"$@\"", "sh", ME_ONLY])
        .args(["--etcd", &etcd.endpoint, "--replace"])
        .args(["--ttl", TTL, "--kill-after", KILL_AFTER, lock])
        .args(["sh", "-c", "echo \"ran $$\"; read line || :"])
        .stdin(Stdio::piped())
        .stdout(say.try_clone().unwrap())
        .stderr(Stdio::piped());
    inherit_fd_as(&mut command, go.as_raw_fd(), 3);
    KillOnDrop(command.spawn().unwrap())
}
