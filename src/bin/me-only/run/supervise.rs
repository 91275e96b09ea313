//! `--fork`: me-only keeps the lock and runs COMMAND as its child, for
//! commands that close every descriptor they inherit but stay in the
//! foreground. The lock lives exactly as long as me-only, which lives as
//! long as its child, and the child no longer than me-only. With
//! --max-time, the supervisor also stops the child, and all it started,
//! once its time is up.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use log::debug;
use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::os::fd::AsFd;

use crate::cli::MaxTime;
use crate::error::{Error, errno_of};
use crate::exit::EXIT_MAX_TIME;
use crate::run::launch::{self, Held, exec_error};
use crate::sys::deadline;
use crate::sys::poll_time;
use crate::sys::procfs;
use crate::sys::signals;
use crate::sys::tree::{DescriptorLimit, Tree};

/// The signals a supervisor passes on, as util-linux flock and tini do.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The signals that end a --respawn loop, as they would end a shell's.
const ENDING: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// A signal the kernel generated (a terminal's ^C, ^\\, hang-up, resize) went
/// to the whole foreground process group, the child included: passing it on
/// would deliver it twice.
const SI_KERNEL: i32 = 0x80;

/// Runs COMMAND as a child while holding the lock; returns its status as
/// me-only's exit code, or 124 when `max_time` ran out and it was stopped.
pub fn run(held: Held, command: &[OsString], max_time: Option<MaxTime>) -> Result<u8, Error> {
    let mut supervisor = Supervisor::start(held, command, max_time)?;
    let ended = supervisor.run_once()?;
    Ok(supervisor.finish(&ended))
}

/// me-only holding the lock, ready to run COMMAND as its child, once or
/// (--respawn) again and again.
pub struct Supervisor<'a> {
    held: Held<'a>,
    program: &'a OsStr,
    /// COMMAND as each run starts it.
    child: Command,
    signals: SignalFd,
    max_time: Option<MaxTime>,
    /// When the first run's --max-time counts from: the moment the lock
    /// was held. Later runs count from their own start.
    locked_at: Option<Instant>,
    /// Children me-only had before COMMAND first started: not COMMAND's.
    adopted: Vec<i32>,
    /// Written to (a byte) once the next run has started, then closed.
    started: Option<OwnedFd>,
    /// The signals that end a --respawn loop: ENDING, but for those
    /// me-only was started with ignored.
    ending: Vec<Signal>,
}

/// How a run ended.
pub struct Ended {
    pub status: ExitStatus,
    /// Stopped by --max-time before it had exited.
    pub capped: bool,
    /// TERM, INT or HUP came to me-only meanwhile: run nothing more.
    pub stop: Option<Signal>,
}

impl Ended {
    /// The run's status as an exit code: 124 when --max-time stopped it,
    /// 128+N when signal N killed it.
    pub fn exit_code(&self) -> u8 {
        if self.capped {
            EXIT_MAX_TIME
        } else {
            exit_code(self.status)
        }
    }
}

impl<'a> Supervisor<'a> {
    /// Takes the signals into a signalfd and keeps the lock in me-only.
    pub fn start(
        held: Held<'a>,
        command: &'a [OsString],
        max_time: Option<MaxTime>,
    ) -> Result<Supervisor<'a>, Error> {
        // Counted from the moment the lock is held, which is now.
        let locked_at = Some(Instant::now());
        let lock_name = held.name();
        let system_error = |action, errno| Error::lock_errno(lock_name, action, errno);
        // Signals are taken from a signalfd, in order and without handlers, so
        // no waitpid is ever interrupted and no SIGCHLD is lost.
        let mut watched = SigSet::empty();
        FORWARDED.iter().for_each(|&signal| watched.add(signal));
        // Those me-only was started with ignored (nohup's HUP, the INT and
        // QUIT of a script's `job &`) are still passed on (a COMMAND may
        // handle them: a daemon reloading on HUP), but do not end a
        // --respawn loop, as they would not end a shell's `while` loop.
        let ending: Vec<Signal> = ENDING
            .into_iter()
            .filter(|&signal| !signals::is_ignored(signal))
            .collect();
        watched.add(Signal::SIGCHLD);
        let mut original_mask = SigSet::empty();
        sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&watched),
            Some(&mut original_mask),
        )
        .map_err(|errno| system_error("block signals", errno))?;
        // An ignored SIGCHLD would reap the child before we could see its status.
        let original_sigchld = signals::set_default(Signal::SIGCHLD)
            .map_err(|errno| system_error("reset SIGCHLD", errno))?;
        let signals = SignalFd::with_flags(&watched, SfdFlags::SFD_CLOEXEC)
            .map_err(|errno| system_error("create a signalfd", errno))?;

        // me-only keeps the lock (and COMMAND shares its descriptor, below).
        held.lock.hand_over(std::process::id() as i32)?;
        // What COMMAND leaves running when it exits (`job &`) is still the
        // instance: as a child subreaper, me-only gets it back as its child,
        // keeps the lock until it is gone too, and stops it with the rest at
        // --max-time. After hand_over, whose etcd keeper must not come back.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|errno| system_error("become a child subreaper", errno))?;
        // Children me-only has before COMMAND starts are not COMMAND's: those
        // of the program that exec'd me-only, or an etcd keeper that came back
        // to it (me-only is pid 1, or inherited the subreaper flag). Neither
        // waited for nor stopped.
        let adopted = procfs::children(std::process::id() as i32);
        let mut child = launch::child(command, &held, original_mask);
        // COMMAND and what it starts inherit the lock as well: should me-only
        // be killed (kill -9, the OOM killer), COMMAND dies with it (its death
        // signal) but what it left running holds the lock until it is gone,
        // instead of running beside the next instance.
        launch::share_with(&mut child, &held)?;
        let supervisor = nix::unistd::getpid();
        // SAFETY: sigaction, prctl and getppid are async-signal-safe.
        unsafe {
            child.pre_exec(move || {
                signals::restore(Signal::SIGCHLD, &original_sigchld)?;
                die_with(supervisor)
            });
        }
        Ok(Supervisor {
            held,
            program: &command[0],
            child,
            signals,
            max_time,
            locked_at,
            adopted,
            started: None,
            ending,
        })
    }

    /// Writes a byte to `started` once the next run has started.
    pub fn tell_when_started(&mut self, started: Option<OwnedFd>) {
        self.started = started;
    }

    /// Runs COMMAND to its end, and the end of all it left running.
    pub fn run_once(&mut self) -> Result<Ended, Error> {
        let lock_name = self.held.name();
        // A limit of 0 (timeout(1)'s convention) or past what the clock can
        // count to is no limit.
        let counted_from = self.locked_at.take().unwrap_or_else(Instant::now);
        let cap = self.max_time.and_then(|max_time| {
            if max_time.limit.is_zero() {
                return None;
            }
            Some(Cap {
                deadline: counted_from.checked_add(max_time.limit)?,
                max_time,
            })
        });
        let mut child = self
            .child
            .spawn()
            .map_err(|err| exec_error(lock_name, self.program, errno_of(&err)))?;
        if let Some(started) = self.started.take() {
            let _ = nix::unistd::write(&started, &[1]);
        }
        // A tree to stop holds a pidfd for each of its processes; COMMAND,
        // started, keeps the limit it was given (and so does the next run).
        let _raised = DescriptorLimit::raise();
        debug!(
            "{lock_name}: lock held {} by me-only; child pid {}",
            self.held.whereabouts(),
            child.id()
        );
        supervise(
            &mut child,
            &self.signals,
            cap,
            &mut self.adopted,
            &self.ending,
        )
        .map_err(|errno| Error::lock_errno(lock_name, "supervise the command", errno))
    }

    /// Waits `delay` between runs, or until TERM, INT or HUP comes, which
    /// it returns: a timed wait on the signalfd, which costs no CPU.
    pub fn back_off(&mut self, delay: Duration) -> Result<Option<Signal>, Error> {
        let lock_name = self.held.name();
        let system_error = |errno| Error::lock_errno(lock_name, "wait to run again", errno);
        // None: a back-off past what the clock counts to never ends.
        let deadline = deadline::after(delay);
        loop {
            // Out of time, the look does not wait but still reads what came
            // meanwhile (a TERM sent as the back-off ends must not be
            // answered with a run); then the next run may start, if the
            // lock is still kept.
            let readable = match deadline {
                Some(deadline) => readable_before(&self.signals, deadline),
                None => Ok(true),
            };
            if !readable.map_err(system_error)? {
                return self.ensure_lock_kept().map(|()| None);
            }
            let signal = match self.signals.read_signal() {
                Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
                Ok(None) | Err(Errno::EINTR) => None,
                Err(errno) => return Err(system_error(errno)),
            };
            match signal {
                Some(Signal::SIGCHLD) => {
                    // Only children that were not COMMAND's can be left.
                    let mut none = None;
                    reap(Pid::from_raw(0), &mut none, &mut self.adopted).map_err(system_error)?;
                }
                Some(signal) if self.ending.contains(&signal) => return Ok(Some(signal)),
                // Nothing runs to pass it on to.
                _ => {}
            }
        }
    }

    /// An error, which ends the loop, where the lock is no longer held
    /// through its descriptor: an etcd lock's is a pipe to the keeper,
    /// which is gone once the lease is (a hang-up, POLLERR on the write
    /// end); a kernel lock's is held as long as it is open.
    pub fn ensure_lock_kept(&self) -> Result<(), Error> {
        let Some(fd) = &self.held.fd else {
            return Ok(());
        };
        let mut kept = [PollFd::new(fd.as_fd(), PollFlags::empty())];
        let hung_up = matches!(poll(&mut kept, PollTimeout::ZERO), Ok(1) if kept[0]
            .revents()
            .is_some_and(|events| events.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)));
        match hung_up {
            false => Ok(()),
            true => Err(Error::Lock {
                lock: self.held.name().to_owned(),
                action: "keep the lock between runs (its keeper is gone)",
                errno: Errno::EPIPE,
            }),
        }
    }

    /// Lets the lock go and returns the run's exit code; dies of the
    /// signal that killed it, as exec mode would have.
    pub fn finish(self, ended: &Ended) -> u8 {
        drop(self.held.fd);
        if ended.capped {
            debug!("stopped after --max-time: {}", ended.status);
        } else if let Some(signal) = ended.status.signal() {
            die_of(signal);
        }
        ended.exit_code()
    }
}

/// Dies of the signal that killed the child, as exec mode would have, so
/// that the caller sees it: a shell stops a loop when its job died of ^C,
/// not when it exited 130. A core-dumping signal dumps no core of
/// me-only's: the core, if any, was the child's. Returns if the signal
/// does not kill (it cannot, having killed the child).
pub fn die_of(signal: i32) {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let Ok(signal) = Signal::try_from(signal) else {
        return;
    };
    let _ = signals::set_default(signal);
    let _ = nix::sys::signal::raise(signal);
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
}

/// In the child: be killed when the supervisor dies, however it dies
/// (SIGKILL, the OOM killer), for the lock dies with it. The kernel sends
/// the signal when the thread that forked the child exits; me-only forks
/// from its main thread, which lives as long as the process. It sends it
/// after closing the supervisor's descriptors, so the lock is free a few
/// microseconds before the child is marked for death; but then it runs no
/// more of its own code, while a new holder has still to start its
/// COMMAND. A supervisor already dead is seen as a new parent.
fn die_with(supervisor: Pid) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() != supervisor {
        // SAFETY: _exit is async-signal-safe; nothing is left to clean up.
        unsafe { libc::_exit(libc::EXIT_FAILURE) };
    }
    Ok(())
}

/// When --max-time runs out.
#[derive(Clone, Copy)]
struct Cap {
    deadline: Instant,
    max_time: MaxTime,
}

/// Forwards signals to the child until it and every process it left
/// behind have exited, and stops them all if `cap` runs out first; the
/// child's status, and whether it was capped before it had exited (a
/// child that ended in time tells its own status, even where what it left
/// running had to be stopped). `adopted`: children that are not the
/// child's.
fn supervise(
    child: &mut Child,
    signals: &SignalFd,
    mut cap: Option<Cap>,
    adopted: &mut Vec<i32>,
    ending: &[Signal],
) -> Result<Ended, Errno> {
    let pid = Pid::from_raw(child.id() as i32);
    // A terminal's hang-up goes to its session leader alone (the rest of
    // the session hears of it only when the leader exits): when me-only
    // leads the session (ssh -t host me-only --fork ...), the child has
    // not had it and must.
    let leads_session = nix::unistd::getsid(None).is_ok_and(|sid| sid == nix::unistd::getpid());
    let mut capped = false;
    let mut status = None;
    let mut stop = None;
    loop {
        if let Some(Cap { deadline, max_time }) = cap {
            if !readable_before(signals, deadline)? {
                debug!("--max-time is up: stopping {pid} and what it started");
                cap = None;
                capped = status.is_none();
                Tree::freeze_descendants(adopted).terminate(max_time.signal, max_time.kill_after);
                continue;
            }
        }
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        };
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if signal == Signal::SIGCHLD {
            // Also sent when a child stops or continues.
            let children_left = reap(pid, &mut status, adopted)?;
            match status {
                Some(status) if !children_left => {
                    return Ok(Ended {
                        status,
                        capped,
                        stop,
                    });
                }
                _ => continue,
            }
        }
        if ending.contains(&signal) {
            // Even one the child had from the terminal: a ^C must not be
            // answered with another run.
            stop = Some(signal);
        }
        let child_had_it =
            info.ssi_code == SI_KERNEL && !(signal == Signal::SIGHUP && leads_session);
        if child_had_it {
            continue;
        }
        if status.is_none() {
            debug!("forwarding {signal} to {pid}");
            // The child may have exited already; its SIGCHLD is on the way.
            let _ = nix::sys::signal::kill(pid, signal);
        } else {
            debug!("forwarding {signal} to what the child left running");
            Tree::descendants(adopted).signal(signal as i32);
        }
    }
}

/// Reaps every child that has exited: COMMAND (`command`), whose status it
/// records, and the processes it left behind, which came back to me-only
/// as their subreaper. Whether any child is left that is not `adopted`
/// (from which those reaped are taken out: their pids may be given again).
fn reap(
    command: Pid,
    status: &mut Option<ExitStatus>,
    adopted: &mut Vec<i32>,
) -> Result<bool, Errno> {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes the status into `raw`, ours.
        let reaped = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        match Errno::result(reaped) {
            Ok(0) => break,
            Ok(reaped) if reaped == command.as_raw() => *status = Some(ExitStatus::from_raw(raw)),
            Ok(reaped) => adopted.retain(|&pid| pid != reaped),
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => return Ok(false),
            Err(errno) => return Err(errno),
        }
    }
    // Some child is left; only where some were adopted must /proc say
    // whether it is one of them.
    if adopted.is_empty() {
        return Ok(true);
    }
    let me = std::process::id() as i32;
    Ok(procfs::children(me)
        .iter()
        .any(|child| !adopted.contains(child)))
}

/// Whether `signals` has a signal to read before `deadline`.
fn readable_before(signals: &SignalFd, deadline: Instant) -> Result<bool, Errno> {
    let mut readable = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    match poll(&mut readable, poll_time::until(Some(deadline))) {
        Ok(0) => Ok(Instant::now() < deadline),
        Ok(_) | Err(Errno::EINTR) => Ok(true),
        Err(errno) => Err(errno),
    }
}

/// The child's exit code, or 128+N when signal N killed it, as a shell does.
fn exit_code(status: ExitStatus) -> u8 {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => libc::EXIT_FAILURE,
    };
    code as u8
}
