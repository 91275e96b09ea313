//! `--list`: the me-only locks held on this host, like lslocks for file
//! locks.
//!
//! The kernel does not mark a lock as me-only's, so the holders say so:
//! every process whose environment has ME_ONLY_LOCK (COMMAND, which me-only
//! became or started) names a lock, which is then looked at as each kind of
//! kernel lock would be by `--test` (an abstract name, a port on that
//! process's user's address, a file: see `lock_file_paths` for a relative
//! one). A lock counts when it is held by that process or by its parent
//! (with --fork, me-only keeps the lock and COMMAND is its child). Not
//! seen: the
//! processes of other users where /proc hides their environment (all but
//! root's own view), a COMMAND that cleared its environment or took another
//! me-only lock inside (its ME_ONLY_LOCK names the inner one), and holders
//! in other pid or network namespaces.
//!
//! A file's shared lock (--shared, flock -s) has many holders: one entry
//! for each that names it.
//!
//! With --etcd, the locks in etcd instead: the oldest key of each name,
//! whose value tells the holder's host and pid (and when it took the lock).

mod output;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::lock::{self, Backend, Holding, Kind};
use crate::run::launch::{ENV_FD, ENV_LOCK};
use crate::sys::procfs;

/// One lock held.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub lock: String,
    pub backend: &'static str,
    /// Held shared (--shared, flock -s), with others.
    pub shared: bool,
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    pub host: String,
    /// How long the holding process has run.
    pub age: Option<Duration>,
    pub command: Vec<String>,
}

/// Prints the locks of `kinds` whose names start with `prefix`, as a table
/// or (`json`) a JSON array. Always exit 0: what cannot be seen is left out.
pub fn report(prefix: &OsStr, kinds: &[Kind], json: bool) -> Result<u8, Error> {
    let entries = match kinds {
        #[cfg(feature = "etcd")]
        [Kind::Etcd(settings)] => held_in_etcd(settings, prefix.as_bytes())?,
        _ => held_locks(kinds, prefix.as_bytes()),
    };
    let text = if json {
        output::json(&entries)
    } else {
        output::table(&entries)
    };
    use std::io::Write;
    // A closed stdout (`| head`) must not turn the answer into a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(0)
}

/// The locks held, found from the processes that name them, one entry per
/// holder (one per lock, but for a file's shared holders), sorted by name.
fn held_locks(kinds: &[Kind], prefix: &[u8]) -> Vec<Entry> {
    let host = this_host();
    let mut holders_of: BTreeMap<(String, &'static str), Vec<Holding>> = BTreeMap::new();
    let mut found: BTreeMap<(String, &'static str, Option<i32>), Entry> = BTreeMap::new();
    for pid in procfs::pids() {
        let Some(named) = procfs::environment_variable(pid, ENV_LOCK) else {
            continue;
        };
        for (backend, lock) in locks_named(pid, OsString::from_vec(named), kinds) {
            if !lock.name().as_bytes().starts_with(prefix) {
                continue;
            }
            // Each lock is looked at once, however many processes name it.
            let holders = holders_of
                .entry((lock.name().to_owned(), backend))
                .or_insert_with(|| lock.holders().unwrap_or_default());
            let held_by_it = |holding: &&Holding| {
                holding
                    .holder
                    .pid
                    .is_some_and(|holder| holder == pid || procfs::parent_pid(pid) == Some(holder))
            };
            let Some(Holding { holder, shared }) = holders.iter().find(held_by_it) else {
                continue;
            };
            let key = (lock.name().to_owned(), backend, holder.pid);
            if found.contains_key(&key) {
                continue;
            }
            let holder_pid = holder.pid.unwrap_or(pid);
            found.insert(
                key,
                Entry {
                    lock: lock.name().to_owned(),
                    backend,
                    shared: *shared,
                    pid: holder.pid,
                    uid: holder.uid.or_else(|| procfs::process_uid(holder_pid)),
                    host: host.clone(),
                    age: procfs::process_age(holder_pid),
                    command: procfs::command_words(holder_pid).unwrap_or_default(),
                },
            );
        }
    }
    found.into_values().collect()
}

/// The locks held in etcd: host and pid from each holder's key; uid and
/// command only for holders on this host.
#[cfg(feature = "etcd")]
fn held_in_etcd(settings: &lock::etcd::Settings, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
    let here = this_host();
    Ok(lock::etcd::held(settings, prefix)?
        .into_iter()
        .map(|listed| {
            let pid_here = listed
                .holder
                .pid
                .filter(|_| listed.holder.host.as_deref() == Some(here.as_str()));
            Entry {
                lock: listed.lock,
                backend: "etcd",
                shared: false,
                pid: listed.holder.pid,
                uid: pid_here.and_then(procfs::process_uid),
                host: listed.holder.host.unwrap_or_default(),
                age: listed.age,
                command: pid_here.and_then(procfs::command_words).unwrap_or_default(),
            }
        })
        .collect())
}

fn this_host() -> String {
    nix::unistd::gethostname()
        .map(|host| host.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The locks of `kinds` that `named`, the ME_ONLY_LOCK of process `pid`,
/// may be: as that process would have meant it (a relative lock file may
/// be one of a few).
fn locks_named(pid: i32, named: OsString, kinds: &[Kind]) -> Vec<(&'static str, Box<dyn Backend>)> {
    let mut locks = Vec::new();
    for kind in kinds {
        let found: Vec<Box<dyn Backend>> = match kind {
            Kind::AbstractSocket => lock::from_cli(&named, Kind::AbstractSocket)
                .into_iter()
                .collect(),
            Kind::Tcp => procfs::process_uid(pid)
                .and_then(|uid| lock::tcp_lock_of_user(&named, uid).ok())
                .into_iter()
                .collect(),
            Kind::Flock | Kind::SharedFlock => lock_file_paths(pid, Path::new(&named))
                .iter()
                .filter_map(|path| lock::from_cli(path.as_os_str(), Kind::Flock).ok())
                .collect(),
            #[cfg(feature = "etcd")]
            Kind::Etcd(_) => Vec::new(),
        };
        locks.extend(found.into_iter().map(|lock| (kind_name(kind), lock)));
    }
    locks
}

/// Where the lock file `path`, named by process `pid`'s ME_ONLY_LOCK, may
/// be. ME_ONLY_LOCK keeps LOCK as given, and a relative path was taken
/// from where me-only started, which COMMAND may since have left (`cd /`):
/// so the file that the lock's own descriptor (ME_ONLY_FD) has open, if it
/// bears that name (and then it alone: `a/../x.lock` from the working
/// directory would list the same lock again under another name).
/// Otherwise the path from the process's working directory and, without
/// ME_ONLY_FD (--fork, where me-only keeps the descriptor and did not
/// move), from its parent's. Which of them the process (or its parent)
/// holds is for the caller to find out.
fn lock_file_paths(pid: i32, path: &Path) -> Vec<PathBuf> {
    if path.is_absolute() {
        return vec![path.to_owned()];
    }
    let fd = procfs::environment_variable(pid, ENV_FD);
    if let Some(open) = fd.as_ref().and_then(|fd| lock_file_open_by(pid, fd, path)) {
        return vec![open];
    }
    let mut paths: Vec<PathBuf> = from_cwd_of(pid, path).into_iter().collect();
    if fd.is_none() {
        paths.extend(procfs::parent_pid(pid).and_then(|parent| from_cwd_of(parent, path)));
    }
    paths.dedup();
    paths
}

/// The file that process `pid` has open on descriptor `fd` (ME_ONLY_FD's
/// value), if it is named as the lock file `path` is: a COMMAND that closed
/// the lock's descriptor may have another file open on that number.
fn lock_file_open_by(pid: i32, fd: &[u8], path: &Path) -> Option<PathBuf> {
    let fd: u32 = std::str::from_utf8(fd).ok()?.parse().ok()?;
    let open = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    // A deleted file's link ends in " (deleted)": no longer the lock's name.
    let same_name =
        open.is_absolute() && path.file_name().is_some() && open.file_name() == path.file_name();
    same_name.then_some(open)
}

/// A relative `path` as process `pid` would open it now.
fn from_cwd_of(pid: i32, path: &Path) -> Option<PathBuf> {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    Some(cwd.join(path))
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::AbstractSocket => "abstract",
        Kind::Tcp => "tcp",
        Kind::Flock | Kind::SharedFlock => "flock",
        #[cfg(feature = "etcd")]
        Kind::Etcd(_) => "etcd",
    }
}
