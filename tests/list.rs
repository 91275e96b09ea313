//! --list: the me-only locks held on this host.

use crate::common;

use std::process::{Command, Stdio};

use common::{Holding, free_port, me_only, refused, text, unique_lock};

/// A holder's script whose command line stays the same once it is ready
/// (one that execs cat would change it, at a moment no test can see).
const HOLD: &str = "echo ready; read line";

/// What --list shows as its command.
const HOLD_COMMAND: &str = "sh -c echo ready; read line";

fn holding<I, S>(options: I) -> Holding
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Holding::with_script(options, HOLD)
}

/// `me-only --list ARGS...`'s table rows (no header), each split into its
/// first six columns and the command.
fn rows(args: &[&str]) -> Vec<(Vec<String>, String)> {
    rows_of(&mut me_only(), args)
}

/// As `rows`, run as `command` (me-only, set up by the caller).
fn rows_of(command: &mut Command, args: &[&str]) -> Vec<(Vec<String>, String)> {
    let output = command.arg("--list").args(args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = text(&output.stdout);
    let mut lines = table.lines();
    assert!(
        lines.next().unwrap().starts_with("LOCK "),
        "a header first: {table}"
    );
    lines
        .map(|line| {
            let mut words = line.split_whitespace();
            let columns: Vec<String> = words.by_ref().take(6).map(str::to_owned).collect();
            (columns, words.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

fn uid() -> String {
    nix::unistd::getuid().to_string()
}

#[test]
fn every_kernel_lock_is_listed_with_its_holder() {
    let abstract_lock = unique_lock("list");
    let holder = holding([&abstract_lock]);
    let listed = rows(&[&abstract_lock]);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let (columns, command) = &listed[0];
    assert_eq!(
        columns[..5],
        [
            abstract_lock.clone(),
            "abstract".into(),
            holder.pid.to_string(),
            uid(),
            host
        ]
    );
    assert_eq!(command, HOLD_COMMAND);

    let port = free_port();
    let tcp = holding(["--tcp".to_owned(), format!("127.0.0.1:{port}")]);
    let listed = rows(&["--tcp", &format!("127.0.0.1:{port}")]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0].0[..3],
        [
            format!("127.0.0.1:{port}"),
            "tcp".into(),
            tcp.pid.to_string()
        ]
    );

    // A lock file named relative to the holder's working directory is
    // listed by its full path.
    let dir = tempfile::tempdir().unwrap();
    let mut command = me_only();
    command
        .current_dir(dir.path())
        .args(["--flock", "relative.lock", "sh", "-c", HOLD]);
    let flock = Holding::spawn(command);
    let path = dir.path().canonicalize().unwrap().join("relative.lock");
    let path = path.to_str().unwrap();
    let listed = rows(&["--flock", path]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0].0[..3],
        [path.to_owned(), "flock".into(), flock.pid.to_string()]
    );
    // Without a backend option, all of them.
    assert_eq!(rows(&[path]).len(), 1);
    assert_eq!(rows(&[&abstract_lock]).len(), 1);
}

/// A lock file named relative to where me-only started is listed by its
/// full path even once COMMAND has changed directory (exec: the lock's
/// descriptor is COMMAND's; --fork: me-only's, in the directory it started
/// in).
#[test]
fn a_relative_lock_file_is_listed_after_the_command_changed_directory() {
    for mode in [&[][..], &["--fork"]] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = me_only();
        command
            .current_dir(dir.path())
            .args(mode)
            .args(["--flock", "relative.lock", "sh", "-c"])
            .arg(format!("cd /; {HOLD}"));
        let holder = Holding::spawn(command);
        let path = dir.path().canonicalize().unwrap().join("relative.lock");
        let path = path.to_str().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let mut list = me_only();
        list.current_dir(elsewhere.path());
        let listed = rows_of(&mut list, &["--flock", path]);
        assert_eq!(listed.len(), 1, "{mode:?}: {listed:?}");
        assert_eq!(
            listed[0].0[..3],
            [path.to_owned(), "flock".into(), holder.pid.to_string()],
            "{mode:?}"
        );
    }
}

#[test]
fn fork_slots_and_inheritors_are_listed_by_who_holds_the_lock() {
    let prefix = unique_lock("list-modes");
    let supervisor = holding(["--fork", &format!("{prefix}/fork")]);
    let slot = holding(["--slots", "2", &format!("{prefix}/slots")]);
    let listed = rows(&[&prefix]);
    let locks: Vec<(&str, &str)> = listed
        .iter()
        .map(|(columns, _)| (columns[0].as_str(), columns[2].as_str()))
        .collect();
    let (fork_pid, slot_pid) = (supervisor.pid.to_string(), slot.pid.to_string());
    assert_eq!(
        locks,
        [
            (format!("{prefix}/fork").as_str(), fork_pid.as_str()),
            (format!("{prefix}/slots.1").as_str(), slot_pid.as_str()),
        ]
    );
    assert!(listed[0].1.contains("--fork"), "me-only itself: {listed:?}");
    drop(supervisor);
    drop(slot);
    assert_eq!(rows(&[&prefix]), [], "let go, no longer listed");
}

#[test]
fn a_socket_that_no_me_only_process_names_is_not_listed() {
    let lock = unique_lock("list-foreign");
    // This test process listens on the name, without ME_ONLY_LOCK.
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    let mut path = vec![0u8];
    path.extend_from_slice(lock.as_bytes());
    let address =
        socket2::SockAddr::unix(std::ffi::OsStr::new(std::str::from_utf8(&path).unwrap())).unwrap();
    socket.bind(&address).unwrap();
    socket.listen(1).unwrap();
    let output = me_only().args(["--test", &lock]).output().unwrap();
    assert_eq!(output.status.code(), Some(4), "held, as --test sees it");
    assert_eq!(rows(&[&lock]), []);
}

#[test]
fn json_is_an_array_of_objects_for_scripts() {
    let lock = unique_lock("list-json");
    let holder = holding([&lock]);
    let Some(parsed) = listed_as_json_by_python(&lock) else {
        return;
    };
    assert_eq!(
        parsed,
        format!(
            "{lock} abstract {} {} int ['sh', '-c', 'echo ready; read line']\n",
            holder.pid,
            uid()
        )
    );
}

#[test]
fn json_keeps_the_empty_arguments_of_a_command() {
    let lock = unique_lock("list-json-empty");
    let mut command = me_only();
    command.args([lock.as_str(), "sh", "-c", HOLD, "", "middle", ""]);
    let holder = Holding::spawn(command);
    let Some(parsed) = listed_as_json_by_python(&lock) else {
        return;
    };
    assert_eq!(
        parsed,
        format!(
            "{lock} abstract {} {} int ['sh', '-c', 'echo ready; read line', '', 'middle', '']\n",
            holder.pid,
            uid()
        )
    );
}

/// `--list PREFIX --json`, read back by Python's JSON parser: a line per
/// lock. None (the test skipped) without python3.
fn listed_as_json_by_python(prefix: &str) -> Option<String> {
    let output = me_only()
        .args(["--list", prefix, "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    if !common::programs_or_skip(&["python3"]) {
        return None;
    }
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             locks = json.load(sys.stdin)\n\
             for lock in locks:\n\
             \x20   print(lock['lock'], lock['backend'], lock['pid'], lock['uid'],\n\
             \x20         type(lock['age_seconds']).__name__, lock['command'])",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    python
        .stdin
        .take()
        .unwrap()
        .write_all(&output.stdout)
        .unwrap();
    let parsed = python.wait_with_output().unwrap();
    assert!(parsed.status.success(), "{parsed:?}");
    Some(text(&parsed.stdout))
}

#[test]
fn list_takes_no_lock_nor_command_and_no_mode() {
    for (words, message) in [
        (
            &["--list", "/tmp/a", "true"][..],
            "--list takes a PREFIX at most",
        ),
        (&["--list", "--wait"], "cannot be used with"),
        (&["--list", "--fork"], "cannot be used with"),
        (&["--json", "/tmp/a", "true"], "--list"),
    ] {
        let line = refused(me_only().args(words), 2);
        assert!(line.contains(message), "{words:?}: {line}");
    }
}

/// With --etcd, the locks in etcd: holder host and pid from its key, uid
/// and command where it runs here.
#[cfg(feature = "etcd")]
#[test]
fn with_etcd_the_locks_in_etcd_are_listed() {
    use common::etcd::{Etcd, hostname, lock_name, on};

    let Some(etcd) = Etcd::start() else { return };
    let prefix = lock_name("list");
    let (outer, inner) = (format!("{prefix}/a"), format!("{prefix}/a/b"));
    let first = Holding::spawn(on(&etcd, &[&outer, "sh", "-c", HOLD]));
    let nested = Holding::spawn(on(&etcd, &[&inner, "sh", "-c", HOLD]));
    // A waiter's key is in line, not a holder.
    let _waiter = common::KillOnDrop(common::spawn_waiting(&mut on(
        &etcd,
        &["-v", "--wait", &outer, "true"],
    )));
    let output = on(&etcd, &["--list", &prefix]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = text(&output.stdout);
    let host = hostname();
    let row = |lock: &str, pid: u32| format!("{lock} etcd {pid} {} {host}", uid());
    let rows: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            format!("{} {}", words[..5].join(" "), words[6..].join(" "))
        })
        .collect();
    assert_eq!(
        rows,
        [
            format!("{} {HOLD_COMMAND}", row(&outer, first.pid)),
            format!("{} {HOLD_COMMAND}", row(&inner, nested.pid)),
        ],
        "{table}"
    );
    let output = on(&etcd, &["--list", &format!("{outer}/")])
        .output()
        .unwrap();
    assert_eq!(
        text(&output.stdout).lines().count(),
        2,
        "the header and a/b"
    );
}

/// Without a prefix, --list reads the whole keyspace: on a cluster that
/// holds more than an answer may carry (1 MiB), more keys than a page and
/// a value larger than a page may carry, it still lists the locks and
/// exits 0.
#[cfg(feature = "etcd")]
#[test]
fn with_etcd_a_cluster_holding_megabytes_of_other_keys_is_listed() {
    use common::etcd::{Etcd, lock_name, on};

    let Some(etcd) = Etcd::start_with_etcdctl() else {
        return;
    };
    let value = "v".repeat(1024);
    // 1,100 keys of 1 KiB, in transactions of at most etcd's 128 operations.
    for batch in 0..10 {
        let puts: String = (0..110)
            .map(|key| format!("put filler/key-{batch}-{key} \"{value}\"\n"))
            .collect();
        put_in_a_transaction(&etcd, &puts);
    }
    // etcdctl reads a value too long for an argument from its stdin.
    put_from_stdin(&etcd, "filler/large", &"w".repeat(900 * 1024));
    let lock = lock_name("list-large");
    let holder = Holding::spawn(on(&etcd, &[&lock, "sh", "-c", HOLD]));

    let output = on(&etcd, &["--list"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = text(&output.stdout);
    let locks: Vec<(&str, &str)> = table
        .lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words[0], words[2])
        })
        .collect();
    assert_eq!(locks, [(lock.as_str(), holder.pid.to_string().as_str())]);
}

/// Runs `etcdctl txn` with no condition and `puts` (one operation a line)
/// as its success branch.
#[cfg(feature = "etcd")]
fn put_in_a_transaction(etcd: &common::etcd::Etcd, puts: &str) {
    ctl_with_stdin(etcd, &["txn"], &format!("\n{puts}\n\n"));
}

#[cfg(feature = "etcd")]
fn put_from_stdin(etcd: &common::etcd::Etcd, key: &str, value: &str) {
    ctl_with_stdin(etcd, &["put", key], value);
}

/// Runs `etcdctl ARGS...` with `input` on its stdin, asserting it succeeds.
#[cfg(feature = "etcd")]
fn ctl_with_stdin(etcd: &common::etcd::Etcd, args: &[&str], input: &str) {
    use std::io::Write;

    let mut ctl = etcd
        .ctl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = ctl.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let done = ctl.wait_with_output().unwrap();
    assert!(done.status.success(), "{args:?}: {done:?}");
}
