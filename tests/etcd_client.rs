//! The etcd client under `--etcd`, against a real etcd: a launch right
//! after another (its keeper still revoking), a login whose password must
//! never show, and --list over a keyspace larger than one answer.
#![cfg(feature = "etcd")]

use crate::common;

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Stdio;

use common::etcd::*;
use common::{Holding, KillOnDrop, me_only, refused, text};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `me-only --etcd E LOCK true`, 20 times in a row, as a shell script
/// runs them: each launch takes the lock, although the keeper of the one
/// before may not have revoked its lease yet (its COMMAND, named by the
/// key, is gone). Not through pipes: a pipe's reader would wait for the
/// keeper, which keeps stderr open, to exit.
fn launches_in_a_row_each_take_the_lock(etcd: &Etcd, lock: &str) {
    for run in 1..=20 {
        let mut stderr = tempfile::tempfile().unwrap();
        let status = on(etcd, &[lock, "true"])
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().unwrap())
            .status()
            .unwrap();
        if !status.success() {
            let mut said = String::new();
            stderr.seek(SeekFrom::Start(0)).unwrap();
            stderr.read_to_string(&mut said).unwrap();
            panic!("launch {run}: {status}: {said}");
        }
    }
}

#[test]
fn launches_in_a_row_over_http_each_take_the_lock() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    launches_in_a_row_each_take_the_lock(&etcd, &lock_name("in-a-row"));
}

#[test]
fn launches_in_a_row_over_https_each_take_the_lock() {
    let Some(pki) = Pki::make() else { return };
    let Some(etcd) = Etcd::start_serving(Serving {
        tls: Some((&pki, true)),
        ..Serving::default()
    }) else {
        return;
    };
    launches_in_a_row_each_take_the_lock(&etcd, &lock_name("in-a-row-tls"));
}

/// The holder's COMMAND has exited but its keeper has not yet revoked
/// (here held up by SIGSTOP until the next launch says it waits): the
/// launch waits for the key to go and takes the lock, where it said the
/// lock was held by a pid that was gone.
#[test]
fn a_launch_waits_for_the_key_of_a_holder_that_exited() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let lock = lock_name("just-exited");
    let holder = Holding::spawn(on(&etcd, &[&lock, "sh", "-c", "echo ready; exec cat"]));
    let keeper = Stopped::new(keeper_of(&lock).expect("a keeper runs"));
    assert!(holder.release().success());
    let mut next = on(&etcd, &["-v", &lock, "echo", "ran"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut diagnostics = BufReader::new(next.stderr.take().unwrap());
    common::read_until_a_line_with(&mut diagnostics, "is gone: waiting for its key to go");
    drop(keeper);
    std::thread::spawn(move || std::io::copy(&mut diagnostics, &mut std::io::sink()));
    let output = next.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "ran\n");
}

/// A process stopped by SIGSTOP, continued when dropped (a failing test
/// leaves nothing stopped).
struct Stopped(Pid);

impl Stopped {
    fn new(pid: Pid) -> Stopped {
        kill(pid, Signal::SIGSTOP).unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// A key that names a pid gone from this host, but stays (no keeper
/// revokes it: here etcdctl put it): the launch waits a moment for it to
/// go, then says the lock is held, naming that pid.
#[test]
fn a_key_naming_a_gone_pid_that_stays_is_still_busy() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let lock = lock_name("gone-pid");
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let lease = etcd.grant_lease(60);
    let put = etcd
        .ctl()
        .args(["put", &format!("--lease={lease}")])
        .arg(format!("{lock}/{lease}"))
        .arg(format!("{} {pid} 0", hostname()))
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    assert_eq!(
        refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4),
        format!(
            "me-only: {lock}: already held by pid {pid} on {}\n",
            hostname()
        )
    );
}

/// A password is given twice, in `--user NAME:PASSWORD` and in
/// ETCDCTL_PASSWORD: the name is the part before the colon, the command
/// line's password wins, and neither password shows in the error line nor
/// in ps, not even as a row of masks as long as it is.
#[test]
fn a_password_in_user_is_split_off_and_never_shown() {
    let Some(mut etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let prefix = format!("{}/", lock_name("jobs"));
    etcd.enable_auth("jobs", "s3cretpw", &prefix);
    let lock = format!("{prefix}nightly");
    let line = refused(
        on(&etcd, &["--user", "jobs:wr0ngpw1", &lock, "echo", "ran"])
            .env("ETCDCTL_PASSWORD", "s3cretpw"),
        3,
    );
    assert_eq!(
        line,
        format!(
            "me-only: {lock}: cannot grant a lease: etcd refused to log in user jobs: \
             etcdserver: authentication failed, invalid user ID or password\n"
        )
    );
    for login in [
        &["--user", "jobs:s3cretpw"][..],
        &["--user=jobs:s3cretpw"],
        &["--user", "jobs", "--password", "s3cretpw"],
        &["--user", "jobs", "--password=s3cretpw"],
    ] {
        let mut command = on(&etcd, login);
        command.env("ETCDCTL_PASSWORD", "elsewhere").args([
            "--fork",
            &lock,
            "sh",
            "-c",
            "echo ready; exec cat",
        ]);
        let holder = Holding::spawn(command);
        let keeper = keeper_of(&lock).expect("a keeper runs");
        for pid in [holder.pid as i32, keeper.as_raw()] {
            let cmdline = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
            assert!(
                !cmdline.contains("s3cretpw") && !cmdline.contains("********"),
                "{login:?}: {cmdline:?}"
            );
            // What is not a password still shows.
            assert!(cmdline.contains(&lock), "{login:?}: {cmdline:?}");
        }
        assert!(holder.release().success());
        // Its keeper gives the lock back just after COMMAND exits.
        common::wait_until_gone(keeper.as_raw());
    }
}

/// Two launches whose command lines differ only in the password's length
/// show /proc/PID/cmdline of the same size (the kernel reports the whole
/// argument area, whose size adds up the arguments as given), with the
/// other words still readable by ps. No etcd is needed: the password is
/// hidden as the options are read, before a launch connects to its
/// endpoint, here one that never answers.
#[test]
fn the_length_of_a_password_does_not_show_in_proc_cmdline() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let lock = lock_name("password-length");
    // `{}`: where the password goes; `{2}`: a second one (the first
    // with `-2`), where both are given.
    for login in [
        &["--user", "jobs", "--password", "{}"][..],
        &["--user", "jobs", "--password={}"],
        &["--user", "jobs:{}"],
        &["--user", "jobs:{}", "--password={2}"],
    ] {
        let with = |password: &str, second: &str| -> Vec<String> {
            let words = ["--etcd", &endpoint]
                .into_iter()
                .chain(login.iter().copied());
            let words = words.chain(["--wait", &lock, "echo", "ran"]);
            let words = words.map(|word| word.replace("{2}", second).replace("{}", password));
            words.collect()
        };
        let cmdlines = ["Sh0rt", "a-L0nger-s3cret-pa55word"].map(|password| {
            let launch = KillOnDrop(
                me_only()
                    .args(with(password, &format!("{password}-2")))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let _connection = connected(&silent);
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", launch.0.id())).unwrap();
            assert!(!text(&cmdline).contains(password), "{}", text(&cmdline));
            cmdline
        });
        assert_eq!(
            cmdlines[0].len(),
            cmdlines[1].len(),
            "{login:?}: {:?}",
            cmdlines.each_ref().map(|cmdline| text(cmdline))
        );
        // As ps shows it: NULs read as spaces, the password one `*`.
        let masked = format!("{} {}", common::ME_ONLY, with("*", "*").join(" "));
        for cmdline in &cmdlines {
            assert_eq!(text(cmdline).replace('\0', " ").trim_end(), masked);
        }
    }
}

/// The next connection to `listener`, once a launch makes it (within 5 s).
fn connected(listener: &TcpListener) -> TcpStream {
    let mut ready = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let waited = poll(&mut ready, PollTimeout::from(5000u16)).unwrap();
    assert_eq!(waited, 1, "no launch connected within 5 s");
    listener.accept().unwrap().0
}

/// --list with no prefix reads the whole keyspace, here over 1 MiB of key
/// names alone (600 names of 2 KiB: 500 to a page would not fit one
/// answer), and names every lock held.
#[test]
fn list_names_every_lock_among_megabytes_of_long_key_names() {
    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let long = "k".repeat(2000);
    let fillers: Vec<String> = (0..600).map(|n| format!("filler/{long}-{n}")).collect();
    etcd.put_many(&fillers, "x");
    let locks: Vec<String> = (1..=3).map(|n| lock_name(&format!("listed-{n}"))).collect();
    let holders: Vec<Holding> = locks
        .iter()
        .map(|lock| {
            let mut command = on(&etcd, &[lock, "sh", "-c", "echo ready; exec cat"]);
            command.stderr(Stdio::null());
            Holding::spawn(command)
        })
        .collect();

    let output = on(&etcd, &["--list"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = text(&output.stdout);
    let mut listed: Vec<(String, String)> = table
        .lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words[0].to_owned(), words[2].to_owned())
        })
        .collect();
    listed.sort();
    let expected: Vec<(String, String)> = locks
        .iter()
        .zip(&holders)
        .map(|(lock, holder)| (lock.clone(), holder.pid.to_string()))
        .collect();
    assert_eq!(listed, expected, "{table}");
}
