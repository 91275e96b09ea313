//! The lock backends, behind one seam: each kind of lock is a module that
//! implements [`Backend`], and [`from_cli`] is the one place that picks one.

mod abstract_socket;
pub mod acquire;
#[cfg(feature = "etcd")]
pub mod etcd;
mod flock;
pub mod slots;
mod tcp;

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};

use crate::error::{Error, errno_of};
pub use crate::holder::Holder;
use crate::sys::poll_time;
use crate::sys::procfs::{self, Opened, Sight};

/// What a look at the lock found, without taking it.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    Free,
    Held(Holder),
}

/// A holder of the lock, and whether it holds it shared with others
/// (`--shared`, `flock -s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub holder: Holder,
    pub shared: bool,
}

/// How a wait for the holder to let go ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The holder may be gone (or it is time to look again): try again.
    Event,
    /// Nothing could be watched (no one listens on the lock): back off.
    NothingToWatch,
}

/// What asking the holder to stop came to.
#[derive(Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// No one holds the lock.
    Free,
    /// The holder is younger than --replace-older: it is left alone.
    Younger,
    /// It was asked, and should let go within `within`.
    Sent { holder: Holder, within: Duration },
}

/// One try at a lock.
#[derive(Debug)]
pub enum Attempt {
    /// The lock is ours: for as long as this descriptor (or a copy) is
    /// open; for a lock no descriptor holds in the kernel (etcd), also for
    /// as long as the process that `Backend::hand_over` names lives.
    Acquired(Option<OwnedFd>),
    /// Someone else holds it.
    Busy,
}

/// A kind of lock. Send: a --slots waiter takes a slot in a thread of its
/// own and hands the lock it took to the main thread.
pub trait Backend: Send {
    /// The lock as messages name it.
    fn name(&self) -> &str;

    /// Takes the lock if it is free, without waiting.
    fn try_acquire(&self) -> Result<Attempt, Error>;

    /// Whether the lock is held and by whom, without taking it or getting in
    /// the way of anyone taking it.
    fn probe(&self) -> Result<Probe, Error>;

    /// Every holder that keeps this lock from being taken now, without
    /// taking it: one, but for a file's shared holders (all of them).
    fn holders(&self) -> Result<Vec<Holding>, Error> {
        Ok(match self.probe()? {
            Probe::Free => Vec::new(),
            Probe::Held(holder) => vec![Holding {
                holder,
                shared: false,
            }],
        })
    }

    /// Blocks until the holder may have let go, or until `deadline`.
    fn wait_for_release(&self, deadline: Option<Instant>) -> Result<Waited, Error>;

    /// What COMMAND learns of the lock it holds, beyond ME_ONLY_LOCK and
    /// ME_ONLY_FD.
    fn environment(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// --replace where the holder may run on another host (etcd): asks it
    /// to stop, unless it took the lock less than `older_than` ago. None
    /// where the backend has no such way: a kernel lock's holder is
    /// signalled by the caller.
    fn ask_holder_to_stop(
        &self,
        _older_than: Option<Duration>,
    ) -> Option<Result<StopRequest, Error>> {
        None
    }

    /// What a process has open when it holds this lock (the listening
    /// socket, the locked file), for finding the processes of the instance
    /// that holds it; None where no descriptor holds it (etcd) or it is
    /// not held.
    fn held_through(&self) -> Option<Opened> {
        None
    }

    /// Whether `fd`, a descriptor of this process, is the lock itself: the
    /// socket that listens on exactly the lock's address, or an open file
    /// of the lock file holding its exclusive flock(2). Narrower than
    /// `held_through`, which also names what merely keeps the lock from
    /// being taken (a listener on the wildcard address, a shared flock):
    /// this is what a process may adopt as the lock it was handed.
    fn is_held_through(&self, _fd: BorrowedFd<'_>) -> bool {
        false
    }

    /// Lets go of the lock just taken, which will not be used (a --slots
    /// waiter's slot taken once the wait was over). Kernel locks need
    /// nothing: they go with their descriptor.
    fn let_go(&self) {}

    /// Bounds every call the lock makes to a service (etcd) by `deadline`,
    /// for a wait that must end by then (None: each call's own bound).
    /// Kernel locks make no such calls.
    fn limit_calls_to(&self, _deadline: Option<Instant>) {}

    /// Makes sure, before COMMAND starts, that the lock just taken can be
    /// kept: where hand_over comes only once COMMAND runs (--detach), a
    /// failure there would come too late. Kernel locks need nothing.
    fn make_keepable(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Ties a lock that no descriptor holds in the kernel to the process
    /// that holds it from now on (COMMAND: me-only itself, before exec; or
    /// me-only with --fork), as well as to the descriptor acquired. Kernel
    /// locks need nothing: the descriptor is the tie.
    fn hand_over(&self, _holder: i32) -> Result<(), Error> {
        Ok(())
    }
}

/// The kinds of lock the command line can ask for.
#[derive(Debug, Clone)]
pub enum Kind {
    AbstractSocket,
    Tcp,
    Flock,
    /// A shared flock(2) (--shared, flock -s): held by many at once, kept
    /// out by an exclusive holder only.
    SharedFlock,
    /// Boxed: the settings (endpoints, TLS, login) are many times the size
    /// of the other kinds.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::Settings>),
}

impl Kind {
    /// This kind for the waiters of one --slots launch, one per slot, that
    /// must take one slot in all (etcd's keep a contest; see contest.rs).
    pub fn contending(self) -> Kind {
        match self {
            #[cfg(feature = "etcd")]
            Kind::Etcd(settings) => Kind::Etcd(Box::new(settings.contending())),
            kernel => kernel,
        }
    }

    /// The wait of the --slots waiters `contending` made is over: etcd's
    /// places still in line are given up, which ends their waits (kernel
    /// waiters are woken by a signal instead).
    pub fn end_contest(&self) {
        #[cfg(feature = "etcd")]
        if let Kind::Etcd(settings) = self {
            settings.end_contest();
        }
    }
}

/// The backend of that kind for LOCK, checked before anything is bound or
/// opened.
pub fn from_cli(lock: &OsStr, kind: Kind) -> Result<Box<dyn Backend>, Error> {
    Ok(match kind {
        Kind::AbstractSocket => Box::new(abstract_socket::AbstractLock::parse(lock)?),
        Kind::Tcp => Box::new(tcp::TcpLock::parse(lock)?),
        Kind::Flock => Box::new(flock::FlockLock::parse(lock)?),
        Kind::SharedFlock => Box::new(flock::FlockLock::parse(lock)?.shared()),
        #[cfg(feature = "etcd")]
        Kind::Etcd(settings) => Box::new(etcd::EtcdLock::parse(lock, *settings)?),
    })
}

/// As `from_cli`, for the library: a process that lives on after a wait
/// runs out must not leave anything waiting behind (see flock.rs).
pub fn for_library(lock: &OsStr, kind: Kind) -> Result<Box<dyn Backend>, Error> {
    match kind {
        Kind::Flock => Ok(Box::new(flock::FlockLock::parse_for_library(lock)?)),
        kind => from_cli(lock, kind),
    }
}

/// A TCP lock as user `uid` names it (`PORT` is on that user's address):
/// for --list, which reads other processes' LOCK.
pub fn tcp_lock_of_user(lock: &OsStr, uid: u32) -> Result<Box<dyn Backend>, Error> {
    Ok(Box::new(tcp::TcpLock::parse_as(lock, uid)?))
}

/// The lock of slot `number` (1-based) of LOCK, for --slots: `LOCK.number`
/// (an abstract name, a lock file), or for a TCP port the port `number - 1`
/// above LOCK's.
pub fn slot_lock(lock: &OsStr, kind: &Kind, number: u32) -> Result<OsString, Error> {
    match kind {
        Kind::Tcp => tcp::slot_lock(lock, number),
        _ => {
            let mut name = lock.to_owned();
            name.push(format!(".{number}"));
            Ok(name)
        }
    }
}

/// Binds a fresh socket and listens on it: the step both socket backends take
/// the lock with. "In use" at either step means another holder. Once the
/// lock is ours, a waiter's `watch` on the old holder is dropped.
fn bind_and_listen(
    lock: &str,
    socket: socket2::Socket,
    address: &socket2::SockAddr,
    watch: &ListenerWatch,
) -> Result<Attempt, Error> {
    let in_use = |err: &io::Error| errno_of(err) == Errno::EADDRINUSE;
    match socket.bind(address) {
        Err(err) if in_use(&err) => return Ok(Attempt::Busy),
        Err(err) => return Err(Error::lock(lock, "bind", &err)),
        Ok(()) => {}
    }
    // The kernel clamps the backlog to net.core.somaxconn; a long queue lets
    // many contenders connect to ask who holds the lock.
    match socket.listen(i32::MAX) {
        Err(err) if in_use(&err) => Ok(Attempt::Busy),
        Err(err) => Err(Error::lock(lock, "listen", &err)),
        Ok(()) => {
            watch.stop();
            Ok(Attempt::Acquired(Some(socket.into())))
        }
    }
}

/// Whether `fd` is a stream socket that listens on exactly `address`.
fn listens_on(fd: BorrowedFd<'_>, address: &socket2::SockAddr) -> bool {
    let socket = socket2::SockRef::from(&fd);
    socket.r#type().is_ok_and(|ty| ty == socket2::Type::STREAM)
        && socket.is_listener().unwrap_or(false)
        && socket.local_addr().is_ok_and(|bound| bound == *address)
}

/// Creates the socket a backend binds, close-on-exec until the launcher
/// hands it to COMMAND.
fn new_socket(
    lock: &str,
    domain: socket2::Domain,
    ty: socket2::Type,
) -> Result<socket2::Socket, Error> {
    let socket = socket2::Socket::new(domain, ty, None)
        .map_err(|err| Error::lock(lock, "create socket", &err))?;
    above_standard_fds(socket.into())
        .map(socket2::Socket::from)
        .map_err(|err| Error::lock(lock, "create socket", &err))
}

/// Moves a descriptor that landed on 0, 1 or 2 (because me-only was started
/// with that one closed) above them: COMMAND must find its standard
/// descriptors as they were given, closed ones included, and never the lock
/// in their place.
fn above_standard_fds(fd: OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};

    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just returned this new descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// The process that holds the lock now, for a message ("who holds it"; whom
/// to signal is `instance::holding`'s question). The kernel records the one
/// that took it (SO_PEERCRED, /proc/locks), which may be gone while a
/// process it handed the lock to (--detach's COMMAND, a daemon's child)
/// holds it on, and whose pid may since have gone to another process: it is
/// named only if it still holds the lock, or if /proc does not let us look
/// (another user's process) and no process that /proc shows holding it
/// (of `uid`, if given, other than those known to be only `waiting`) is
/// found.
fn current_holder(
    recorded: Option<i32>,
    opened: Opened,
    uid: Option<u32>,
    waiting: &[i32],
) -> Option<i32> {
    let recorded_sight = recorded.map(|pid| (pid, procfs::sight(pid, opened)));
    match recorded_sight {
        Some((pid, Sight::Holds)) => Some(pid),
        _ => procfs::pid_with_open(opened, uid, waiting).or(match recorded_sight {
            Some((pid, Sight::Unseen)) => Some(pid),
            _ => None,
        }),
    }
}

/// Even an event-driven wait looks at the lock again this often, in case
/// the holder is something other than a listener that just closes.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A waiter's one connection to the holder's listening socket, kept for as
/// long as it waits: the kernel hangs it up when that socket is closed,
/// which is when the last holder of the lock is gone. The holder never
/// accepts it, so it stays in the holder's queue until the holder exits:
/// a new connection for every look would fill that queue.
///
/// A listener that is not me-only may accept it, and write to it or hang
/// it up at once: neither is a release while that listener still holds the
/// lock. Waking on either and connecting again at once was a busy loop (600
/// connections a second against a banner), so only a hang-up wakes a
/// waiter, and one by the listener it connected to waits for the next look
/// before it connects again.
#[derive(Default)]
struct ListenerWatch(Cell<Watching>);

#[derive(Default)]
enum Watching {
    /// No connection: none yet, or the lock is ours.
    #[default]
    Nothing,
    /// Connected to the listener whose socket has this inode, where the
    /// kernel tells.
    Connected {
        watcher: socket2::Socket,
        listener: Option<u64>,
    },
    /// Hung up, by that listener or because it was closed.
    HungUp { listener: Option<u64> },
}

impl ListenerWatch {
    /// Waits for the hang-up, or until it is time to look again.
    /// `listening` tells the inode of the socket that listens on the lock
    /// now, where the kernel tells.
    fn wait(
        &self,
        lock: &str,
        domain: socket2::Domain,
        address: &socket2::SockAddr,
        listening: impl Fn() -> Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<Waited, Error> {
        let (watcher, listener) = match self.0.take() {
            Watching::Connected { watcher, listener } => (watcher, listener),
            // The lock is still held, by the listener that hung up (or by
            // one the kernel does not tell apart from it): that was not
            // its release.
            Watching::HungUp { listener } if listener == listening() => {
                std::thread::sleep(until_next_look(deadline));
                return Ok(Waited::Event);
            }
            Watching::HungUp { .. } | Watching::Nothing => {
                let listener = listening();
                match connect_watcher(lock, domain, address)? {
                    Some(watcher) => (watcher, listener),
                    None => return Ok(Waited::NothingToWatch),
                }
            }
        };
        // Not POLLIN: what a listener that accepted writes is no news, and
        // would wake this at once, again and again. A hang-up (POLLHUP,
        // POLLERR: never asked for, always told) or the end of what it
        // sends (POLLRDHUP, which nix does not name) is.
        let hang_up = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        let mut watched = [PollFd::new(watcher.as_fd(), hang_up)];
        let wait = until_next_look(deadline);
        match poll(&mut watched, poll_time::whole_milliseconds(wait)) {
            // Time to look again, on the same connection.
            Ok(0) | Err(Errno::EINTR) => self.0.set(Watching::Connected { watcher, listener }),
            Ok(_) => self.0.set(Watching::HungUp { listener }),
            Err(errno) => return Err(Error::lock_errno(lock, "wait for the holder", errno)),
        }
        Ok(Waited::Event)
    }

    /// The lock is ours: the connection has nothing more to tell.
    fn stop(&self) {
        drop(self.0.take());
    }
}

/// How long until the next look at the lock: the recheck interval, or less
/// if the deadline comes first.
fn until_next_look(deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(deadline) => RECHECK_INTERVAL.min(deadline.saturating_duration_since(Instant::now())),
        None => RECHECK_INTERVAL,
    }
}

/// Connects to the holder's listening socket; None where nothing listens
/// (refused: bound but not listening, or just let go) or its queue is full.
fn connect_watcher(
    lock: &str,
    domain: socket2::Domain,
    address: &socket2::SockAddr,
) -> Result<Option<socket2::Socket>, Error> {
    let watcher = new_socket(lock, domain, socket2::Type::STREAM.nonblocking())?;
    match watcher.connect(address) {
        Ok(()) => {}
        // TCP: the handshake completes, or is reset, while we poll.
        Err(err) if errno_of(&err) == Errno::EINPROGRESS => {}
        Err(_) => return Ok(None),
    }
    log::debug!("{lock}: waiting for the holder to let go");
    Ok(Some(watcher))
}

/// The message of a usage error that parsing LOCK must give.
#[cfg(test)]
fn usage_message<T>(parsed: Result<T, Error>) -> String {
    match parsed {
        Err(Error::Usage(message)) => message,
        Err(other) => panic!("expected a usage error, got {other:?}"),
        Ok(_) => panic!("the lock must be refused"),
    }
}
