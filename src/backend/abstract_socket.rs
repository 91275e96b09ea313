//! The default lock: an abstract AF_UNIX socket name. The kernel grants a
//! name to one socket at a time and frees it when the last descriptor closes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use socket2::{Domain, SockAddr, Type};

use super::{
    Attempt, Backend, Holder, ListenerWatch, Probe, Waited, bind_and_listen, current_holder,
    new_socket,
};
use crate::error::{Error, errno_of};
use crate::procfs::{self, Opened};
use crate::unix_diag::{self, NamedSocket};

/// The longest abstract name: sun_path (108 bytes) less the leading NUL.
pub const MAX_NAME_LEN: usize = 107;

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
    /// which give names exactly, or else from /proc/net/unix.
    fn bound_sockets(&self) -> Vec<NamedSocket> {
        let name = self.abstract_name();
        unix_diag::abstract_sockets(name).unwrap_or_else(|| procfs::abstract_sockets(name))
    }
}

impl Backend for AbstractLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_acquire(&self) -> Result<Attempt, Error> {
        let socket = new_socket(&self.name, Domain::UNIX, Type::STREAM)?;
        bind_and_listen(&self.name, socket, &self.address, &self.watch)
    }

    /// Connects to the holder's listening socket: its peer credentials are
    /// those of the process that called listen(), which is the command.
    /// Non-blocking, so a full backlog means "held, by whom unknown", never a
    /// hang. Binding to look would briefly hold the lock and could turn a
    /// real launch away.
    fn probe(&self) -> Result<Probe, Error> {
        let probe = new_socket(&self.name, Domain::UNIX, Type::STREAM.nonblocking())?;
        match probe.connect(&self.address) {
            Ok(()) => Ok(Probe::Held(match getsockopt(&probe, PeerCredentials) {
                Ok(credentials) => {
                    // 0: the listener is in a pid namespace this one
                    // cannot see into.
                    let recorded = Some(credentials.pid()).filter(|&pid| pid > 0);
                    let uid = Some(credentials.uid());
                    let listener = self.bound_sockets().into_iter().find(|s| s.listening);
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
                Err(_) => Holder::unknown(),
            })),
            Err(err) if errno_of(&err) == Errno::EAGAIN => Ok(Probe::Held(Holder::unknown())),
            // Refused: nobody listens, but the name may still be bound.
            Err(err) if errno_of(&err) == Errno::ECONNREFUSED => {
                if !self.bound_sockets().is_empty() {
                    Ok(Probe::Held(Holder::unknown()))
                } else {
                    Ok(Probe::Free)
                }
            }
            Err(err) => Err(Error::lock(&self.name, "connect", &err)),
        }
    }

    fn held_through(&self) -> Option<Opened> {
        let listener = self.bound_sockets().into_iter().find(|s| s.listening)?;
        Some(Opened::Socket(listener.inode))
    }

    fn wait_for_release(&self, deadline: Option<Instant>) -> Result<Waited, Error> {
        self.watch
            .wait(&self.name, Domain::UNIX, &self.address, deadline)
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
