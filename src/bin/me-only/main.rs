//! me-only: run a command only if no other instance holding the same lock is
//! running.

// The entry point is a C `main`, not std's: see `main` below.
#![cfg_attr(not(test), no_main)]

mod cli;
mod exit;
mod report;
mod run;

// The library's modules, under the names the command's modules use.
use me_only::{error, lock, sys};

use std::io::Write;

use cli::{Cli, Request};
use error::Error;
use exit::ConflictPolicy;

/// The process entry point, in place of the `fn main` that std's runtime
/// would wrap. That runtime, before `main`, ignores SIGPIPE and opens
/// /dev/null on any closed fd 0-2 (state COMMAND would inherit), and reads
/// /proc/self/maps to guard the main thread's stack: about a third of
/// me-only's start-up work, for a process that lives microseconds and execs.
/// std's `args_os` still works: glibc hands argv to std through .init_array.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // exit() also flushes std's stdout, as returning from std's main would.
    std::process::exit(i32::from(me_only()))
}

/// Parses, runs, and maps any error to its exit code and one line on
/// stderr.
#[cfg_attr(test, allow(dead_code))]
fn me_only() -> u8 {
    run::sigpipe::ignore_sigpipe();
    let mut policy = ConflictPolicy::default();
    let result = cli::parse(std::env::args_os()).and_then(|request| match request {
        Request::Done => Ok(0),
        Request::Run(cli) => {
            policy = ConflictPolicy {
                exit_code: cli.conflict_exit_code,
                quiet: cli.quiet,
            };
            run(cli)
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            if exit::is_reported(&err, policy) {
                // One write, so that lines of instances sharing a stderr
                // (a cron log, a journal) never interleave; and a closed or
                // broken stderr must not turn into a panic.
                let _ = std::io::stderr().write_all(exit::line(&err).as_bytes());
            }
            exit::exit_code(&err, policy)
        }
    }
}

/// Takes the lock and runs COMMAND: as me-only itself (exec, returning only
/// on failure), as its child with --fork, or in the background with
/// --detach.
#[cfg_attr(test, allow(dead_code))]
fn run(cli: Cli) -> Result<u8, Error> {
    if cli.verbose || std::env::var_os("RUST_LOG").is_some() {
        init_logging(cli.verbose);
    }
    if let Some(prefix) = &cli.occasional.list {
        let kinds = match cli.backend()? {
            // No backend named: all of this host's.
            lock::Kind::AbstractSocket => vec![
                lock::Kind::AbstractSocket,
                lock::Kind::Tcp,
                lock::Kind::Flock,
            ],
            kind => vec![kind],
        };
        return report::list::report(prefix, &kinds, cli.occasional.json);
    }
    let kind = cli.backend()?;
    if let Some(count) = cli.occasional.slots {
        if cli.detach && cli.occasional.respawn().is_some() {
            // The loop goes on in a process forked from this one, which
            // must then be single-threaded: the slots' watchers may live on.
            return Err(Error::Usage(
                "--detach with --respawn (or --until-*) cannot be used with --slots".into(),
            ));
        }
        let mut slots = lock::slots::all(&cli.lock, &kind, count)?;
        if cli.test {
            return report::test_mode::report_slots(&slots, cli.conflict_exit_code);
        }
        let (taken, fd) =
            lock::slots::acquire_any(&cli.lock, &mut slots, &kind, cli.patience(), !cli.quiet)?;
        let slot = &slots[taken];
        let held = run::launch::Held {
            lock: slot.lock.as_ref(),
            given: &slot.given,
            slot: Some(slot.number),
            fd,
        };
        return start(&cli, held);
    }
    let lock = lock::from_cli(&cli.lock, kind)?;
    if cli.test {
        return report::test_mode::report(lock.as_ref(), cli.conflict_exit_code);
    }
    if let Some(replace) = cli.occasional.replace() {
        run::replace::make_way(lock.as_ref(), replace)?;
    }
    let held = run::launch::Held {
        lock: lock.as_ref(),
        given: &cli.lock,
        slot: None,
        fd: lock::acquire::acquire(lock.as_ref(), cli.patience(), !cli.quiet)?,
    };
    start(&cli, held)
}

/// Runs COMMAND with the lock just taken, in the way the command line asks.
#[cfg_attr(test, allow(dead_code))]
fn start(cli: &Cli, held: run::launch::Held) -> Result<u8, Error> {
    let max_time = cli.occasional.max_time();
    if let Some(respawn) = cli.occasional.respawn() {
        if cli.detach {
            return run::detach::respawning(held, &cli.command, max_time, respawn);
        }
        return run::respawn::run(held, &cli.command, max_time, respawn, None);
    }
    // --max-time needs me-only to outlive COMMAND's start, to stop it.
    if cli.fork || max_time.is_some() {
        run::supervise::run(held, &cli.command, max_time)
    } else if cli.detach {
        run::detach::run(held, &cli.command)
    } else {
        Err(run::launch::exec(held, &cli.command))
    }
}

/// Diagnostics go to stderr, and only when asked for: a launch that nobody
/// watches pays nothing for them.
#[cfg_attr(test, allow(dead_code))]
fn init_logging(verbose: bool) {
    let mut builder = env_logger::Builder::new();
    if verbose {
        builder.filter_level(log::LevelFilter::Debug);
    }
    builder
        .parse_env("RUST_LOG")
        .format(|out, record| {
            writeln!(
                out,
                "me-only: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            )
        })
        .init();
}
