//! What a lock costs the machine, whatever others do (SPEC 7): a holder's
//! kernel resources stay bounded however many launches it turns away, and a
//! waiter costs no CPU while it waits, whatever the listener it waits on
//! does with its connection.

use crate::common;

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Holding, free_port, me_only, text, unique_lock};
use socket2::{Domain, SockAddr, Socket, Type};

/// Refused launches run this many at a time.
const AT_ONCE: usize = 4;

/// The user of the refused launches that may not read the holder's /proc.
const NOBODY: u32 = 65534;

/// Each refused launch asked the holder who it was by connecting to its
/// listening socket, and an AF_UNIX connection stays in the listener's queue
/// until the listener accepts it, which a holder never does: after 4096
/// (somaxconn; a per-minute cron job against a holder of three days) the
/// queue was full, and --test, --list and --replace no longer learnt the
/// holder's pid. Launches by another user, who may not read the holder's
/// /proc, are among them where the tests run as root.
#[test]
fn ten_thousand_refused_launches_leave_the_holder_named_listed_and_replaceable() {
    if !common::programs_or_skip(&["ss"]) {
        return;
    }
    let lock = unique_lock("refused");
    let holder = Holding::with_script([&lock], "echo ready; read line");
    let another_user = nix::unistd::getuid().is_root();
    std::thread::scope(|scope| {
        for launcher in 0..AT_ONCE {
            let lock = &lock;
            scope.spawn(move || {
                let nobody = another_user && launcher % 2 == 1;
                let (_copy, program) = if nobody {
                    let (copy, command) = common::me_only_as_user(NOBODY);
                    (Some(copy), command.get_program().to_owned())
                } else {
                    (None, common::ME_ONLY.into())
                };
                for _ in 0..10_000 / AT_ONCE {
                    let mut launch = Command::new(&program);
                    if nobody {
                        launch.uid(NOBODY).gid(NOBODY).current_dir("/");
                    }
                    let output = launch.args([lock, "true"]).output().unwrap();
                    assert_eq!(output.status.code(), Some(4), "{output:?}");
                }
            });
        }
    });
    let test = me_only().args(["--test", &lock]).output().unwrap();
    assert_eq!(test.status.code(), Some(4), "{test:?}");
    assert_eq!(text(&test.stdout), format!("{}\n", holder.pid));

    let list = me_only().args(["--list", &lock]).output().unwrap();
    let listed = text(&list.stdout);
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(..3),
        Some(&[lock.as_str(), "abstract", &holder.pid.to_string()][..]),
        "{listed}"
    );

    let queued = common::queued_on(&lock);
    println!("{queued} connections queued on the holder");
    assert!(queued <= 40, "{queued} connections queued on the holder");

    let replace = me_only()
        .args(["--replace", &lock, "true"])
        .output()
        .unwrap();
    assert_eq!(replace.status.code(), Some(0), "{replace:?}");
    assert_eq!(
        holder.release().signal(),
        Some(15),
        "the holder was stopped"
    );
}

/// What a listener that is not me-only does with each connection it
/// accepts.
#[derive(Debug, Clone, Copy)]
enum Accepting {
    /// Writes a banner and keeps the connection open.
    Banner,
    /// Closes it at once.
    Closes,
    /// Keeps it open and says nothing.
    Holds,
}

/// Connections a foreign listener keeps open at most.
const MAX_KEPT: usize = 100;

/// A listener on a lock's address, written here, that accepts every
/// connection and counts them.
struct Foreign {
    address: SockAddr,
    connections: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl Foreign {
    fn listen(domain: Domain, address: SockAddr, behaviour: Accepting) -> Foreign {
        let listener = Socket::new(domain, Type::STREAM, None).unwrap();
        listener.bind(&address).unwrap();
        listener.listen(128).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let accepting = {
            let (connections, done) = (connections.clone(), done.clone());
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                while let Ok((mut connection, _)) = listener.accept() {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    connections.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Accepting::Banner => {
                            let _ = connection.write_all(b"hello\n");
                        }
                        Accepting::Closes => continue,
                        Accepting::Holds => {}
                    }
                    // A waiter that connects again and again must not make
                    // this process run out of descriptors (and let go).
                    if kept.len() < MAX_KEPT {
                        kept.push(connection);
                    }
                }
            })
        };
        Foreign {
            address,
            connections,
            done,
            accepting: Some(accepting),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Foreign {
    /// Wakes the accepting thread with one last connection, and lets it end.
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let domain = self.address.domain();
        let _ = Socket::new(domain, Type::STREAM, None).and_then(|s| s.connect(&self.address));
        let _ = self.accepting.take().map(|thread| thread.join());
    }
}

/// Waits for `child` to exit, reading its stderr to the end meanwhile, and
/// returns its status, its stderr and the CPU time it used (user and system).
fn wait_with_cpu_time(mut child: std::process::Child) -> (ExitStatus, String, Duration) {
    use nix::libc;

    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 reaps our own child and fills the two values given.
    let reaped = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(reaped, child.id() as i32, "wait4");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    (ExitStatus::from_raw(status), stderr, cpu)
}

/// A waiter on a lock held by a listener that accepts its connection (a
/// banner server, one that hangs up at once, one that holds it) sleeps like
/// one on me-only: a banner made every look a new connection, answered at
/// once, ~600 a second, 20% of a core.
#[test]
fn a_waiter_on_a_listener_that_accepts_costs_no_cpu() {
    let mut cases = Vec::new();
    for behaviour in [Accepting::Banner, Accepting::Closes, Accepting::Holds] {
        let name = format!("\0{}", unique_lock("accepting"));
        let address = SockAddr::unix(std::ffi::OsStr::new(&name)).unwrap();
        let lock = vec![name[1..].to_owned()];
        cases.push((behaviour, Domain::UNIX, address, lock));
        let port = free_port();
        let address = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
        let lock = vec!["--tcp".to_owned(), address.to_string()];
        cases.push((behaviour, Domain::IPV4, address.into(), lock));
    }
    std::thread::scope(|scope| {
        for (behaviour, domain, address, lock) in cases {
            scope.spawn(move || {
                let what = format!("{lock:?}, a listener that {behaviour:?}");
                let listener = Foreign::listen(domain, address, behaviour);
                let started = Instant::now();
                let waiter = me_only()
                    .args(["--wait", "--timeout", "2"])
                    .args(&lock)
                    .arg("true")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let (status, stderr, cpu) = wait_with_cpu_time(waiter);
                let waited = started.elapsed();
                let connections = listener.connections();
                println!("{what}: {connections} connections, {cpu:?} of CPU in {waited:?}");
                assert_eq!(status.code(), Some(4), "{what}: {stderr}");
                common::one_error_line(stderr.as_bytes());
                assert!(waited >= Duration::from_secs(2), "{what}: gave up early");
                assert!(connections <= 10, "{what}: {connections} connections");
                assert!(cpu < Duration::from_millis(100), "{what}: {cpu:?} of CPU");
            });
        }
    });
}
