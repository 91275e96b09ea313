//! The lease keeper: a small process that me-only starts once it holds the
//! etcd lock, before it execs COMMAND. It renews the lease while the
//! instance runs, revokes it the moment the instance is gone (COMMAND,
//! watched through a pidfd, so no pid is ever mistaken for another, and
//! every process that keeps ME_ONLY_FD: holders.rs), and fences the
//! instance off (SIGTERM, then SIGKILL) if the lease is lost: etcd
//! unreachable until the lease ran out, or the key deleted by an operator.
//!
//! It is started through a double fork, so it is not COMMAND's child: a
//! COMMAND that waits for all its children never meets it, and COMMAND keeps
//! me-only's pid. It forks a sentry that fences COMMAND off should the
//! keeper die, and watches the sentry in turn.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, fork};

use crate::sys::pidfd::pidfd_open;
use crate::sys::process_title;
use crate::sys::signals;

use super::Settings;
use super::gateway;
use super::holders::Holders;
use super::lease::{Renewer, Step, fencing_margin, lost_at, ttl_duration};

/// What the keeper looks after.
pub struct Watch {
    pub lock: String,
    pub settings: Settings,
    pub lease: i64,
    pub key: Vec<u8>,
    /// When the lease was last granted or renewed.
    pub renewed: Instant,
    /// COMMAND's pid (me-only's own, before exec; with --fork, me-only's).
    pub holder: i32,
}

/// Starts the keeper, which keeps `writers`, the read end of the pipe whose
/// write end holds the lock with COMMAND. Returns once it runs on its own,
/// watching.
pub fn start(watch: Watch, writers: OwnedFd) -> Result<(), Errno> {
    // With SIGCHLD ignored (as a caller may have left it) the kernel reaps
    // children itself, and the wait for the first one fails: the default,
    // for as long as the start takes; COMMAND gets the caller's back.
    let inherited = signals::set_default(Signal::SIGCHLD)?;
    let started = start_with_sigchld_at_default(watch, writers);
    signals::restore(Signal::SIGCHLD, &inherited)?;
    started
}

/// A pipe on which a child says it is ready (a byte) or died first (end of
/// file), closed on exec so that COMMAND never holds either end.
fn ready_pipe() -> Result<(File, File), Errno> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(read), File::from(write)))
}

fn start_with_sigchld_at_default(watch: Watch, writers: OwnedFd) -> Result<(), Errno> {
    let holder = Holders::open(watch.holder, writers)?;
    let (mut ready, ready_write) = ready_pipe()?;
    // SAFETY: me-only is single-threaded here (a waiter's renewal thread has
    // been joined); the children run only their own code.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(holder);
            drop(ready_write);
            if nix::sys::wait::waitpid(child, None)? != WaitStatus::Exited(child, 0) {
                return Err(Errno::EAGAIN);
            }
            // One byte once the keeper watches; end of file if it died first.
            let mut byte = [0];
            match ready.read(&mut byte) {
                Ok(1) => Ok(()),
                _ => Err(Errno::ECHILD),
            }
        }
        ForkResult::Child => {
            // A session of its own: a terminal's ^C or hang-up is for
            // COMMAND, and the keeper acts on COMMAND's exit.
            let _ = nix::unistd::setsid();
            // SAFETY: as above, single-threaded.
            let code = match unsafe { fork() } {
                Ok(ForkResult::Parent { .. }) => 0,
                Ok(ForkResult::Child) => {
                    drop(ready);
                    keep(&watch, holder, ready_write);
                    0
                }
                Err(_) => 1,
            };
            // SAFETY: _exit ends this process without running anything of
            // the parent's (no atexit handlers, no buffered output).
            unsafe { libc::_exit(code) }
        }
    }
}

fn keep(watch: &Watch, holder: Holders, mut ready: File) {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None);
    let Ok(signals) = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC) else {
        return;
    };
    let _ = nix::sys::prctl::set_name(c"me-only-keeper");
    // SAFETY: the keeper, just forked, runs no other thread, and reads no
    // arguments.
    unsafe { process_title::retitle(&["me-only-keeper", &watch.lock]) };
    // A fence holds a pidfd for every process of COMMAND's tree: as many
    // descriptors as the hard limit allows.
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let Ok((sentry, heartbeat)) = start_sentry(watch, &holder) else {
        return;
    };
    if ready.write_all(&[1]).is_err() {
        return;
    }
    drop(ready);
    let [holder_fd, writers_fd] = holder.raw_fds();
    detach_from_inherited(&[
        holder_fd,
        writers_fd,
        signals.as_fd().as_raw_fd(),
        sentry.as_raw_fd(),
        heartbeat.as_raw_fd(),
    ]);
    let gateway = &watch.settings.gateway;
    let mut renewer = Renewer::new(
        &watch.lock,
        watch.lease,
        watch.key.clone(),
        watch.settings.ttl,
        watch.renewed,
    );
    loop {
        let wait = renewer.wake().saturating_duration_since(Instant::now());
        let mut events = [
            holder.poll_fd(),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(sentry.as_fd(), PollFlags::POLLIN),
        ];
        match poll(
            &mut events,
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
        let ready = |event: &PollFd| event.revents().is_some_and(|r| !r.is_empty());
        if (ready(&events[0]) || ready(&events[2])) && holder.are_gone() {
            // The instance is gone: the lock goes at once, not after the
            // TTL. (COMMAND gone, ME_ONLY_FD still kept: it is held on.)
            let _ = gateway.revoke(watch.lease, gateway::soon());
            return;
        }
        let expires = renewer.expires();
        if ready(&events[1]) {
            // Told to stop (a unit being stopped, an operator): the lock
            // goes with the keeper, so COMMAND goes first, or it would run
            // beside the next holder.
            let signal = signals
                .read_signal()
                .ok()
                .flatten()
                .and_then(|info| Signal::try_from(info.ssi_signo as i32).ok())
                .map_or("a signal", Signal::as_str);
            let reason = format!("the lease keeper got {signal}");
            return stand_down_and_fence(heartbeat, watch, &holder, &reason, expires);
        }
        if ready(&events[2]) {
            // The sentry died (the OOM killer, kill -9): with it gone, the
            // keeper's own death would leave COMMAND unfenced.
            let reason = "the lease keeper's sentry died";
            return stand_down_and_fence(heartbeat, watch, &holder, reason, expires);
        }
        match renewer.step(gateway, Instant::now()) {
            Step::Later => {}
            Step::Renewed => beat(&heartbeat, renewer.lost_at()),
            Step::Lost(reason) => {
                return stand_down_and_fence(heartbeat, watch, &holder, &reason, expires);
            }
        }
    }
}

/// Forks the sentry: a second small process that watches the keeper, and
/// fences COMMAND off and gives the lock back if the keeper dies while
/// COMMAND runs (kill -9, the OOM killer), since nothing would then renew
/// the lease nor stop COMMAND when it ran out, or if the keeper misses its
/// own deadline (stopped, frozen in a cgroup, starved of CPU), since the
/// lease then runs out with nobody to fence COMMAND. The keeper watches
/// the sentry likewise, so that either may die alone. Returns the sentry's
/// pidfd and the heartbeat's write end (see `beat`).
fn start_sentry(watch: &Watch, holder: &Holders) -> Result<(OwnedFd, File), Errno> {
    let keeper = pidfd_open(nix::unistd::getpid().as_raw())?;
    let (mut ready, mut ready_write) = ready_pipe()?;
    let (heartbeat, heartbeat_write) = heartbeat_pipe()?;
    // SAFETY: the keeper is single-threaded; the child runs only its own
    // code and leaves by _exit.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(ready_write);
            drop(heartbeat);
            // One byte once the sentry watches, under its own name: only
            // then may COMMAND start.
            let mut byte = [0];
            match ready.read(&mut byte) {
                Ok(1) => Ok((pidfd_open(child.as_raw())?, heartbeat_write)),
                _ => Err(Errno::ECHILD),
            }
        }
        ForkResult::Child => {
            drop(ready);
            drop(heartbeat_write);
            let _ = nix::sys::prctl::set_name(c"me-only-sentry");
            // SAFETY: as the keeper's: the sentry, just forked, runs no
            // other thread, and reads no arguments.
            unsafe { process_title::retitle(&["me-only-sentry", &watch.lock]) };
            let _ = ready_write.write_all(&[1]);
            drop(ready_write);
            let [holder_fd, writers_fd] = holder.raw_fds();
            detach_from_inherited(&[
                holder_fd,
                writers_fd,
                keeper.as_raw_fd(),
                heartbeat.as_raw_fd(),
            ]);
            // The keeper ends only once the instance has, or after fencing
            // it: if some of it still runs, the keeper died or stalled.
            if let Some((reason, expires)) = stand_guard(watch, holder, &keeper, heartbeat) {
                fence(watch, holder, &reason, expires);
            }
            // SAFETY: _exit runs nothing of the parent's.
            unsafe { libc::_exit(0) }
        }
    }
}

/// The sentry's watch: returns when the instance is gone (None), or when
/// the keeper has exited or missed its deadline (no heartbeat by the time
/// it would have fenced COMMAND itself, and a little more) while some of
/// the instance runs: why the keeper failed, and when the lease it kept
/// may run out.
fn stand_guard(
    watch: &Watch,
    holder: &Holders,
    keeper: &OwnedFd,
    heartbeat: File,
) -> Option<(String, Instant)> {
    let ttl = ttl_duration(watch.settings.ttl);
    let margin = fencing_margin(ttl);
    let grace = margin / 4;
    let mut heartbeat = Some(heartbeat);
    let mut deadline = Some(lost_at(watch.renewed, ttl) + grace);
    let mut expires = watch.renewed + ttl;
    loop {
        let wait = deadline.map_or(PollTimeout::NONE, |deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
        });
        let mut events = vec![
            holder.poll_fd(),
            PollFd::new(keeper.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(heartbeat) = &heartbeat {
            events.push(PollFd::new(heartbeat.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut events, wait) {
            Ok(_) | Err(Errno::EINTR) if holder.are_gone() => return None,
            // poll counts in whole milliseconds: it may wake a little early.
            Ok(0) if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                let reason = format!(
                    "the lease keeper stalled: it missed its deadline to renew the lease \
                     (TTL {} s)",
                    watch.settings.ttl
                );
                return Some((reason, expires));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return Some(("the sentry cannot watch the lease keeper".into(), expires)),
        }
        let ready = |event: &PollFd| event.revents().is_some_and(|r| !r.is_empty());
        if ready(&events[1]) {
            return Some(("the lease keeper died".into(), expires));
        }
        if events.get(2).is_some_and(ready) {
            match heartbeat.as_mut().and_then(last_beat) {
                Some(good_for) => {
                    let lost_at = Instant::now() + good_for;
                    (deadline, expires) = (Some(lost_at + grace), lost_at + margin);
                }
                // The keeper stands down: it fences COMMAND itself, or ends.
                None => (heartbeat, deadline) = (None, None),
            }
        }
    }
}

/// The heartbeat from keeper to sentry: non-blocking both ways (a stalled
/// sentry never stops the keeper; the sentry reads what has come), closed
/// on exec.
fn heartbeat_pipe() -> Result<(File, File), Errno> {
    use nix::fcntl::OFlag;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    Ok((File::from(read), File::from(write)))
}

/// Tells the sentry that the lease was renewed and the keeper will fence
/// COMMAND itself by `lost_at`: the milliseconds until then, 8 bytes, one
/// write (atomic on a pipe).
fn beat(heartbeat: &File, lost_at: Instant) {
    let good_for = lost_at
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    let _ = (&*heartbeat).write(&good_for.to_ne_bytes());
}

/// The time the last heartbeat that came says the keeper has; None at the
/// end of the pipe (the keeper stands down, or died).
fn last_beat(heartbeat: &mut File) -> Option<Duration> {
    let mut beats = [0; 8 * 64];
    let mut last = None;
    loop {
        match heartbeat.read(&mut beats) {
            Ok(0) => return None,
            Ok(read) => {
                let beat = beats[..read].chunks_exact(8).next_back()?;
                last = Some(u64::from_ne_bytes(beat.try_into().ok()?));
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            // WouldBlock: all that came is read.
            Err(_) => return Some(Duration::from_millis(last?)),
        }
    }
}

/// The keeper fences COMMAND off: the sentry is told first (the end of
/// the heartbeat) to leave it to the keeper, whose fence outlasts its
/// deadline.
fn stand_down_and_fence(
    heartbeat: File,
    watch: &Watch,
    holder: &Holders,
    reason: &str,
    expires: Instant,
) {
    drop(heartbeat);
    fence(watch, holder, reason, expires);
}

/// Ends the instance: SIGTERM, then SIGKILL to what is still there after
/// --kill-after. Says why on stderr, in one line.
fn fence(watch: &Watch, holder: &Holders, reason: &str, expires: Instant) {
    let ttl = ttl_duration(watch.settings.ttl);
    // Time for the last round (freeze, a walk of /proc for what was
    // started meanwhile, SIGKILL) before the lease may run out.
    let last_round = fencing_margin(ttl) / 4;
    let kill_after = kill_after_before(
        watch.settings.kill_after,
        expires,
        Instant::now(),
        last_round,
    );
    let line = format!(
        "me-only: {}: {reason}; terminating pid {} and its descendants (SIGKILL after {} s)\n",
        crate::error::printable(&watch.lock),
        watch.holder,
        kill_after.as_secs_f64()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    // COMMAND and all it started, and what keeps ME_ONLY_FD: a child that
    // outlived its parent would run beside the next holder.
    holder.stop(kill_after);
    let _ = watch.settings.gateway.revoke(watch.lease, gateway::soon());
}

/// How long a fenced COMMAND has between SIGTERM and SIGKILL: --kill-after,
/// but never so long that the `last_round` of the fence would end past the
/// moment the lease may run out in etcd (`expires`: it is not renewed
/// while COMMAND stops). A COMMAND slow to stop, or a machine slow to run
/// it, would otherwise run on beside the next holder.
fn kill_after_before(
    kill_after: Duration,
    expires: Instant,
    now: Instant,
    last_round: Duration,
) -> Duration {
    let left = expires
        .saturating_duration_since(now)
        .saturating_sub(last_round);
    kill_after.min(left)
}

/// Lets go of every descriptor inherited from me-only's caller but stderr
/// (a pipe someone reads to its end must not wait for the keeper), keeping
/// only its own.
fn detach_from_inherited(keep: &[i32]) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for standard in [0, 1].into_iter().filter(|fd| !keep.contains(fd)) {
            // SAFETY: dup2 onto a standard descriptor the keeper does not use.
            unsafe { libc::dup2(null.as_raw_fd(), standard) };
        }
    }
    // Close 3 and up, around the two kept ones.
    let mut first = 3;
    let mut kept: Vec<i32> = keep.iter().copied().filter(|&fd| fd >= first).collect();
    kept.sort_unstable();
    for last in kept.into_iter().map(|fd| fd - 1).chain([i32::MAX]) {
        if first <= last {
            // SAFETY: close_range takes plain numbers; the descriptors it
            // closes are inherited ones this code does not use.
            unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
        }
        first = last.saturating_add(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigkill_comes_before_the_lease_may_run_out() {
        let now = Instant::now();
        let ten = Duration::from_secs(10);
        let round = Duration::from_millis(200);
        // Time enough: --kill-after as given.
        let expires = now + Duration::from_secs(60);
        assert_eq!(kill_after_before(ten, expires, now, round), ten);
        // 0.7 s left: SIGKILL 0.5 s later, with the last round's 0.2 s to go.
        let expires = now + Duration::from_millis(700);
        assert_eq!(
            kill_after_before(ten, expires, now, round),
            Duration::from_millis(500)
        );
        // Run out already: at once.
        assert_eq!(kill_after_before(ten, now, now, round), Duration::ZERO);
    }
}
