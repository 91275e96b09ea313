//! `--replace` with `--etcd`: the holder, on whatever host it runs, is
//! asked through its key to stop; its keeper stops it and lets go, while
//! the replacer waits in line.
#![cfg(feature = "etcd")]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::etcd::{Etcd, fenced_holder_at, lock_name};
use common::{KillOnDrop, ME_ONLY, inherit_fd_as, pipe};

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

fn seconds(option: &str) -> Duration {
    Duration::from_secs(option.parse().unwrap())
}

/// The lines read from `pipe`, as they come.
fn lines_of(pipe: File) -> mpsc::Receiver<String> {
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
