//! Helpers shared by the end-to-end tests: they drive the built binary the
//! way a user's shell would.

pub mod etcd;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const ME_ONLY: &str = env!("CARGO_BIN_EXE_me-only");

/// A pipe whose ends close on exec, so that only the descriptors a test
/// hands a child on purpose reach it (std::io::pipe is newer than the
/// rust-version the package builds with).
pub fn pipe() -> (std::fs::File, std::fs::File) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (read.into(), write.into())
}

/// Held by the tests that load both cores for a while (hundreds of
/// launches at once, a thousand waiter threads, locks taken and dropped in
/// a loop) and by those that a neighbour's load would fail (a time bound of
/// a tenth of a second, a table that the churn shifts): one of them at a
/// time. The suite is one test binary, so any test may run beside any
/// other; beside one of the first, a 1 s --timeout on 1024 slots came
/// after 1.1 s.
pub fn one_heavy_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A command that runs the built me-only.
pub fn me_only() -> Command {
    Command::new(ME_ONLY)
}

/// A command that runs me-only as another user (the tests run as root). The
/// binary is copied where that user can reach it: the build tree may sit in
/// a directory only root may enter. Keep the returned directory alive.
pub fn me_only_as_user(uid: u32) -> (tempfile::TempDir, Command) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("me-only");
    // Copied by cp(1), not std::fs::copy: a child that another test thread
    // forks while this process holds the copy open for writing would keep
    // that descriptor until its exec, and running the copy meanwhile fails
    // with ETXTBSY ("Text file busy").
    let copied = Command::new("cp")
        .arg(ME_ONLY)
        .arg(&binary)
        .status()
        .unwrap();
    assert!(copied.success(), "cp {ME_ONLY} {}", binary.display());
    let mut command = Command::new(binary);
    command.uid(uid).gid(uid).current_dir("/");
    (dir, command)
}

/// Gives the child the default disposition of `signals`. sh cannot trap a
/// signal that was ignored when it started (POSIX), and a test run from the
/// background of a non-interactive shell (`cargo test &` in a script)
/// starts with INT and QUIT ignored (under nohup, HUP too), which me-only
/// passes on, as it should.
pub fn default_disposition_of(command: &mut Command, signals: &'static [nix::libc::c_int]) {
    use std::os::unix::process::CommandExt;

    // SAFETY: signal() is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            for &signal in signals {
                nix::libc::signal(signal, nix::libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// Makes the child inherit `fd` as descriptor number `target`, open across
/// exec (the parent's copy stays close-on-exec).
pub fn inherit_fd_as(command: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) {
    use nix::libc;
    use std::os::unix::process::CommandExt;

    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set.
            let done = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `me-only`, started with no descriptor but 0, 1 and 2 (and those that
/// `inherit_fd_as`, called after this, hands it): whatever the test runner
/// itself inherited (a shell's `exec 3</dev/null`, a CI runner's pipe) is
/// closed on exec. For a test that checks which descriptor the lock takes:
/// with nothing else open, it is the one a person would expect, fd 3.
pub fn me_only_with_standard_descriptors() -> Command {
    use nix::libc;
    use std::os::unix::process::CommandExt;

    let mut command = me_only();
    // SAFETY: close_range is a plain system call, async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let done = libc::syscall(
                libc::SYS_close_range,
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// An abstract lock name no other test (or test run) uses.
pub fn unique_lock(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("/me-only-test/{}/{tag}/{n}", std::process::id())
}

/// A port for one test's lock, free on every address. Ports come from below
/// the kernel's ephemeral range, so no client connection of this or any
/// other process is handed one meanwhile; the start is spread by pid so that
/// test runs in parallel rarely probe the same ones. The port is checked
/// free on every address.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive ports, each free on every address
/// (`count` below 7, the stride between the ports this process hands out).
pub fn free_ports(count: u16) -> u16 {
    assert!(count < 7);
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000; // up to 31999, below 32768
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let spread = (std::process::id() % u32::from(COUNT)) as usize;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < usize::from(COUNT), "no free port left for tests");
        let port = FIRST + ((spread + n * 7) % usize::from(COUNT)) as u16;
        if (port..port + count).all(port_is_free) {
            return port;
        }
    }
}

fn port_is_free(port: u16) -> bool {
    // Without SO_REUSEADDR (which std's TcpListener sets) the bind is
    // refused by any socket on the port, lingering connections included.
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    probe
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
        .is_ok()
}

/// A me-only that holds a lock: its command announces itself on stdout, then
/// waits for its stdin to close. Killed on drop, so a failing test leaves no
/// holder behind.
pub struct Holding {
    child: Child,
    stdin: Option<ChildStdin>,
    pub pid: u32,
}

impl Holding {
    /// Starts `me-only <options...> sh -c ...` and returns once the command
    /// runs, which is when the lock is held.
    pub fn start<I, S>(options: I) -> Holding
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Holding::with_script(options, "echo ready; exec cat")
    }

    /// Starts `me-only <options...> sh -c SCRIPT`; SCRIPT prints `ready` once
    /// it holds what the test needs.
    pub fn with_script<I, S>(options: I, script: &str) -> Holding
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = me_only();
        command.args(options).args(["sh", "-c", script]);
        Holding::spawn(command)
    }

    /// Starts `command` (me-only or another locker, such as flock(1)), which
    /// prints `ready` once it holds the lock and then waits for its stdin to
    /// close.
    pub fn spawn(mut command: Command) -> Holding {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line != "ready\n" {
            let status = child.wait().unwrap();
            panic!("the holder did not start: it said {line:?} and exited with {status}");
        }
        let pid = child.id();
        Holding {
            stdin: child.stdin.take(),
            child,
            pid,
        }
    }

    /// Sends `signal` to me-only (the command, or with --fork the
    /// supervisor).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal).unwrap();
    }

    /// Lets the command finish normally.
    pub fn release(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }

    /// kill -9, and reaps it: when this returns, the holder is gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to the end with stdout captured, and returns its pid with
/// its stdout, asserting that it succeeded.
pub fn run_noting_pid(command: &mut Command) -> (u32, String) {
    let child = command.stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    (pid, text(&output.stdout))
}

/// stderr as text, for messages in assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that stderr is exactly one line, `me-only: ...`, and returns it.
pub fn one_error_line(stderr: &[u8]) -> String {
    let stderr = text(stderr);
    assert!(
        stderr.starts_with("me-only: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "expected one line 'me-only: ...' on stderr, got {stderr:?}"
    );
    stderr
}

/// Whether `condition` comes true within `limit`, looked at every 5 ms: for
/// a state that no event announces (what /proc shows of a process).
pub fn within(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Blocks until process `pid` (not necessarily our child) has exited, which
/// is after the kernel closed its descriptors.
pub fn wait_until_gone(pid: i32) {
    assert!(exits_within(pid, nix::poll::PollTimeout::NONE));
}

/// Whether process `pid` (not necessarily our child) exits within `limit`.
pub fn gone_within(pid: i32, limit: Duration) -> bool {
    exits_within(pid, nix::poll::PollTimeout::try_from(limit).unwrap())
}

/// Event-driven: a pidfd becomes readable when its process exits.
fn exits_within(pid: i32, timeout: nix::poll::PollTimeout) -> bool {
    use nix::libc;
    use nix::poll::{PollFd, PollFlags, poll};
    use std::os::fd::{FromRawFd, OwnedFd};

    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ESRCH),
            "pidfd_open({pid}): {err}"
        );
        return true; // already gone
    }
    // SAFETY: the syscall just returned this descriptor to us alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&pidfd),
        PollFlags::POLLIN,
    )];
    poll(&mut fds, timeout).expect("poll the pidfd") == 1
}

/// The inode of `socket:[N]`, as readlink of a socket descriptor prints it.
pub fn socket_inode(link: &str) -> &str {
    link.strip_prefix("socket:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a socket: {link}"))
}

/// The fields of the row of a /proc/net table whose column `column` is
/// `inode`.
pub fn proc_net_row<'a>(
    table: impl Iterator<Item = &'a str>,
    column: usize,
    inode: &str,
) -> Vec<&'a str> {
    let mut table = table;
    let row = table
        .find(|line| line.split_whitespace().nth(column) == Some(inode))
        .unwrap_or_else(|| panic!("socket {inode} is not in the table"));
    row.split_whitespace().collect()
}

/// Connections queued on the holder's listening socket, as `ss -xl`'s
/// Recv-Q shows them (the holder never accepts).
pub fn queued_on(lock: &str) -> u32 {
    let output = std::process::Command::new("ss")
        .args(["-xlH", "src", &format!("@{lock}")])
        .output()
        .unwrap();
    let listing = text(&output.stdout);
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(
        fields.get(4),
        Some(&format!("@{lock}").as_str()),
        "{listing}"
    );
    fields[2].parse().unwrap()
}

/// Starts `command`, a `me-only -v` that will wait for a held lock, with
/// stdout and stderr piped, and returns once it says it is waiting on the
/// holder. The rest of stderr is drained in the background, so the waiter
/// never blocks on it.
pub fn spawn_waiting(command: &mut Command) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut diagnostics = BufReader::new(child.stderr.take().unwrap());
    read_until_a_line_with(&mut diagnostics, "waiting for the holder to let go");
    std::thread::spawn(move || std::io::copy(&mut diagnostics, &mut std::io::sink()));
    child
}

/// How long after `holder` lets go of the lock that `lock_args` name a
/// `me-only --wait` on it, waiting by then, has started its command.
pub fn handover(holder: Holding, lock_args: &[&str]) -> Duration {
    let mut waiter = spawn_waiting(me_only().args(["-v", "--wait"]).args(lock_args).args([
        "sh",
        "-c",
        "echo started",
    ]));
    let mut started = BufReader::new(waiter.stdout.take().unwrap());
    let released = Instant::now();
    assert!(holder.release().success());
    let mut line = String::new();
    started.read_line(&mut line).unwrap();
    let latency = released.elapsed();
    assert_eq!(line, "started\n");
    assert!(waiter.wait().unwrap().success());
    latency
}

/// Runs `command`, a me-only whose COMMAND would print on stdout, expects
/// it to refuse with exit `code` before COMMAND ran, and returns its one
/// line on stderr.
pub fn refused(command: &mut Command, code: i32) -> String {
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(code), "{command:?}: {output:?}");
    assert!(output.stdout.is_empty(), "COMMAND ran: {output:?}");
    one_error_line(&output.stderr)
}

/// Whether the tests run as root; if not, says that the calling test is
/// skipped, and why.
pub fn root_or_skip(needs_root_for: &str) -> bool {
    let root = nix::unistd::getuid().is_root();
    if !root {
        skip(&format!("needs root to {needs_root_for}"));
    }
    root
}

/// The programs beyond sh and coreutils that some tests run, and the Debian
/// package that has each.
const PACKAGE_OF: &[(&str, &str)] = &[
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("fish", "fish"),
    ("flock", "util-linux"),
    ("ip", "iproute2"),
    ("openssl", "openssl"),
    ("ss", "iproute2"),
    ("unshare", "util-linux"),
    ("zsh", "zsh"),
];

/// Whether every one of `programs` is on PATH; if not, skips the calling
/// test, naming what is missing and the package to install.
pub fn programs_or_skip(programs: &[&str]) -> bool {
    let missing: Vec<String> = programs
        .iter()
        .filter(|program| !on_path(program))
        .map(|program| {
            let package = PACKAGE_OF
                .iter()
                .find(|(name, _)| name == program)
                .map_or(*program, |(_, package)| package);
            format!("{program} (apt-get install {package})")
        })
        .collect();
    if !missing.is_empty() {
        skip(&format!("needs {}", missing.join(", ")));
    }
    missing.is_empty()
}

fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;

    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    })
}

static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Says that the calling test is skipped, and why: in its own output, and
/// in one line on the test binary's stderr when it exits, which cargo shows
/// even when every test passed (it hides a passing test's output).
pub fn skip(reason: &str) {
    static REPORT_AT_EXIT: std::sync::Once = std::sync::Once::new();

    println!("skipped: {reason}");
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    SKIPPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(format!("{test} ({reason})"));
    // SAFETY: registers a function that takes no arguments and returns.
    REPORT_AT_EXIT.call_once(|| unsafe {
        nix::libc::atexit(report_skipped);
    });
}

extern "C" fn report_skipped() {
    use std::io::Write;

    let skipped = SKIPPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let line = format!("skipped {}: {}\n", skipped.len(), skipped.join("; "));
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Reads lines until one contains `text`; fails if the writer ends first.
pub fn read_until_a_line_with(reader: &mut impl BufRead, text: &str) {
    let mut line = String::new();
    while !line.contains(text) {
        line.clear();
        assert_ne!(
            reader.read_line(&mut line).unwrap(),
            0,
            "ended before saying {text:?}"
        );
    }
}

/// A background command a test started (--detach), killed by pid when
/// dropped, so that a failing test leaves nothing running.
pub struct Detached(pub i32);

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_until_gone(self.0);
    }
}

/// A child process a test started, killed and reaped when dropped, so that
/// a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command`, a me-only with `--timeout` on a held lock whose COMMAND
/// would print on stdout, and checks that it gave up in time: exit 4 after
/// at least `timeout` (and well before 3 s), COMMAND never run. Returns its
/// one line on stderr.
pub fn gives_up_after(command: &mut Command, timeout: Duration) -> String {
    let started = Instant::now();
    let line = refused(command, 4);
    let waited = started.elapsed();
    println!("--timeout {timeout:?} gave up after {waited:?}");
    assert!(waited >= timeout, "gave up early: {waited:?}");
    assert!(waited < Duration::from_secs(3), "gave up late: {waited:?}");
    line
}

/// A lock file path in a fresh directory (the file does not exist yet).
pub fn lock_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    (dir, path)
}

/// util-linux `flock FILE sh -c ...`, holding the lock until released.
pub fn flock_holder(path: &Path) -> Holding {
    let mut command = Command::new("flock");
    command.arg(path).args(["sh", "-c", "echo ready; exec cat"]);
    Holding::spawn(command)
}

/// `me-only --flock ...`.
pub fn me_only_flock() -> Command {
    let mut command = me_only();
    command.arg("--flock");
    command
}

/// The lock options of each kernel backend, named, for a fresh lock (with
/// --tcp, `ports` free ports from the one named up); keep the temporary
/// directory of the lock file alive while the lock is used.
pub fn each_kernel_lock(
    tag: &str,
    ports: u16,
) -> Vec<(&'static str, Vec<String>, Option<tempfile::TempDir>)> {
    let (dir, file) = lock_file();
    vec![
        ("abstract", vec![unique_lock(tag)], None),
        (
            "tcp",
            vec!["--tcp".into(), format!("127.0.0.1:{}", free_ports(ports))],
            None,
        ),
        (
            "flock",
            vec!["--flock".into(), file.to_string_lossy().into_owned()],
            Some(dir),
        ),
    ]
}

/// Starts `command` with stdin and stdout piped, and returns it with its
/// stdout.
pub fn spawn_piped(command: &mut std::process::Command) -> (KillOnDrop, BufReader<ChildStdout>) {
    let mut run = KillOnDrop(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(run.0.stdout.take().unwrap());
    (run, stdout)
}

/// Starts `command` with stdin and stdout piped, and returns it with the
/// first line it printed.
pub fn first_line(command: &mut std::process::Command) -> (KillOnDrop, String) {
    let (run, mut stdout) = spawn_piped(command);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    (run, line)
}

/// An example program, built by `cargo test` next to the test binaries.
pub fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --examples`)",
        path.display()
    );
    path
}
