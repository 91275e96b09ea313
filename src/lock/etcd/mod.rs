//! `--etcd`: one instance across hosts. LOCK is a name in an etcd cluster;
//! the holder is the oldest key under `LOCK/`, each key tied to its
//! process's lease, the scheme of etcd's own lock service (and so of
//! `etcdctl lock`), which me-only therefore contends with.
//!
//! Without --wait a launch takes the lock in one transaction that creates
//! `LOCK/<lease>` only if no key is under `LOCK/`. A waiter queues behind
//! the keys there, oldest first (queue.rs). Once taken, a keeper process (keeper.rs)
//! renews the lease while the instance runs (COMMAND, and what keeps the
//! descriptor it got as ME_ONLY_FD: holders.rs), revokes it the moment the
//! last of them is gone, and fences them all off if the lease is lost.

mod contest;
pub mod gateway;
mod holders;
mod http;
mod keeper;
pub mod lease;
mod queue;
mod tls;

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

pub use contest::Contest;
use gateway::{CallError, Created, Watched};
pub use gateway::{Gateway, Login};
pub use tls::TlsOptions;

use super::{Attempt, Backend, Holder, Probe, StopRequest, Waited};
use crate::env::ENV_FENCE;
use crate::error::Error;

/// What the command line says about the etcd lock.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gateway: Gateway,
    /// The lease's time to live, in seconds.
    pub ttl: i64,
    /// How long a fenced COMMAND has between SIGTERM and SIGKILL.
    pub kill_after: Duration,
    /// The places of a --slots waiter, one per slot, of which one wins.
    pub contest: Option<std::sync::Arc<Contest>>,
}

impl Settings {
    /// These settings for the waiters of one --slots launch.
    pub fn contending(self) -> Settings {
        Settings {
            contest: Some(Contest::new()),
            ..self
        }
    }

    /// The wait of a --slots launch is over: its places still in line go.
    pub fn end_contest(&self) {
        if let Some(contest) = &self.contest {
            contest.end(&self.gateway);
        }
    }
}

/// The lock, once this process holds it.
#[derive(Debug, Clone)]
pub struct Taken {
    pub lease: i64,
    pub key: Vec<u8>,
    /// The key's create revision: it grows with every new holder.
    pub fence: i64,
    /// When the lease was last granted or renewed: etcd counts its TTL
    /// from a moment after this.
    pub renewed: Instant,
    /// The pid the key's value names: the process that wrote it.
    pub named: i32,
}

pub struct EtcdLock {
    name: String,
    /// The keys of holder and waiters start with this: `LOCK/`.
    prefix: Vec<u8>,
    settings: Settings,
    taken: RefCell<Option<Taken>>,
    /// The key of the holder that --replace asked to stop: the wait in
    /// line for it ends once it has let go, whoever took the lock then;
    /// cleared when that wait ends.
    asked: RefCell<Option<Vec<u8>>>,
    /// Once taken, the read end of the pipe whose write end holds the lock
    /// on this host (ME_ONLY_FD), until the keeper is handed it.
    writers: RefCell<Option<OwnedFd>>,
}

impl EtcdLock {
    pub fn parse(lock: &OsStr, settings: Settings) -> Result<EtcdLock, Error> {
        if lock.is_empty() {
            return Err(Error::Usage("the lock name is empty".into()));
        }
        let mut prefix = lock.as_bytes().to_vec();
        prefix.push(b'/');
        Ok(EtcdLock {
            name: lock.to_string_lossy().into_owned(),
            prefix,
            settings,
            taken: RefCell::new(None),
            asked: RefCell::new(None),
            writers: RefCell::new(None),
        })
    }

    pub fn gateway(&self) -> &Gateway {
        &self.settings.gateway
    }

    fn error(&self, action: &'static str, err: CallError) -> Error {
        // etcd's words for a refusal of auth, and what to do about it.
        let hint = match (&err, self.gateway().user()) {
            (CallError::Refused(message), Some(user)) if message.contains("permission denied") => {
                let prefix = String::from_utf8_lossy(&self.prefix);
                format!(" (user {user} may not use the keys under {prefix})")
            }
            (CallError::Refused(message), None)
                if message.contains("permission denied")
                    || message.contains("user name is empty") =>
            {
                " (etcd has auth on: give --user and --password)".to_owned()
            }
            _ => String::new(),
        };
        let what = format!("cannot {action}: {err}{hint}");
        Error::Etcd {
            lock: self.name.clone(),
            what,
        }
    }

    /// A lease granted now, the key it would hold the lock by, and when it
    /// was asked for (its TTL runs from a moment after): by the request
    /// that got it, not by the call, whose endpoints that gave no answer
    /// may have taken most of a short TTL.
    fn new_lease(&self) -> Result<(i64, Vec<u8>, Instant), Error> {
        let lease = self
            .gateway()
            .grant(self.settings.ttl)
            .map_err(|err| self.place_error("grant a lease", err))?;
        let asked = self.gateway().last_sent();
        if let Some(contest) = &self.settings.contest {
            if !contest.enter(lease) {
                // Another slot's waiter has won: no key on this lease.
                self.give_back(lease);
                return Err(self.taken_by_another());
            }
        }
        Ok((lease, self.our_key(lease), asked))
    }

    /// The end of a wait that another took the lock from under: a place of
    /// a --slots waiter whose other place won, a replacer that another was
    /// ahead of. The caller meets the lock held, as any conflict.
    fn taken_by_another(&self) -> Error {
        Error::Busy {
            lock: self.name.clone(),
            holder: Holder::unknown(),
            waited: None,
        }
    }

    /// The error of a call made to take or wait for the lock; for a place
    /// of a --slots waiter once the contest is over, the loss it is: the
    /// win (or the end of the wait) revoked this place's lease under the
    /// call ("requested lease not found"), which must not end the wait
    /// that was won.
    fn place_error(&self, action: &'static str, err: CallError) -> Error {
        match &self.settings.contest {
            Some(contest) if contest.is_over() => self.taken_by_another(),
            _ => self.error(action, err),
        }
    }

    /// Whether the contest of a --slots waiter is over (a place won, or the
    /// wait ended): a place still in line has lost.
    fn contest_over(&self) -> bool {
        self.settings
            .contest
            .as_ref()
            .is_some_and(|contest| contest.is_over())
    }

    fn our_key(&self, lease: i64) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(format!("{lease:x}").as_bytes());
        key
    }

    fn give_back(&self, lease: i64) {
        if let Err(err) = self.gateway().revoke(lease, gateway::soon()) {
            log::debug!("{}: revoking lease {lease:x}: {err}", self.name);
        }
        if let Some(contest) = &self.settings.contest {
            contest.leave(lease);
        }
    }

    /// The lock is taken, on `lease`: held on this host through the write
    /// end of a new pipe, which COMMAND gets as a kernel lock's descriptor,
    /// while the keeper will watch the read end. Without one, the lease is
    /// given back. Non-blocking: the keeper never reads, and a COMMAND that
    /// writes to ME_ONLY_FD (as to a kernel lock's, where the write fails)
    /// gets EAGAIN once the pipe is full, instead of hanging.
    fn acquired(&self, lease: i64) -> Result<Attempt, Error> {
        let pipe = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .and_then(|(read, write)| {
                let above =
                    |fd| super::above_standard_fds(fd).map_err(|err| crate::error::errno_of(&err));
                Ok((above(read)?, above(write)?))
            });
        match pipe {
            Ok((read, write)) => {
                *self.writers.borrow_mut() = Some(read);
                Ok(Attempt::Acquired(Some(write)))
            }
            Err(errno) => {
                self.give_back(lease);
                Err(Error::lock_errno(
                    &self.name,
                    "create the pipe that holds the lock",
                    errno,
                ))
            }
        }
    }

    /// Whether the lock just taken on `lease` may be kept: always, but for
    /// a --slots waiter whose other slot won first.
    fn may_keep(&self, lease: i64) -> bool {
        match &self.settings.contest {
            Some(contest) => contest.claim(lease, self.gateway()),
            None => true,
        }
    }
}

impl Backend for EtcdLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn try_acquire(&self) -> Result<Attempt, Error> {
        if let Some(lease) = self.taken.borrow().as_ref().map(|taken| taken.lease) {
            // A wait in line took it.
            return self.acquired(lease);
        }
        let (lease, key, asked) = self.new_lease()?;
        match self.create_once_an_exited_holder_let_go(&key, lease) {
            Ok(Created::Ours(_)) if !self.may_keep(lease) => {
                self.give_back(lease);
                Ok(Attempt::Busy)
            }
            Ok(Created::Ours(fence)) => {
                *self.taken.borrow_mut() = Some(Taken {
                    lease,
                    key,
                    fence,
                    renewed: asked,
                    named: std::process::id() as i32,
                });
                self.acquired(lease)
            }
            Ok(Created::Held { .. }) => {
                self.give_back(lease);
                Ok(Attempt::Busy)
            }
            Err(err) => {
                self.give_back(lease);
                Err(self.place_error("take the lock", err))
            }
        }
    }

    fn probe(&self) -> Result<Probe, Error> {
        let first = self
            .gateway()
            .first_under(&self.prefix)
            .map_err(|err| self.error("look up the lock", err))?;
        Ok(match first {
            None => Probe::Free,
            Some(holder) => Probe::Held(parse_holder_value(&holder.value)),
        })
    }

    fn wait_for_release(&self, deadline: Option<Instant>) -> Result<Waited, Error> {
        if let Some(taken) = self.wait_in_line(deadline)? {
            *self.taken.borrow_mut() = Some(taken);
        }
        Ok(Waited::Event)
    }

    fn environment(&self) -> Vec<(&'static str, String)> {
        match &*self.taken.borrow() {
            // COMMAND's fencing token: passed with whatever it writes, the
            // writes of a holder that lost its lease can be told apart.
            Some(taken) => vec![(ENV_FENCE, taken.fence.to_string())],
            None => Vec::new(),
        }
    }

    /// Marks the holder's key (` replaced-by HOST PID` appended to its
    /// value, on its own lease): its keeper sees that at its next renewal,
    /// stops COMMAND as it would on a lost lease, and lets go. Up to the
    /// holder's TTL, then --kill-after, then a little for the calls.
    fn ask_holder_to_stop(
        &self,
        older_than: Option<Duration>,
    ) -> Option<Result<StopRequest, Error>> {
        Some(self.mark_holder(older_than))
    }

    fn limit_calls_to(&self, deadline: Option<Instant>) {
        self.gateway().limit_calls_to(deadline);
    }

    fn let_go(&self) {
        if let Some(taken) = self.taken.borrow_mut().take() {
            self.give_back(taken.lease);
        }
    }

    /// The lease renewed now if taking the lock took long (see
    /// renewed_for_the_keeper), or given back and an error.
    fn make_keepable(&self) -> Result<(), Error> {
        let Some(taken) = self.taken.borrow().clone() else {
            return Ok(());
        };
        let renewed = self.renewed_for_the_keeper(&taken).inspect_err(|_| {
            self.give_back(taken.lease);
        })?;
        if let Some(taken) = self.taken.borrow_mut().as_mut() {
            taken.renewed = renewed;
        }
        Ok(())
    }

    fn hand_over(&self, holder: i32) -> Result<(), Error> {
        self.make_keepable()?;
        let Some(taken) = self.taken.borrow().clone() else {
            return Ok(());
        };
        let renewed = taken.renewed;
        // Resolved now: a renewal must fit its deadline, and a name lookup
        // cannot be bounded.
        let settings = Settings {
            gateway: self.gateway().resolved(),
            ..self.settings.clone()
        };
        let watch = keeper::Watch {
            lock: self.name.clone(),
            settings,
            lease: taken.lease,
            key: taken.key.clone(),
            renewed,
            holder,
        };
        // Taken with the lock: none only if handed over already (EBADF).
        let writers = self.writers.take().ok_or(nix::errno::Errno::EBADF);
        writers
            .and_then(|writers| keeper::start(watch, writers))
            .map_err(|err| {
                self.give_back(taken.lease);
                Error::lock_errno(&self.name, "start the lease keeper", err)
            })?;
        self.name_as_holder(&taken, holder);
        Ok(())
    }
}

impl EtcdLock {
    /// The key names `holder` from now on, where another process took the
    /// lock for it (--detach's COMMAND, a detached --respawn loop): one
    /// that exits at once, whose pid --test and conflicts would name (and
    /// wait a second for, as for a holder gone). Only if the key is still
    /// as written: a --replace mark put meanwhile stays. A message's
    /// concern only: a failure is logged, not an error.
    fn name_as_holder(&self, taken: &Taken, holder: i32) {
        // Named already (exec, --fork): no call, on every launch's path.
        if taken.named == holder {
            return;
        }
        let Ok(Some(kv)) = self.gateway().get(&taken.key, gateway::soon()) else {
            return;
        };
        if kv.lease != taken.lease
            || is_marked(&kv.value)
            || parse_holder_value(&kv.value).pid == Some(holder)
        {
            return;
        }
        let text = String::from_utf8_lossy(&kv.value).into_owned();
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let holder = holder.to_string();
        if words.len() < 2 {
            return;
        }
        words[1] = &holder;
        if let Err(err) = self
            .gateway()
            .rewrite_unchanged(&kv, words.join(" ").as_bytes())
        {
            log::debug!("{}: naming pid {holder} in the key: {err}", self.name);
        }
    }

    /// The lock just taken, for a holder that keeps its lease itself (the
    /// library's, from a thread) rather than through the keeper process:
    /// renewed now if taking it took long (see make_keepable), and no
    /// longer this lock's to give back. None if not taken.
    pub fn keep_lease_yourself(&self) -> Result<Option<Taken>, Error> {
        self.make_keepable()?;
        // No pipe holds the lock on this host: the caller's guard does.
        self.writers.take();
        Ok(self.taken.take())
    }

    /// Creates the lock's key on `lease` if no key holds the lock; but a
    /// holder whose COMMAND has exited on this host is waited for, up to
    /// EXITED_HOLDER_WAIT: its keeper is revoking its lease (a few ms after
    /// the exit, more on a loaded host), and `me-only ...; me-only ...`
    /// must not be refused by a pid that is gone. A holder that runs, or
    /// runs on another host, is told at once, with no call more.
    fn create_once_an_exited_holder_let_go(
        &self,
        key: &[u8],
        lease: i64,
    ) -> Result<Created, CallError> {
        let until = Instant::now() + EXITED_HOLDER_WAIT;
        loop {
            let created =
                self.gateway()
                    .create_if_no_holder(&self.prefix, key, &holder_value(), lease)?;
            let Created::Held { holder, read_at } = &created else {
                return Ok(created);
            };
            let Some(pid) = exited_here(&holder.value) else {
                return Ok(created);
            };
            log::debug!(
                "{}: its holder, pid {pid}, is gone: waiting for its key to go",
                self.name
            );
            if self.gateway().watch(&[&holder.key], *read_at, until)? == Watched::Quiet {
                return Ok(created);
            }
        }
    }

    /// When the lease was last renewed, as the keeper takes it over: renewed
    /// once more now if taking the lock took more than a renewal period of
    /// the TTL (a slow or silent endpoint, a follower that held a request
    /// through a leader election), so that COMMAND never starts on a lease
    /// its keeper cannot keep; an error if it cannot be.
    fn renewed_for_the_keeper(&self, taken: &Taken) -> Result<Instant, Error> {
        let ttl = lease::ttl_duration(self.settings.ttl);
        let period = lease::renewal_period(self.settings.ttl);
        if taken.renewed.elapsed() < period {
            return Ok(taken.renewed);
        }
        let cannot_keep = |why: String| Error::Etcd {
            lock: self.name.clone(),
            what: format!("cannot keep the lease: {why}"),
        };
        let lost_at = lease::lost_at(taken.renewed, ttl);
        if Instant::now() >= lost_at {
            return Err(cannot_keep(format!(
                "taking the lock took {:.1} s of its TTL ({} s)",
                taken.renewed.elapsed().as_secs_f64(),
                self.settings.ttl
            )));
        }
        match self.gateway().keep_alive(taken.lease, lost_at) {
            Ok(0) => Err(cannot_keep("it expired while the lock was taken".into())),
            Ok(_) if self.gateway().last_sent().elapsed() < period => {
                Ok(self.gateway().last_sent())
            }
            Ok(_) => Err(cannot_keep(format!(
                "etcd took {:.1} s to renew it (TTL {} s)",
                self.gateway().last_sent().elapsed().as_secs_f64(),
                self.settings.ttl
            ))),
            Err(err) => Err(cannot_keep(err.to_string())),
        }
    }

    fn mark_holder(&self, older_than: Option<Duration>) -> Result<StopRequest, Error> {
        for _ in 0..MARK_ATTEMPTS {
            let Some(holder) = self
                .gateway()
                .first_under(&self.prefix)
                .map_err(|err| self.error("look up the lock", err))?
            else {
                return Ok(StopRequest::Free);
            };
            if let Some(older_than) = older_than {
                if holder_age(&holder.value).is_none_or(|age| age < older_than) {
                    return Ok(StopRequest::Younger);
                }
            }
            let mut marked = holder.value.clone();
            if !is_marked(&marked) {
                marked.extend_from_slice(REPLACED_BY);
                marked.extend_from_slice(&host_and_pid());
            }
            let done = self
                .gateway()
                .mark_holder(&holder, &marked)
                .map_err(|err| self.error("ask the holder to stop", err))?;
            if !done {
                // It let go, or another took its place, meanwhile.
                continue;
            }
            let ttl = self
                .gateway()
                .granted_ttl(holder.lease)
                .map_err(|err| self.error("look up the holder's lease", err))?;
            let ttl = Duration::from_secs(ttl.max(self.settings.ttl).max(1) as u64);
            *self.asked.borrow_mut() = Some(holder.key.clone());
            return Ok(StopRequest::Sent {
                holder: parse_holder_value(&holder.value),
                // Saturated: a --kill-after near the largest Duration is a
                // wait without end (see deadline.rs), not an overflow.
                within: (ttl + CALLS_ALLOWANCE).saturating_add(self.settings.kill_after),
            });
        }
        Ok(StopRequest::Free)
    }
}

/// A lock held in etcd, as --list shows it.
pub struct Listed {
    pub lock: String,
    pub holder: Holder,
    /// Since it was taken, where the holder's key says.
    pub age: Option<Duration>,
}

/// The locks whose names start with `prefix` and their holders: of the lock
/// keys (`NAME/<lease in hex>`, me-only's and etcdctl lock's) the oldest
/// of each name.
pub fn held(settings: &Settings, prefix: &[u8]) -> Result<Vec<Listed>, Error> {
    let cannot_read = |err: CallError| Error::Etcd {
        lock: "--list".to_owned(),
        what: format!("cannot read the locks in etcd: {err}"),
    };
    let gateway = &settings.gateway;
    // Keys alone: the values of other programs' keys may be of any size.
    let keys = gateway.keys_starting_with(prefix).map_err(cannot_read)?;
    let mut listed: Vec<Listed> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Oldest first: the first key of a name is its holder.
    for kv in keys {
        let Some(split) = kv.key.iter().rposition(|&byte| byte == b'/') else {
            continue;
        };
        let (name, lease) = (&kv.key[..split], &kv.key[split + 1..]);
        // `jobs/` finds the key `jobs/<lease>` of the lock `jobs`, whose
        // name does not start with it.
        let is_lock_key = !lease.is_empty()
            && lease.iter().all(u8::is_ascii_hexdigit)
            && name.starts_with(prefix);
        let name = String::from_utf8_lossy(name).into_owned();
        if !is_lock_key || seen.contains(&name) {
            continue;
        }
        // A holder that let go since the keys were read leaves its place
        // to the next key of the name, if any.
        let Some(holder) = gateway.get(&kv.key, gateway::soon()).map_err(cannot_read)? else {
            continue;
        };
        seen.insert(name.clone());
        listed.push(Listed {
            lock: name,
            holder: parse_holder_value(&holder.value),
            age: holder_age(&holder.value),
        });
    }
    Ok(listed)
}

/// How long a launch waits for the key of a holder whose COMMAND exited on
/// this host to go: its keeper revokes the lease at once, within a few
/// ms; one that does not is gone too, and its lease runs out in its TTL.
const EXITED_HOLDER_WAIT: Duration = Duration::from_secs(1);

/// The pid that a holder's key `value` names, if it names this host and
/// that pid is gone here. A pid that another pid namespace of this host
/// runs looks gone too: that costs its launch the wait, never the lock.
fn exited_here(value: &[u8]) -> Option<i32> {
    let holder = parse_holder_value(value);
    let pid = holder.pid.filter(|&pid| pid > 0)?;
    let host = nix::unistd::gethostname().ok()?;
    if holder.host.as_deref() != host.to_str() {
        return None;
    }
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
    (alive == Err(nix::errno::Errno::ESRCH)).then_some(pid)
}

/// How many times --replace looks for a holder that keeps changing.
const MARK_ATTEMPTS: usize = 3;

/// Time for the stopped holder's keeper to revoke, and for the queue to
/// notice, beyond its TTL and --kill-after.
const CALLS_ALLOWANCE: Duration = Duration::from_secs(5);

/// What --replace appends to the holder's key's value, followed by its own
/// host and pid; what the holder's keeper looks for.
const REPLACED_BY: &[u8] = b" replaced-by ";

/// Whether a key's value says its holder is to stop (--replace).
pub fn is_marked(value: &[u8]) -> bool {
    value
        .windows(REPLACED_BY.len())
        .any(|window| window == REPLACED_BY)
}

/// `hostname pid started`: the key's value, for --test, conflict messages
/// and --replace-older (`started`: seconds since the epoch).
fn holder_value() -> Vec<u8> {
    let started = since_epoch().map_or(0, |since| since.as_secs());
    let mut value = host_and_pid();
    value.extend_from_slice(format!(" {started}").as_bytes());
    value
}

fn host_and_pid() -> Vec<u8> {
    let host = nix::unistd::gethostname().unwrap_or_default();
    format!("{} {}", host.to_string_lossy(), std::process::id()).into_bytes()
}

/// How long ago the holder took the lock, from its key's value (by the
/// clocks of both hosts); None where the value does not say (etcdctl's, an
/// older me-only's).
fn holder_age(value: &[u8]) -> Option<Duration> {
    let text = String::from_utf8_lossy(value);
    let started: u64 = text.split_whitespace().nth(2)?.parse().ok()?;
    Some(since_epoch()?.saturating_sub(Duration::from_secs(started)))
}

/// This host's clock, as the holder's start is written in its key.
fn since_epoch() -> Option<Duration> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
}

fn parse_holder_value(value: &[u8]) -> Holder {
    let text = String::from_utf8_lossy(value);
    let mut words = text.split_whitespace();
    let host = words.next().map(str::to_owned);
    let pid = words.next().and_then(|pid| pid.parse().ok());
    Holder {
        pid,
        uid: None,
        host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_names_host_and_pid() {
        assert_eq!(
            parse_holder_value(b"web-1 4242"),
            Holder {
                pid: Some(4242),
                uid: None,
                host: Some("web-1".into())
            }
        );
        assert_eq!(parse_holder_value(b""), Holder::unknown());
    }
}
