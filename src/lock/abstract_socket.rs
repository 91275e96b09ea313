//! The default lock: an abstract AF_UNIX socket name. The kernel grants a
//! name to one socket at a time and frees it when the last descriptor closes.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use socket2::{Domain, SockAddr, Type};

use super::{
    Attempt, Backend, Holder, ListenerWatch, Probe, Waited, bind_and_listen, current_holder,
    listens_on, new_socket,
};
use crate::error::{Error, errno_of};
use crate::sys::procfs::{self, Opened};
use crate::sys::unix_diag::{self, NamedSocket};

/// The longest abstract name: sun_path (108 bytes) less the leading NUL.
pub const MAX_NAME_LEN: usize = 107;

/// How many connections may wait in a holder's queue before a look at the
/// lock no longer adds one to ask who holds it. Each stays there until the
/// holder exits (it never accepts), so a cron job refused every minute
/// would fill the queue (somaxconn: 4096, 128 before Linux 5.4) in three
/// days, and then neither the holder's pid nor a waiter's wake-up could be
/// had from it. Looks made at the same moment may each add one beyond this.
const MAX_QUEUED_BY_LOOKS: u32 = 32;

pub struct AbstractLock {
    name: String,
    address: SockAddr,
    watch: ListenerWatch,
}

impl AbstractLock {
    pub fn parse(lock: &OsStr) -> Result<AbstractLock, Error> {
        let name = lock.to_string_lossy().into_owned();
        let bytes = lock.as_bytes();
        if bytes.is_empty() {
            // An empty abstract name would make the kernel autobind a random
            // one: a "lock" that every instance gets.
            return Err(Error::Usage("the lock name is empty".into()));
        }
        if bytes.len() > MAX_NAME_LEN {
            return Err(Error::Usage(format!(
                "{name}: lock name is {} bytes, longer than the {MAX_NAME_LEN} the kernel allows",
                bytes.len()
            )));
        }
        let mut abstract_path = Vec::with_capacity(bytes.len() + 1);
        abstract_path.push(0);
        abstract_path.extend_from_slice(bytes);
        let address = SockAddr::unix(OsStr::from_bytes(&abstract_path))
            .map_err(|err| Error::Usage(format!("{name}: not a valid lock name: {err}")))?;
        Ok(AbstractLock {
            name,
            address,
            watch: ListenerWatch::default(),
        })
    }
}

impl AbstractLock {
    fn abstract_name(&self) -> &[u8] {
        self.address.as_abstract_namespace().unwrap_or_default()
    }

    /// The sockets bound to the name: from the kernel's socket diagnostics,
    /// which give names exactly, or else from /proc/net/unix; None where
    /// neither can be read.
    fn bound_sockets(&self) -> Option<Vec<NamedSocket>> {
        let name = self.abstract_name();
        unix_diag::abstract_sockets(name).or_else(|| procfs::abstract_sockets(name))
    }

    /// The inode of the socket that listens on the name, where the kernel
    /// tells.
    fn listener_inode(&self) -> Option<u64> {
        let sockets = self.bound_sockets()?;
        Some(sockets.into_iter().find(|socket| socket.listening)?.inode)
    }

    /// Connects to the listening socket to ask who took it: its peer
    /// credentials are those of the process that called listen(), which is
    /// the command. Non-blocking, so a full queue means "held, by whom
    /// unknown", never a hang. The connection stays queued at the holder
    /// until it exits. Binding to look would briefly hold the lock and
    /// could turn a real launch away.
    fn ask_the_listener(&self, listener: Option<&NamedSocket>) -> Result<Probe, Error> {
        let probe = new_socket(&self.name, Domain::UNIX, Type::STREAM.nonblocking())?;
        let unknown = || Holder {
            uid: listener.and_then(|listener| listener.uid),
            ..Holder::unknown()
        };
        match probe.connect(&self.address) {
            Ok(()) => Ok(Probe::Held(match getsockopt(&probe, PeerCredentials) {
                Ok(credentials) => {
                    // 0: the listener is in a pid namespace this one
                    // cannot see into.
                    let recorded = Some(credentials.pid()).filter(|&pid| pid > 0);
                    let uid = Some(credentials.uid());
                    let pid = match listener {
                        Some(listener) => {
                            current_holder(recorded, Opened::Socket(listener.inode), uid, &[])
                        }
                        None => recorded,
                    };
                    Holder {
                        pid,
                        uid,
                        host: None,
                    }
                }
                Err(_) => unknown(),
            })),
            Err(err) if errno_of(&err) == Errno::EAGAIN => Ok(Probe::Held(unknown())),
            // Refused: nobody listens, but the name may still be bound.
            Err(err) if errno_of(&err) == Errno::ECONNREFUSED => {
                if self
                    .bound_sockets()
                    .is_some_and(|sockets| !sockets.is_empty())
                {
                    Ok(Probe::Held(Holder::unknown()))
                } else {
                    Ok(Probe::Free)
                }
            }
            Err(err) => Err(Error::lock(&self.name, "connect", &err)),
        }
    }
}

/// The process that holds `listener` open, as far as /proc shows: first
/// among the processes of the socket's owner, then among all (a command
/// that changed user after it took the lock).
fn holder_in_proc(listener: &NamedSocket) -> Option<i32> {
    let opened = Opened::Socket(listener.inode);
    current_holder(None, opened, listener.uid, &[]).or_else(|| {
        listener
            .uid
            .and_then(|_| current_holder(None, opened, None, &[]))
    })
}

impl Backend for AbstractLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_acquire(&self) -> Result<Attempt, Error> {
        let socket = new_socket(&self.name, Domain::UNIX, Type::STREAM)?;
        bind_and_listen(&self.name, socket, &self.address, &self.watch)
    }

    /// Names the holder from the kernel's socket table and /proc, without
    /// touching its socket: a connection to ask it would stay in its queue
    /// (see MAX_QUEUED_BY_LOOKS). The listening socket is asked only where
    /// /proc cannot name the holder (another user's process, or one in
    /// another pid namespace), and only while its queue is short.
    fn probe(&self) -> Result<Probe, Error> {
        let Some(sockets) = self.bound_sockets() else {
            // Neither table can be read: only the socket can tell.
            return self.ask_the_listener(None);
        };
        let Some(listener) = sockets.iter().find(|socket| socket.listening) else {
            // Bound but not listening (a launch between its bind and its
            // listen): held, by whom unknown.
            return Ok(if sockets.is_empty() {
                Probe::Free
            } else {
                Probe::Held(Holder::unknown())
            });
        };
        match holder_in_proc(listener) {
            Some(pid) => Ok(Probe::Held(Holder {
                pid: Some(pid),
                uid: listener.uid.or_else(|| procfs::process_uid(pid)),
                host: None,
            })),
            None if listener.queued < MAX_QUEUED_BY_LOOKS => self.ask_the_listener(Some(listener)),
            None => Ok(Probe::Held(Holder {
                uid: listener.uid,
                ..Holder::unknown()
            })),
        }
    }

    fn is_held_through(&self, fd: BorrowedFd<'_>) -> bool {
        listens_on(fd, &self.address)
    }

    fn held_through(&self) -> Option<Opened> {
        Some(Opened::Socket(self.listener_inode()?))
    }

    fn wait_for_release(&self, deadline: Option<Instant>) -> Result<Waited, Error> {
        let listening = || self.listener_inode();
        self.watch
            .wait(&self.name, Domain::UNIX, &self.address, listening, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_message(lock: &[u8]) -> String {
        super::super::usage_message(AbstractLock::parse(OsStr::from_bytes(lock)))
    }

    #[test]
    fn the_longest_name_the_kernel_allows_is_accepted() {
        let lock = AbstractLock::parse(OsStr::from_bytes(&[b'x'; MAX_NAME_LEN])).unwrap();
        assert_eq!(
            lock.address.as_abstract_namespace(),
            Some(&[b'x'; MAX_NAME_LEN][..])
        );
    }

    #[test]
    fn one_byte_more_is_refused_not_truncated() {
        let message = usage_message(&[b'x'; MAX_NAME_LEN + 1]);
        assert!(message.contains("108 bytes"), "{message}");
    }

    #[test]
    fn an_empty_name_is_refused() {
        assert!(usage_message(b"").contains("empty"));
    }
}
