//! `--shared` with `--flock`: a shared flock(2) lock (LOCK_SH), as
//! util-linux `flock -s` takes it: many shared holders at once, an
//! exclusive holder excluding them and excluded by them, both ways.

use crate::common;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Holding, flock_holder, lock_file, me_only, one_error_line, refused, spawn_piped, text,
};

/// A generous bound for "at once": the kernel wakes a blocked flock as the
/// holder closes the file.
const PROMPT: Duration = Duration::from_millis(500);

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// `me-only --shared --flock PATH [options...] sh -c 'echo ready; exec cat'`,
/// once it holds its shared lock.
fn shared_holder(path: &Path, options: &[&str]) -> Holding {
    let mut command = me_only();
    command
        .args(["--shared", "--flock"])
        .args(options)
        .arg(path);
    command.args(["sh", "-c", "echo ready; exec cat"]);
    Holding::spawn(command)
}

/// util-linux `flock -s PATH sh -c ...`, holding a shared lock until
/// released.
fn flock_s_holder(path: &Path) -> Holding {
    let mut command = Command::new("flock");
    command
        .arg("-s")
        .arg(path)
        .args(["sh", "-c", "echo ready; exec cat"]);
    Holding::spawn(command)
}

/// `flock -n [-s] PATH true`'s exit code: 0 taken, 1 held.
fn flock_n(path: &Path, shared: bool) -> Option<i32> {
    let mut command = Command::new("flock");
    command.arg("-n");
    if shared {
        command.arg("-s");
    }
    command.arg(path).arg("true").status().unwrap().code()
}

/// Whether /proc/locks lists a process as waiting for a flock (`->`).
fn waits_for_a_flock(pid: u32) -> bool {
    std::fs::read_to_string("/proc/locks").is_ok_and(|locks| {
        locks.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.get(1) == Some(&"->")
                && words.get(2) == Some(&"FLOCK")
                && words.get(5) == Some(&pid.to_string().as_str())
        })
    })
}

/// The mode (READ: shared, WRITE: exclusive) of the flock that process
/// `pid` holds, as /proc/locks shows it.
fn flock_mode_of(pid: u32) -> Option<String> {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        (words.get(1) == Some(&"FLOCK") && words.get(4) == Some(&pid.to_string().as_str()))
            .then(|| words[3].to_owned())
    })
}

/// `me-only ARGS...`'s exit code and stdout lines, sorted.
fn exit_and_lines(args: &[&str], path: &Path) -> (Option<i32>, Vec<String>) {
    let output = me_only().args(args).arg(path).output().unwrap();
    let mut lines: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    (output.status.code(), lines)
}

fn sorted_pids(holders: &[&Holding]) -> Vec<String> {
    let mut pids: Vec<String> = holders.iter().map(|h| h.pid.to_string()).collect();
    pids.sort();
    pids
}

#[test]
fn flock_s_and_me_only_shared_hold_together() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let theirs = flock_s_holder(&path);
    let ours = shared_holder(&path, &[]);
    let another = shared_holder(&path, &[]);
    assert_eq!(flock_mode_of(ours.pid).as_deref(), Some("READ"));
    assert_eq!(flock_n(&path, true), Some(0), "flock -s joins them");
    assert!(ours.release().success());
    assert!(another.release().success());
    assert!(theirs.release().success());
}

#[test]
fn an_exclusive_lock_is_refused_while_shared_holders_hold() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let ours = shared_holder(&path, &[]);
    assert_eq!(flock_n(&path, false), Some(1), "flock -n is refused");
    assert_eq!(
        refused(me_only().arg("--flock").arg(&path).args(["echo", "ran"]), 4),
        format!(
            "me-only: {}: already held by pid {} (uid {})\n",
            path.display(),
            ours.pid,
            uid()
        )
    );
    drop(ours);
    let theirs = flock_s_holder(&path);
    assert_eq!(
        refused(me_only().arg("--flock").arg(&path).args(["echo", "ran"]), 4),
        format!(
            "me-only: {}: already held by pid {} (uid {})\n",
            path.display(),
            theirs.pid,
            uid()
        )
    );
}

#[test]
fn shared_is_refused_while_an_exclusive_holder_holds() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let holders: [&dyn Fn() -> Holding; 2] = [&|| flock_holder(&path), &|| {
        Holding::start(["--flock", path.to_str().unwrap()])
    }];
    for holder in holders {
        let holder = holder();
        let shared = |options: &[&str]| {
            let mut command = me_only();
            command
                .args(options)
                .args(["--shared", "--flock"])
                .arg(&path);
            command.args(["echo", "ran"]);
            command
        };
        assert_eq!(
            refused(&mut shared(&[]), 4),
            format!(
                "me-only: {}: already held by pid {} (uid {})\n",
                path.display(),
                holder.pid,
                uid()
            )
        );
        shared(&["-q", "-E", "9"])
            .output()
            .map(|output| {
                assert_eq!(output.status.code(), Some(9), "{output:?}");
                assert!(output.stderr.is_empty(), "{output:?}");
            })
            .unwrap();
        assert!(holder.release().success());
    }
}

/// `me-only --shared --wait` (and with --timeout, a thread's wait) is
/// woken as the exclusive holder goes, then holds its shared lock beside
/// another shared holder.
#[test]
fn shared_wait_wakes_when_the_exclusive_holder_goes() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    for patience in [&["--wait"][..], &["--timeout", "10"]] {
        let (_dir, path) = lock_file();
        let holder = flock_holder(&path);
        let mut waiter = me_only();
        waiter
            .args(["--shared", "--flock"])
            .args(patience)
            .arg(&path);
        waiter.args(["sh", "-c", "echo ran; exec cat"]);
        let (waiter, mut stdout) = spawn_piped(&mut waiter);
        assert!(
            common::within(Duration::from_secs(5), || waits_for_a_flock(waiter.0.id())),
            "{patience:?}: the waiter never queued for the lock"
        );
        holder.kill();
        let released = Instant::now();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let woken = released.elapsed();
        println!("{patience:?}: woken {woken:?} after the holder went");
        assert_eq!(line, "ran\n", "{patience:?}");
        assert!(woken < PROMPT, "{patience:?}: woken late: {woken:?}");
        assert_eq!(flock_mode_of(waiter.0.id()).as_deref(), Some("READ"));
        assert_eq!(flock_n(&path, true), Some(0), "{patience:?}");
        drop(waiter);
    }
}

/// An exclusive waiter (`flock`, `me-only --flock --wait`) takes the lock
/// once the last shared holder goes.
#[test]
fn an_exclusive_waiter_waits_for_every_shared_holder() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let first = shared_holder(&path, &[]);
    let first_pid = first.pid;
    let second = flock_s_holder(&path);
    let mut waiter = me_only();
    waiter.args(["--flock", "--wait"]).arg(&path);
    waiter.args(["sh", "-c", "echo ran; exec cat"]);
    let (waiter, mut stdout) = spawn_piped(&mut waiter);
    assert!(common::within(
        Duration::from_secs(5),
        || waits_for_a_flock(waiter.0.id())
    ));
    first.kill();
    // Woken by the first one's going, it queues again behind the second.
    assert!(common::within(Duration::from_secs(5), || {
        flock_mode_of(first_pid).is_none() && waits_for_a_flock(waiter.0.id())
    }));
    assert_eq!(flock_mode_of(second.pid).as_deref(), Some("READ"));
    second.kill();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ran\n");
    assert_eq!(flock_mode_of(waiter.0.id()).as_deref(), Some("WRITE"));
}

/// --fork, --max-time and --detach hold a shared lock as exec does.
#[test]
fn every_mode_holds_a_shared_lock() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    for mode in [&["--fork"][..], &["--max-time", "60"]] {
        let (_dir, path) = lock_file();
        let holder = shared_holder(&path, mode);
        assert_eq!(flock_n(&path, true), Some(0), "{mode:?}");
        assert_eq!(flock_n(&path, false), Some(1), "{mode:?}");
        assert!(holder.release().success(), "{mode:?}");
        assert_eq!(flock_n(&path, false), Some(0), "{mode:?}");
    }
    let (_dir, path) = lock_file();
    let output = me_only()
        .args(["--shared", "--flock", "--detach"])
        .arg(&path)
        .args(["sleep", "60"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let pid: i32 = text(&output.stdout).trim().parse().unwrap();
    let detached = common::Detached(pid);
    assert_eq!(flock_n(&path, true), Some(0));
    assert_eq!(flock_n(&path, false), Some(1));
    drop(detached);
    assert_eq!(flock_n(&path, false), Some(0));
}

#[test]
fn test_tells_shared_holders_from_an_exclusive_one() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let free = exit_and_lines(&["--test", "--flock"], &path);
    assert_eq!(free, (Some(0), vec![]));
    assert_eq!(
        exit_and_lines(&["--test", "--shared", "--flock"], &path),
        (Some(0), vec![])
    );
    let ours = shared_holder(&path, &[]);
    let theirs = flock_s_holder(&path);
    // Every shared holder, one pid a line, as --slots' --test names each.
    assert_eq!(
        exit_and_lines(&["--test", "--flock"], &path),
        (Some(4), sorted_pids(&[&ours, &theirs]))
    );
    // A shared lock could be taken now.
    assert_eq!(
        exit_and_lines(&["--test", "--shared", "--flock"], &path),
        (Some(0), vec![])
    );
    drop((ours, theirs));
    let exclusive = flock_holder(&path);
    assert_eq!(
        exit_and_lines(&["--test", "--shared", "--flock"], &path),
        (Some(4), sorted_pids(&[&exclusive]))
    );
    assert_eq!(
        exit_and_lines(&["--test", "--flock", "-E", "7"], &path),
        (Some(7), sorted_pids(&[&exclusive]))
    );
}

#[test]
fn list_shows_each_shared_holder_and_its_mode() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let shared_path = dir_path.join("shared.lock");
    let exclusive_path = dir_path.join("exclusive.lock");
    let first = shared_holder(&shared_path, &[]);
    let second = shared_holder(&shared_path, &["--fork"]);
    let exclusive = Holding::start(["--flock", exclusive_path.to_str().unwrap()]);
    let prefix = format!("{}/", dir_path.display());
    let output = me_only()
        .args(["--list", "--flock", &prefix])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = text(&output.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().take(3).collect())
        .collect();
    let exclusive_row = vec![
        exclusive_path.to_str().unwrap(),
        "flock",
        &*exclusive.pid.to_string(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    let mut shared_rows: Vec<Vec<String>> = [&first, &second]
        .iter()
        .map(|holder| {
            vec![
                shared_path.to_str().unwrap().to_owned(),
                "flock-shared".to_owned(),
                holder.pid.to_string(),
            ]
        })
        .collect();
    shared_rows.sort();
    let mut expected = vec![exclusive_row];
    expected.extend(shared_rows);
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| (*cell).to_owned()).collect())
        .collect();
    assert_eq!(rows, expected, "{table}");

    let output = me_only()
        .args(["--list", &prefix, "--flock", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let json = text(&output.stdout);
    assert_eq!(json.matches("\"mode\":\"shared\"").count(), 2, "{json}");
    assert_eq!(json.matches("\"mode\":\"exclusive\"").count(), 1, "{json}");
    assert_eq!(json.matches("\"backend\":\"flock\"").count(), 3, "{json}");
}

/// COMMAND learns the mode: ME_ONLY_SHARED=1, and no outer me-only's
/// passes to an inner exclusive one's COMMAND.
#[test]
fn command_learns_its_lock_is_shared() {
    let (_dir, path) = lock_file();
    let (_inner_dir, inner) = lock_file();
    let said = |args: &[&std::ffi::OsStr]| {
        let output = me_only()
            .args(args)
            .args(["sh", "-c", "echo \"${ME_ONLY_SHARED-unset}\""])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        text(&output.stdout)
    };
    let os = |text: &'static str| std::ffi::OsStr::new(text);
    assert_eq!(
        said(&[os("--shared"), os("--flock"), path.as_os_str()]),
        "1\n"
    );
    assert_eq!(said(&[os("--flock"), path.as_os_str()]), "unset\n");
    assert_eq!(
        said(&[
            os("--shared"),
            os("--flock"),
            path.as_os_str(),
            os(common::ME_ONLY),
            os("--flock"),
            inner.as_os_str(),
        ]),
        "unset\n"
    );
    assert_eq!(
        said(&[
            os("--shared"),
            os("--flock"),
            os("--fork"),
            path.as_os_str()
        ]),
        "1\n"
    );
}

/// A shared lock is no lock to adopt: `me_only::inherited()` in a
/// COMMAND of --shared finds none (it holds the lock all the same, through
/// ME_ONLY_FD, until it exits).
#[test]
fn a_shared_lock_is_not_adopted_by_inherited() {
    let (_dir, path) = lock_file();
    let output = me_only()
        .args(["--shared", "--flock"])
        .arg(&path)
        .arg(common::example("worker"))
        .arg("adopt")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(text(&output.stdout), "none\n");
}

#[test]
fn shared_is_refused_where_it_has_no_meaning() {
    let (_dir, path) = lock_file();
    let path = path.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--shared", "lock-name", "true"],
            "--shared needs --flock: an abstract socket name has no shared form (--slots N lets N hold it)",
        ),
        (
            &["--shared", "--tcp", "7000", "true"],
            "--shared needs --flock: a TCP port has no shared form (--slots N lets N hold it)",
        ),
        (
            &["--shared", "--etcd", "http://127.0.0.1:1", "name", "true"],
            "--shared needs --flock: an etcd lock key has no shared form (--slots N lets N hold it)",
        ),
        (
            &["--shared", "--flock", "--slots", "2", path, "true"],
            "--shared cannot be used with --slots: a shared lock has no limit to count, and --slots is an exclusive lock's 'at most N'",
        ),
        (
            &["--shared", "--flock", "--replace", path, "true"],
            "--shared cannot be used with --replace: a shared holder has no one instance to replace",
        ),
        (
            &["--shared", "--flock", "--replace-older", "5", path, "true"],
            "--shared cannot be used with --replace-older: a shared holder has no one instance to replace",
        ),
        (
            &["--shared", "--auto", "true"],
            "--shared needs --flock: an abstract socket name has no shared form (--slots N lets N hold it)",
        ),
        (
            &["--shared", "--list", "--flock"],
            "--shared cannot be used with --list: --list shows every holder's mode",
        ),
    ];
    for (args, why) in cases {
        let output = me_only().args(*args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
        assert_eq!(
            one_error_line(&output.stderr),
            format!("me-only: {why}\n"),
            "{args:?}"
        );
    }
}
