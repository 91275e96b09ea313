//! `--flock`: the lock is a flock(2) lock on a file, shared with util-linux
//! flock(1) in both directions, with every mode.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::prelude::*;
use common::{
    Holding, flock_holder, lock_file, me_only, me_only_as_user, me_only_flock, one_error_line,
    run_noting_pid, text,
};

/// A generous bound for "at once": the kernel wakes a blocked flock as the
/// holder closes the file.
const PROMPT: Duration = Duration::from_millis(500);

/// util-linux flock(1), failing at once when the lock is held.
fn flock_n() -> Command {
    let mut command = Command::new("flock");
    command.arg("-n");
    command
}

/// Runs `locker LOCK echo ran` to its end.
fn echo_ran_under(mut locker: Command, path: &Path) -> assert_cmd::assert::Assert {
    locker.arg(path).args(["echo", "ran"]).assert()
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[test]
fn a_flock1_holder_keeps_me_only_out() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let holder = flock_holder(&path);
    assert_eq!(
        common::refused(me_only().arg("--flock").arg(&path).args(["echo", "ran"]), 4),
        format!(
            "me-only: {}: already held by pid {} (uid {})\n",
            path.display(),
            holder.pid,
            uid()
        )
    );
    me_only()
        .args(["-q", "-E", "9", "--flock"])
        .arg(&path)
        .arg("true")
        .assert()
        .code(9)
        .stderr("");
    assert!(holder.release().success());
    echo_ran_under(me_only_flock(), &path)
        .success()
        .stdout("ran\n");
}

#[test]
fn a_me_only_holder_keeps_flock1_out() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let holder = Holding::start([Path::new("--flock"), &path]);
    echo_ran_under(flock_n(), &path).code(1).stdout("");
    assert!(holder.release().success());
    echo_ran_under(flock_n(), &path).success().stdout("ran\n");
}

/// COMMAND is me-only (same pid) and holds the lock on the descriptor that
/// ME_ONLY_FD names, open on the lock file.
#[test]
fn the_lock_follows_the_command_across_exec() {
    // Its count of /proc/locks rows must not see tests/flock_churn.rs's churn.
    let _quiet = common::one_heavy_at_a_time();
    let (_dir, path) = lock_file();
    let script = "echo $$; echo $ME_ONLY_LOCK; readlink /proc/$$/fd/$ME_ONLY_FD; \
                  grep -c \"FLOCK .* WRITE $$ \" /proc/locks";
    let (pid, stdout) = run_noting_pid(
        me_only()
            .arg("--flock")
            .arg(&path)
            .args(["sh", "-c", script]),
    );
    let path = path.display().to_string();
    assert_eq!(stdout, format!("{pid}\n{path}\n{path}\n1\n"));
}

#[test]
fn the_lock_file_is_created_0644_less_umask_and_kept() {
    let (_dir, path) = lock_file();
    Command::new("sh")
        .args([
            "-c",
            "umask 027; exec \"$@\"",
            "sh",
            common::ME_ONLY,
            "--flock",
        ])
        .arg(&path)
        .arg("true")
        .assert()
        .success();
    let metadata = std::fs::metadata(&path).expect("the lock file was created");
    assert!(metadata.is_file());
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o640);
    me_only_flock().arg(&path).arg("true").assert().success();
    assert!(path.exists(), "me-only deleted the lock file");
}

/// In /tmp anyone may plant a symbolic link where a lock file is expected:
/// me-only neither follows it nor touches what it points to.
#[test]
fn a_symbolic_link_is_refused_and_its_target_untouched() {
    // It reads /proc/locks: not beside tests/flock_churn.rs's churn.
    let _quiet = common::one_heavy_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&target).unwrap();
    let dangling_target = dir.path().join("not-there");
    for (link, points_to) in [("link", &target), ("dangling", &dangling_target)] {
        let link = dir.path().join(link);
        std::os::unix::fs::symlink(points_to, &link).unwrap();
        for mode in [&["--flock"][..], &["--flock", "--test"]] {
            assert_eq!(
                common::refused(me_only().args(mode).arg(&link).args(["echo", "ran"]), 3),
                format!(
                    "me-only: {}: is a symbolic link, not a regular file; refusing to lock it\n",
                    link.display()
                )
            );
        }
    }
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    assert_eq!(after.permissions().mode(), before.permissions().mode());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert!(
        !dangling_target.exists(),
        "a dangling link's target was created"
    );
    assert!(
        !text(&std::fs::read("/proc/locks").unwrap()).contains(&format!(":{} ", after.ino())),
        "the link's target was locked"
    );
}

/// What cannot be a lock file is exit 3, naming the path and the reason,
/// and never "already running"; a FIFO does not hang the open.
#[test]
fn what_cannot_be_opened_or_locked_is_a_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let missing_directory = dir.path().join("no-such-directory/lock");
    let cases = [
        (
            dir.path().to_path_buf(),
            "is a directory, not a regular file; refusing to lock it",
        ),
        (fifo, "is a FIFO, not a regular file; refusing to lock it"),
        (
            "/dev/null".into(),
            "is a device, not a regular file; refusing to lock it",
        ),
        (missing_directory, "cannot open: No such file or directory"),
    ];
    for (lock, reason) in cases {
        assert_eq!(
            common::refused(me_only_flock().arg(&lock).args(["echo", "ran"]), 3),
            format!("me-only: {}: {reason}\n", lock.display())
        );
    }
}

#[test]
fn a_lock_file_the_user_may_not_read_is_a_lock_error() {
    if !common::root_or_skip("run me-only as another user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("root-only");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let nobody = 65534;
    let (_copy, mut command) = me_only_as_user(nobody);
    assert_eq!(
        common::refused(command.arg("--flock").arg(&path).args(["echo", "ran"]), 3),
        format!(
            "me-only: {}: cannot open: Permission denied\n",
            path.display()
        )
    );
}

#[test]
fn test_mode_prints_the_flock1_holders_pid() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    me_only()
        .args(["--flock", "--test"])
        .arg(&path)
        .assert()
        .code(0)
        .stdout("");
    assert!(!path.exists(), "--test created the lock file");
    let holder = flock_holder(&path);
    for _ in 0..20 {
        me_only()
            .args(["--flock", "--test"])
            .arg(&path)
            .assert()
            .code(4)
            .stdout(format!("{}\n", holder.pid))
            .stderr("");
    }
    assert!(holder.release().success());
    me_only()
        .args(["--flock", "-t"])
        .arg(&path)
        .assert()
        .code(0)
        .stdout("");
    me_only_flock().arg(&path).arg("true").assert().success();
}

#[test]
fn a_waiter_starts_promptly_when_the_flock1_holder_exits() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let path = path.display().to_string();
    let latency = common::handover(flock_holder(Path::new(&path)), &["--flock", &path]);
    println!("flock handover latency: {latency:?}");
    assert!(latency < PROMPT, "handover took {latency:?}");
}

#[test]
fn timeout_gives_up_in_time_against_a_flock1_holder() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let holder = flock_holder(&path);
    let line = common::gives_up_after(
        me_only_flock()
            .args(["--timeout", "0.3"])
            .arg(&path)
            .args(["echo", "ran"]),
        Duration::from_millis(300),
    );
    assert_eq!(
        line,
        format!(
            "me-only: {}: still held by pid {} (uid {}) after 0.3 s\n",
            path.display(),
            holder.pid,
            uid()
        )
    );
    // A timeout long enough runs the command once the holder lets go.
    let waiter = me_only()
        .args(["--timeout", "60", "--flock"])
        .arg(&path)
        .args(["echo", "ran"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(holder.release().success());
    let output = waiter.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(text(&output.stdout), "ran\n");
}

/// With --fork me-only keeps the lock file open and locked; the child
/// shares the descriptor (ME_ONLY_FD), and once it has closed it the lock
/// is still held, by me-only.
#[test]
fn fork_keeps_the_flock_in_me_only() {
    if !common::programs_or_skip(&["flock"]) {
        return;
    }
    let (_dir, path) = lock_file();
    let script = format!(
        "[ \"$(readlink /proc/$$/fd/$ME_ONLY_FD)\" = '{path}' ] || echo not-shared; \
         eval \"exec $ME_ONLY_FD>&-\"; \
         if ls -l /proc/$$/fd | grep -q '{path}'; then echo still-open; fi; echo ready; exec cat",
        path = path.display()
    );
    let holder = Holding::with_script([Path::new("--fork"), Path::new("--flock"), &path], &script);
    Command::new("flock")
        .arg("-n")
        .arg(&path)
        .arg("true")
        .assert()
        .code(1);
    me_only()
        .args(["--flock", "--test"])
        .arg(&path)
        .assert()
        .code(4)
        .stdout(format!("{}\n", holder.pid));
    assert!(holder.release().success());
    Command::new("flock")
        .arg("-n")
        .arg(&path)
        .arg("true")
        .assert()
        .success();
}

/// Abstract names live in a network namespace, files do not: from a new
/// network namespace (as a container or a unit with PrivateNetwork=yes
/// starts in) the abstract lock is not seen, the --flock lock is.
#[test]
fn a_new_network_namespace_sees_the_flock_lock_but_not_the_abstract_one() {
    if !common::root_or_skip("unshare -n") || !common::programs_or_skip(&["unshare"]) {
        return;
    }
    let unshare = Command::new("unshare").args(["-n", "true"]).output();
    if !unshare.as_ref().is_ok_and(|output| output.status.success()) {
        common::skip(&format!("unshare -n does not work here: {unshare:?}"));
        return;
    }
    let in_new_namespace = |lock_args: &[&str]| {
        let mut command = Command::new("unshare");
        command
            .args(["-n", common::ME_ONLY])
            .args(lock_args)
            .args(["echo", "ran"]);
        command
    };
    let abstract_lock = common::unique_lock("namespace");
    let abstract_holder = Holding::start([&abstract_lock]);
    me_only().args([&abstract_lock, "true"]).assert().code(4);
    in_new_namespace(&[&abstract_lock])
        .assert()
        .success()
        .stdout("ran\n");
    drop(abstract_holder);

    let (_dir, path) = lock_file();
    let path = path.display().to_string();
    let flock_holder = Holding::start(["--flock", &path]);
    in_new_namespace(&["--flock", &path])
        .assert()
        .code(4)
        .stdout("");
    assert!(flock_holder.release().success());
    in_new_namespace(&["--flock", &path])
        .assert()
        .success()
        .stdout("ran\n");
}

/// A lock file that would have to be created on a read-only filesystem is
/// exit 3 with the OS's reason. The filesystem is a read-only tmpfs mounted
/// in a mount namespace of the test's own (`unshare -m`, root only), so
/// nothing outside sees it.
#[test]
fn a_lock_file_on_a_read_only_filesystem_is_a_lock_error() {
    if !common::root_or_skip("unshare -m and mount") || !common::programs_or_skip(&["unshare"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().display().to_string();
    let in_read_only_mount = |me_only_args: &str| {
        let script = format!(
            "mount -t tmpfs -o ro none '{mount_point}' || exit 97; exec \"$@\" {me_only_args}"
        );
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .arg(common::ME_ONLY)
            .output()
            .unwrap()
    };
    let probe = in_read_only_mount("--version");
    if !probe.status.success() {
        common::skip(&format!(
            "cannot mount a tmpfs in a new mount namespace here: {probe:?}"
        ));
        return;
    }
    let output = in_read_only_mount(&format!("--flock '{mount_point}/lock' echo ran"));
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert_eq!(
        one_error_line(&output.stderr),
        format!("me-only: {mount_point}/lock: cannot open: Read-only file system\n")
    );
}

/// /proc/locks names a file by its filesystem's device and inode number;
/// two filesystems can each have a file with the same inode number (two
/// tmpfs number theirs alike), and a lock on one is not a lock on the
/// other. Both are mounted in a mount namespace of the test's own.
#[test]
fn test_mode_does_not_mistake_a_lock_on_another_filesystem_for_this_one() {
    if !common::root_or_skip("unshare -m and mount")
        || !common::programs_or_skip(&["unshare", "flock"])
    {
        return;
    }
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let script = r#"
        mount -t tmpfs none "$1" && mount -t tmpfs none "$2" || exit 97
        touch "$1/lock" "$2/lock"
        [ "$(stat -c %i "$1/lock")" = "$(stat -c %i "$2/lock")" ] || exit 98
        flock "$1/lock" sh -c '
            "$0" --flock --test "$1/lock" >/dev/null; echo "this $?"
            "$0" --flock --test "$2/lock" >/dev/null; echo "other $?"' "$3" "$1" "$2"
    "#;
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .args([first.path(), second.path()])
        .arg(common::ME_ONLY)
        .output()
        .unwrap();
    if matches!(output.status.code(), Some(97 | 98)) {
        common::skip(&format!("two tmpfs with alike inode numbers: {output:?}"));
        return;
    }
    assert_eq!(text(&output.stdout), "this 4\nother 0\n", "{output:?}");
}
