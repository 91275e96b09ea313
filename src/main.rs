//! me-only: run a command only if no other instance holding the same lock is
//! running.

mod acquire;
mod backend;
mod cli;
mod error;
mod inherited;
mod launch;
#[cfg(test)]
mod man;
mod procfs;
mod supervise;
mod test_mode;

use std::io::Write;
use std::process::ExitCode;

use cli::{Cli, Request};
use error::{ConflictPolicy, Error};

fn main() -> ExitCode {
    let mut policy = ConflictPolicy::default();
    let result = cli::parse(std::env::args_os()).and_then(|request| match request {
        Request::Done => Ok(ExitCode::SUCCESS),
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
            if err.is_reported(policy) {
                // One write, so that lines of instances sharing a stderr
                // (a cron log, a journal) never interleave; and a closed or
                // broken stderr must not turn into a panic.
                let line = format!("me-only: {err}\n");
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            err.exit_code(policy)
        }
    }
}

/// Takes the lock and runs COMMAND: as me-only itself (exec, returning only
/// on failure) or as its child with --fork.
fn run(cli: Cli) -> Result<ExitCode, Error> {
    if cli.verbose || std::env::var_os("RUST_LOG").is_some() {
        init_logging(cli.verbose);
    }
    let lock = backend::from_cli(&cli.lock, cli.tcp)?;
    if cli.test {
        return test_mode::report(lock.as_ref(), cli.conflict_exit_code);
    }
    let fd = acquire::acquire(lock.as_ref(), cli.patience(), !cli.quiet)?;
    if cli.fork {
        supervise::run(lock.name(), &cli.lock, fd, &cli.command)
    } else {
        Err(launch::exec(lock.name(), &cli.lock, fd, &cli.command))
    }
}

/// Diagnostics go to stderr, and only when asked for: a launch that nobody
/// watches pays nothing for them.
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
