//! The command line: what me-only accepts, and the usage errors it rejects.

use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::error::Error;
use crate::lock::Kind;
use crate::lock::acquire::Patience;

pub mod auto;
#[cfg(feature = "etcd")]
mod etcd;
mod help;
mod occasional;

#[cfg(feature = "etcd")]
use etcd::EtcdOptions;
#[cfg(test)]
pub use occasional::RespawnDelay;
pub use occasional::{MaxTime, OccasionalOptions, Replace, Respawn, Until};

/// The end of `--help`, and the source of the man page's EXIT STATUS,
/// ENVIRONMENT and EXAMPLES sections (see man.rs): headings end in ':',
/// entries are `KEY  description`, continuation lines are indented further.
pub const AFTER_LONG_HELP: &str = "\
EXIT STATUS:
  the command's own  the lock was taken and COMMAND ran (me-only became it; with
                     --fork, me-only dies of the signal that killed COMMAND)
  0                  --test: the lock is free; --detach: COMMAND started
  1                  COMMAND not found, not executable, a directory, or exec
                     failed
  2                  invalid usage: bad arguments, an empty or too long lock
                     name (over 107 bytes), a bad port or address, a bad number
                     (--timeout, -E)
  3                  lock error: the lock could not be set up (socket, bind,
                     listen, a lock file that cannot be opened or is not a
                     regular file, an etcd endpoint that does not answer)
  4                  the lock is held by another instance, or --timeout ran out
                     (-E N changes it, N in 0-255); --test prints the holder's
                     pid on stdout
  124                --max-time ran out: COMMAND was stopped (as timeout(1)
                     says)

ENVIRONMENT:
  ME_ONLY_LOCK            set for COMMAND: the LOCK it holds
  ME_ONLY_FD              set for COMMAND: the descriptor that holds the lock
                          (with --fork, shared with me-only; with --etcd, a
                          pipe's write end that holds the lease here)
  ME_ONLY_SLOT            set for COMMAND with --slots: which slot it holds, 1
                          to N
  ME_ONLY_SHARED          set for COMMAND with --shared: 1 (the lock is shared;
                          me_only::inherited() does not adopt it)
  ME_ONLY_LOCKED_AT       set for COMMAND: when the lock was taken, in seconds
                          since boot (--replace-older's measure)
  ME_ONLY_FENCE           set for COMMAND with --etcd: the lock key's create
                          revision, a fencing token that grows with every holder
  ME_ONLY_ETCD_*          --etcd's settings not given on the command line:
                          ENDPOINTS (for --etcd with none), CACERT, CERT, KEY,
                          USER, PASSWORD, INSECURE_SKIP_TLS_VERIFY (true); then
                          etcdctl's ETCDCTL_* of the same names
  RUST_LOG                diagnostics on stderr (env_logger syntax), as with
                          --verbose

EXAMPLES:
  me-only /tmp/backup /usr/local/bin/backup --full || exit 1
  */5 * * * * me-only -q /run/sync /usr/local/bin/sync       (crontab)
  ExecStart=/usr/bin/me-only /run/myjob /usr/bin/myjob        (systemd unit)
  me-only --wait --timeout 30 /tmp/deploy ./deploy.sh
  pid=$(me-only --test /tmp/backup) || echo \"backup running as $pid\"
  # the daemon keeps the lock:
  me-only /run/daemon /usr/sbin/some-daemon --background
  me-only --fork /run/job /usr/local/bin/job-that-closes-its-fds
  me-only --tcp 127.0.0.1:7000 ./server
  # with flock(1) users:
  me-only --flock /var/lock/backup.lock /usr/local/bin/backup
  # many readers at once, as flock -s; a writer waits for them all:
  me-only --shared --flock /run/lock/db.lock ./report
  me-only --wait --flock /run/lock/db.lock ./migrate
  pid=$(me-only --detach /tmp/worker ./worker) && echo \"worker is $pid\"
  # a run hung an hour is stopped:
  me-only --replace-older 3600 /run/sync /usr/local/bin/sync
  # stopped after an hour, exit 124:
  me-only --max-time 3600 /run/sync /usr/local/bin/sync
  # four at once at most:
  me-only --slots 4 --wait /tmp/encode ./encode \"$file\"
  # the lock named from the command:
  me-only --auto /usr/local/bin/backup --full
  # the locks held, who holds them:
  me-only --list /run/
  me-only --etcd http://10.0.0.5:2379 nightly-report /usr/local/bin/report";

/// --help's headings, in the order the definition first uses them
/// (clap's): the everyday options (-E, -q, -v, -h, -V) stay under clap's
/// own "Options", first.
mod heading {
    pub const LOCK: &str = "Lock";
    pub const WAITING: &str = "Waiting";
    pub const RUNNING: &str = "Running COMMAND";
    pub const REPORTS: &str = "Reports (run nothing)";
    pub const STOPPING: &str = "Stopping other instances";
    #[cfg(feature = "etcd")]
    pub const CLUSTER: &str = "Cluster (etcd)";
}

/// The forms of the command line, for --help's usage.
const USAGE: &str = "me-only [OPTIONS] <LOCK> <COMMAND> [ARGS]...
       me-only --test [OPTIONS] <LOCK>
       me-only --list [OPTIONS] [PREFIX]
       me-only --auto [OPTIONS] <COMMAND> [ARGS]...";

/// Run COMMAND only if no other instance holding LOCK is running.
///
/// The lock is a kernel object: an abstract AF_UNIX socket named LOCK (nothing
/// is created on disk), with --tcp a loopback TCP port, or with --flock a
/// flock(2) lock on the file LOCK. me-only takes it and execs COMMAND, which
/// keeps me-only's pid and holds the lock until it and every process that
/// inherited the lock descriptor are gone. With --etcd the lock is a name in
/// an etcd cluster, for one instance across hosts.
#[derive(Debug, Parser)]
#[command(
    name = "me-only",
    version,
    after_long_help = AFTER_LONG_HELP,
    // The forms, as README and the man page's SYNOPSIS show them: clap's
    // own line (`<LOCK> [COMMAND]...`) would hide that COMMAND is needed
    // but for --test and --list, and that --auto takes no LOCK.
    override_usage = USAGE,
    // Usage errors are reported by main as one line, uncoloured.
    color = clap::ColorChoice::Never,
)]
pub struct Cli {
    /// Lock a loopback TCP port: LOCK is [ADDR:]PORT
    ///
    /// ADDR in 127.0.0.0/8; by default 127.H.L.1, H.L the low two bytes of
    /// the real uid
    #[arg(long, help_heading = heading::LOCK)]
    pub tcp: bool,

    /// Lock the file LOCK with flock(2), as flock(1) does
    ///
    /// It contends with flock(1), and is seen from every network namespace
    /// that shares the file. LOCK is created (mode 0644 less umask) if
    /// missing and never deleted; a symbolic link or anything but a regular
    /// file is refused
    #[arg(long, conflicts_with = "tcp", help_heading = heading::LOCK)]
    pub flock: bool,

    /// Wait for the lock instead of failing when it is held
    #[arg(short, long, help_heading = heading::WAITING)]
    pub wait: bool,

    /// Wait at most SECS, then exit as when held
    ///
    /// Fractions allowed; implies --wait; 0 does not wait
    #[arg(
        long,
        value_name = "SECS",
        value_parser = parse_seconds,
        allow_negative_numbers = true,
        help_heading = heading::WAITING
    )]
    pub timeout: Option<Duration>,

    /// Run COMMAND as a child, me-only keeping the lock
    ///
    /// me-only forwards TERM, INT, HUP, QUIT, USR1, USR2 and WINCH to it,
    /// and exits with its status, or dies of the signal that killed it. The
    /// lock is held until the child and all it left running (even
    /// daemonized) have exited. If me-only is killed, so is the child. For
    /// commands that close all their descriptors
    #[arg(short, long, help_heading = heading::RUNNING)]
    pub fork: bool,

    /// Start COMMAND in the background and print its pid
    ///
    /// It runs in a session of its own with stdin and stdout on /dev/null,
    /// holding the lock; me-only exits 0 once it runs (1 if it could not be
    /// started)
    #[arg(short, long, conflicts_with = "fork", help_heading = heading::RUNNING)]
    pub detach: bool,

    /// Tell whether the lock is held, and by whom
    ///
    /// Run nothing: exit 0 if the lock is free, 4 (or -E) if held, and print
    /// the holder's pid on stdout (with --etcd, HOST PID)
    #[arg(
        short,
        long,
        conflicts_with_all = ["wait", "timeout", "fork", "detach"],
        help_heading = heading::REPORTS
    )]
    pub test: bool,

    /// Exit code when the lock is held
    ///
    /// N in 0-255, instead of 4: -E 0 makes a held lock no failure
    #[arg(
        short = 'E',
        long,
        value_name = "N",
        default_value_t = 4,
        value_parser = parse_exit_code,
        allow_negative_numbers = true
    )]
    pub conflict_exit_code: u8,

    /// Say nothing when the lock is held
    ///
    /// Other errors are still reported
    #[arg(short, long)]
    pub quiet: bool,

    /// Print diagnostics on stderr
    ///
    /// RUST_LOG refines them
    #[arg(short, long)]
    pub verbose: bool,

    /// The lock: a name, a port (--tcp) or a file (--flock)
    ///
    /// An abstract socket name (at most 107 bytes; nothing is created on
    /// disk), with --tcp a port, with --flock a file, with --etcd a name in
    /// etcd
    // -h's usage shows the forms: the arguments are told in --help alone.
    #[arg(value_name = "LOCK", hide_short_help = true)]
    pub lock: OsString,

    /// The command to run and its arguments, passed on untouched
    ///
    /// None with --test
    #[arg(
        value_name = "COMMAND",
        hide_short_help = true,
        required_unless_present = "test",
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,

    /// --etcd and its options, when the command line has them (boxed: a
    /// launch without them carries no room for them).
    #[cfg(feature = "etcd")]
    #[arg(skip)]
    pub etcd: Option<Box<EtcdOptions>>,

    /// --replace, --slots and the like (defined, like the etcd options,
    /// only where the command line has them).
    #[arg(skip)]
    pub occasional: OccasionalOptions,
}

impl Cli {
    pub fn backend(&self) -> Result<Kind, Error> {
        if self.occasional.shared {
            self.check_shared()?;
        }
        #[cfg(feature = "etcd")]
        if let Some(
            options @ EtcdOptions {
                etcd: Some(endpoints),
                ..
            },
        ) = self.etcd.as_deref()
        {
            return options
                .settings(endpoints, &self.lock, self.occasional.kill_after())
                .map(|settings| Kind::Etcd(Box::new(settings)));
        }
        Ok(match (self.tcp, self.flock) {
            (true, _) => Kind::Tcp,
            (_, true) if self.occasional.shared => Kind::SharedFlock,
            (_, true) => Kind::Flock,
            _ => Kind::AbstractSocket,
        })
    }

    /// --shared only where the kernel has a shared form of the lock: a
    /// file's flock(2), as flock -s takes it.
    fn check_shared(&self) -> Result<(), Error> {
        if let Some(refusal) = self.occasional.refusal_of_shared() {
            return Err(Error::Usage(refusal.into()));
        }
        let no_shared_form = |lock: &str| {
            Err(Error::Usage(format!(
                "--shared needs --flock: {lock} has no shared form (--slots N lets N hold it)"
            )))
        };
        #[cfg(feature = "etcd")]
        if self.etcd.as_deref().is_some_and(|etcd| etcd.etcd.is_some()) {
            return no_shared_form("an etcd lock key");
        }
        match (self.tcp, self.flock) {
            (true, _) => no_shared_form("a TCP port"),
            (_, true) => Ok(()),
            _ => no_shared_form("an abstract socket name"),
        }
    }

    pub fn patience(&self) -> Patience {
        match (self.timeout, self.wait) {
            (Some(Duration::ZERO), _) => Patience::None,
            (Some(limit), _) => Patience::For(limit),
            (None, true) => Patience::Forever,
            (None, false) => Patience::None,
        }
    }
}

/// A number of seconds, fractions allowed. One too large for a Duration
/// (about 585 billion years) is refused as such; a smaller one that the
/// clock cannot count to is the caller's to treat as "no end".
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .ok()
        .filter(|seconds: &f64| seconds.is_finite())
        .ok_or_else(|| format!("'{text}' is not a number of seconds"))?;
    if seconds < 0.0 {
        return Err(format!("'{text}' is negative: seconds must be 0 or more"));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("'{text}' is too large a number of seconds"))
}

/// An exit code, 0-255.
fn parse_exit_code(text: &str) -> Result<u8, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not an exit code (0-255)"))
}

/// What the command line asks for.
// Made once and moved a couple of times: boxing Cli would cost every
// launch an allocation to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Request {
    /// Take the lock and run the command.
    Run(Cli),
    /// --help or --version, already printed.
    Done,
}

/// Parses the command line; a usage error becomes one line, not clap's page.
pub fn parse<I>(args: I) -> Result<Request, Error>
where
    I: IntoIterator<Item = OsString>,
{
    let args: Vec<OsString> = args.into_iter().collect();
    if let Some(cli) = plain_launch(&args) {
        return Ok(Request::Run(cli));
    }
    let full = full_command_needed(&args);
    let lockless = |arg: &&OsString| {
        let arg = arg.as_encoded_bytes();
        arg == b"--auto" || arg.starts_with(b"--list")
    };
    if full && args.iter().skip(1).any(|arg| lockless(&arg)) {
        match parse_with(lockless_command(), args.clone(), true) {
            Ok(cli) if cli.occasional.list.is_some() => return listing(cli).map(Request::Run),
            Ok(cli) if cli.occasional.auto && cli.command.is_empty() => {
                return Err(Error::Usage(
                    "--auto needs COMMAND, to name the lock from (try 'me-only --help')".into(),
                ));
            }
            Ok(mut cli) if cli.occasional.auto => {
                cli.lock =
                    crate::cli::auto::lock_name(&cli.command, nix::unistd::getuid().as_raw());
                return Ok(Request::Run(cli));
            }
            Err(err) if err.use_stderr() => return Err(usage_error(&err)),
            // "--auto" was one of COMMAND's words, or help was asked for:
            // the usual definition parses it.
            Ok(_) | Err(_) => {}
        }
    }
    let command = if full { full_command() } else { Cli::command() };
    match parse_with(command, args, full) {
        // --auto after LOCK.
        Ok(cli) if cli.occasional.auto => Err(Error::Usage(
            "--auto names the lock itself: give it before COMMAND, with no LOCK".into(),
        )),
        Ok(cli) => Ok(Request::Run(cli)),
        Err(err) if !err.use_stderr() => {
            // --help or --version: a closed stdout is not worth a complaint.
            let text = help::wrap(&err.render().to_string(), help::width());
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(Request::Done)
        }
        Err(err) => Err(usage_error(&err)),
    }
}

/// `me-only LOCK COMMAND [ARGS]...` with no option before COMMAND, the
/// form of cron lines and ExecStart=, read without clap: building its
/// parser was most of such a launch's work. Once COMMAND begins every word
/// is COMMAND's, so only LOCK and COMMAND must not look like options;
/// LOCK is checked by its backend, as after clap.
fn plain_launch(args: &[OsString]) -> Option<Cli> {
    let [_, lock, command @ ..] = args else {
        return None;
    };
    let plain = |word: &OsString| !word.as_encoded_bytes().starts_with(b"-");
    if !plain(lock) || !command.first().is_some_and(plain) {
        return None;
    }
    Some(Cli {
        tcp: false,
        flock: false,
        wait: false,
        timeout: None,
        fork: false,
        detach: false,
        test: false,
        conflict_exit_code: crate::exit::EXIT_CONFLICT,
        quiet: false,
        verbose: false,
        lock: lock.clone(),
        command: command.to_vec(),
        #[cfg(feature = "etcd")]
        etcd: None,
        occasional: OccasionalOptions::default(),
    })
}

/// The words parsed by `command`, the lean or (`full`) the full definition.
/// They are moved in: clap would copy each word it is lent.
fn parse_with(command: clap::Command, args: Vec<OsString>, full: bool) -> Result<Cli, clap::Error> {
    let mut matches = command.try_get_matches_from(args)?;
    #[allow(unused_mut)]
    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    if full {
        #[cfg(feature = "etcd")]
        {
            cli.etcd = Some(Box::new(EtcdOptions::from_arg_matches_mut(&mut matches)?));
        }
        cli.occasional = OccasionalOptions::from_arg_matches_mut(&mut matches)?;
    }
    Ok(cli)
}

/// --list's PREFIX, after the option (`--list PREFIX`) or after another
/// one (`--list --tcp PREFIX`, where it was taken for COMMAND).
fn listing(mut cli: Cli) -> Result<Cli, Error> {
    let mut words = std::mem::take(&mut cli.command).into_iter();
    match (cli.occasional.list.as_mut(), words.next(), words.next()) {
        (_, None, _) => Ok(cli),
        (Some(prefix), Some(word), None) if prefix.is_empty() => {
            *prefix = word;
            Ok(cli)
        }
        _ => Err(Error::Usage(
            "--list takes a PREFIX at most, no LOCK or COMMAND (try 'me-only --help')".into(),
        )),
    }
}

fn usage_error(err: &clap::Error) -> Error {
    Error::Usage(one_line(&err.to_string()))
}

/// The definition for `--auto` and `--list`, where there is no LOCK: with
/// --auto the first word is COMMAND, and every word after it COMMAND's
/// (with LOCK, the words between LOCK and COMMAND are me-only's); --list
/// takes neither. LOCK becomes a hidden option that no one gives.
fn lockless_command() -> clap::Command {
    full_command()
        .mut_arg("lock", |lock| {
            lock.long("auto-lock")
                .index(None)
                .required(false)
                .default_value("")
                .hide(true)
        })
        .mut_arg("command", |command| command.required_unless_present("list"))
}

/// The whole command line's definition, as --help and the man page show it.
pub fn full_command() -> clap::Command {
    let command = <OccasionalOptions as clap::Args>::augment_args(Cli::command());
    #[cfg(feature = "etcd")]
    let command = <EtcdOptions as clap::Args>::augment_args(command);
    command
}

/// Whether the words may need more than the kernel locks' everyday
/// options: they name an etcd or an occasional option, or ask for help or the
/// version (which must show everything). Any word counts, even one of COMMAND's: the full
/// definition parses every command line the lean one does, the same way.
fn full_command_needed(args: &[OsString]) -> bool {
    const FULL_ONLY: [&str; 23] = [
        "--replace",
        "--respawn",
        "--until-success",
        "--until-failure",
        "--tries",
        "--list",
        "--json",
        "--auto",
        "--max-time",
        "--slots",
        "--shared",
        "--etcd",
        "--ttl",
        "--kill-after",
        "--signal",
        "--cacert",
        "--cert",
        "--key",
        "--insecure-skip-tls-verify",
        "--user",
        "--password",
        "--help",
        "--version",
    ];
    args.iter().skip(1).any(|arg| {
        let arg = arg.as_encoded_bytes();
        // Every word of a plain launch (LOCK, COMMAND) is then compared with
        // no name: each option added to the list would cost it otherwise.
        let long_option = arg.starts_with(b"--");
        let short_cluster = arg.len() > 1 && arg[0] == b'-' && arg[1] != b'-';
        (long_option
            && FULL_ONLY
                .iter()
                .any(|name| arg.starts_with(name.as_bytes())))
            || (short_cluster && arg[1..].iter().any(|&c| c == b'h' || c == b'V'))
    })
}

/// Folds clap's message (which may list missing arguments on later lines and
/// ends with a usage block) into one line.
fn one_line(clap_message: &str) -> String {
    let first_paragraph = clap_message.split("\n\n").next().unwrap_or_default();
    let words: Vec<&str> = first_paragraph.split_whitespace().collect();
    let message = words.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (try 'me-only --help')")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Request, Error> {
        parse(words.iter().map(OsString::from))
    }

    fn run_request(words: &[&str]) -> Cli {
        match parse_words(words) {
            Ok(Request::Run(cli)) => cli,
            other => panic!("{words:?} did not parse to a run: {other:?}"),
        }
    }

    /// What clap's lean definition makes of `words`, the plain form's
    /// reading bypassed (the full one reads COMMAND's words the same).
    fn clap_reading(words: &[&str]) -> Cli {
        let args: Vec<OsString> = words.iter().map(OsString::from).collect();
        parse_with(Cli::command(), args, false).unwrap()
    }

    #[test]
    fn the_plain_form_reads_as_clap_reads_it() {
        for words in [
            &["me-only", "/tmp/a", "ls"][..],
            &["me-only", "backup", "ls", "-l", "--all", "--etcd", "x"],
            &["me-only", "", "true"],
            &["me-only", "a b", "sh", "-c", "echo --help"],
            &["me-only", "lock", "cmd", "--", "-q"],
        ] {
            let plain = plain_launch(&words.iter().map(OsString::from).collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("{words:?} is plain"));
            assert_eq!(
                format!("{plain:?}"),
                format!("{:?}", clap_reading(words)),
                "{words:?}"
            );
        }
    }

    #[test]
    fn an_option_before_command_is_left_to_clap() {
        for words in [
            &["me-only", "-q", "/tmp/a", "ls"][..],
            &["me-only", "/tmp/a", "-q", "ls"],
            &["me-only", "/tmp/a", "--", "ls"],
            &["me-only", "--help"],
            &["me-only", "/tmp/a"],
            &["me-only"],
        ] {
            let args: Vec<OsString> = words.iter().map(OsString::from).collect();
            assert!(plain_launch(&args).is_none(), "{words:?}");
        }
    }

    #[test]
    fn options_after_command_belong_to_the_command() {
        let cli = run_request(&["me-only", "-q", "/tmp/a", "ls", "-q", "--tcp", "-E", "9"]);
        assert!(cli.quiet);
        assert!(!cli.tcp);
        assert_eq!(cli.conflict_exit_code, 4);
        assert_eq!(cli.command, ["ls", "-q", "--tcp", "-E", "9"]);
    }

    #[test]
    fn options_between_lock_and_command_are_me_onlys() {
        let cli = run_request(&["me-only", "/tmp/a", "-v", "-E", "9", "x", "-v"]);
        assert!(cli.verbose);
        assert_eq!(cli.conflict_exit_code, 9);
        assert_eq!(cli.command, ["x", "-v"]);
    }

    #[test]
    fn double_dash_lets_a_command_start_with_a_dash() {
        let cli = run_request(&["me-only", "/tmp/a", "--", "-v", "x"]);
        assert!(!cli.verbose);
        assert_eq!(cli.command, ["-v", "x"]);
    }

    #[test]
    fn double_dash_lets_a_lock_start_with_a_dash() {
        let cli = run_request(&["me-only", "--", "-lock", "true"]);
        assert_eq!(cli.lock, "-lock");
        assert_eq!(cli.command, ["true"]);
    }

    #[test]
    fn timeout_implies_wait_and_zero_means_no_wait() {
        let patience = |words: &[&str]| run_request(words).patience();
        assert_eq!(patience(&["me-only", "/l", "x"]), Patience::None);
        assert_eq!(patience(&["me-only", "-w", "/l", "x"]), Patience::Forever);
        assert_eq!(
            patience(&["me-only", "--timeout", "0.5", "/l", "x"]),
            Patience::For(Duration::from_millis(500))
        );
        assert_eq!(
            patience(&["me-only", "-w", "--timeout", "0", "/l", "x"]),
            Patience::None
        );
    }

    #[test]
    fn bad_timeouts_are_usage_errors() {
        for bad in ["-1", "NaN", "inf", "soon", ""] {
            assert!(
                matches!(
                    parse_words(&["me-only", "--timeout", bad, "/l", "x"]),
                    Err(Error::Usage(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_needs_no_command_and_excludes_fork_and_wait() {
        let cli = run_request(&["me-only", "--test", "/l"]);
        assert!(cli.test && cli.command.is_empty());
        for other in ["--fork", "--wait", "--timeout=1"] {
            let Err(Error::Usage(message)) = parse_words(&["me-only", "-t", other, "/l"]) else {
                panic!("--test with {other} must be refused");
            };
            assert!(message.contains("cannot be used with"), "{message}");
        }
    }

    #[test]
    fn one_backend_and_one_way_to_run() {
        let backend = |words: &[&str]| run_request(words).backend().unwrap();
        assert!(matches!(
            backend(&["me-only", "/l", "x"]),
            Kind::AbstractSocket
        ));
        assert!(matches!(
            backend(&["me-only", "--tcp", "1", "x"]),
            Kind::Tcp
        ));
        assert!(matches!(
            backend(&["me-only", "--flock", "/l", "x"]),
            Kind::Flock
        ));
        for refused in [
            &["me-only", "--tcp", "--flock", "1", "x"][..],
            &["me-only", "--detach", "--fork", "/l", "x"],
            &["me-only", "-t", "-d", "/l"],
        ] {
            let Err(Error::Usage(message)) = parse_words(refused) else {
                panic!("{refused:?} must be refused");
            };
            assert!(message.contains("cannot be used with"), "{message}");
        }
    }

    #[test]
    fn only_etcd_replace_help_and_version_words_need_the_full_definition() {
        let needed = |words: &[&str]| {
            let words: Vec<OsString> = words.iter().map(OsString::from).collect();
            full_command_needed(&words)
        };
        assert!(!needed(&[
            "me-only", "-q", "-E", "9", "--tcp", "1", "x", "-v"
        ]));
        assert!(!needed(&["me-only", "--flock", "--timeout=1", "/l", "x"]));
        for full in [
            &["me-only", "--etcd", "http://h:1", "l", "x"][..],
            &["me-only", "--etcd=", "l", "x"],
            &["me-only", "--ttl", "5", "l", "x"],
            &["me-only", "--kill-after=1", "l", "x"],
            &["me-only", "--signal", "INT", "l", "x"],
            &["me-only", "--replace", "l", "x"],
            &["me-only", "--replace-older=60", "l", "x"],
            &["me-only", "--slots", "2", "l", "x"],
            &["me-only", "--shared", "--flock", "l", "x"],
            &["me-only", "--max-time=5", "l", "x"],
            &["me-only", "--respawn", "l", "x"],
            &["me-only", "--respawn-delay=1", "--respawn", "l", "x"],
            &["me-only", "--until-success", "l", "x"],
            &["me-only", "--until-failure", "--tries", "2", "l", "x"],
            &["me-only", "--auto", "x"],
            &["me-only", "--list"],
            &["me-only", "--list=/tmp/", "--json"],
            &["me-only", "--help"],
            &["me-only", "-qh"],
            &["me-only", "-V"],
            // A word of COMMAND's counts too: harmless, only slower.
            &["me-only", "/l", "ls", "-h"],
        ] {
            assert!(needed(full), "{full:?}");
        }
    }

    #[test]
    fn the_full_definition_describes_me_only() {
        let lean = Cli::command();
        let full = full_command();
        assert_eq!(full.get_about(), lean.get_about());
        assert_eq!(full.get_long_about(), lean.get_long_about());
        assert!(
            lean.get_about()
                .is_some_and(|about| about.to_string().starts_with("Run COMMAND only if"))
        );
    }

    /// Where the lean definition is used, the full one would have parsed the
    /// words the same way.
    #[test]
    fn lean_and_full_definitions_agree() {
        for words in [
            &["me-only", "-q", "-E", "9", "/l", "x", "-y"][..],
            &["me-only", "--tcp", "127.0.0.1:1", "--", "-x"],
            &["me-only", "--flock", "-w", "--timeout", "2", "/l", "x"],
            &["me-only", "-t", "/l"],
        ] {
            let lean = Cli::command().try_get_matches_from(words).unwrap();
            let full = full_command().try_get_matches_from(words).unwrap();
            let lean = format!("{:?}", Cli::from_arg_matches(&lean).unwrap());
            let full = format!("{:?}", Cli::from_arg_matches(&full).unwrap());
            assert_eq!(lean, full, "{words:?}");
        }
    }

    #[test]
    fn auto_takes_the_first_word_as_command_and_names_the_lock_from_it() {
        let cli = run_request(&["me-only", "--auto", "-q", "/no/such/job", "-q", "x"]);
        assert!(cli.quiet);
        assert_eq!(cli.command, ["/no/such/job", "-q", "x"]);
        let words: Vec<OsString> = cli.command.clone();
        assert_eq!(
            cli.lock,
            crate::cli::auto::lock_name(&words, nix::unistd::getuid().as_raw())
        );
        let alone = run_request(&["me-only", "--auto", "/no/such/job"]);
        assert_eq!(alone.command, ["/no/such/job"]);
        // COMMAND's own --auto is COMMAND's.
        let plain = run_request(&["me-only", "/l", "job", "--auto"]);
        assert_eq!(
            (plain.lock.to_str(), plain.occasional.auto),
            (Some("/l"), false)
        );
        assert_eq!(plain.command, ["job", "--auto"]);
        for refused in [
            &["me-only", "/l", "--auto", "job"][..],
            &["me-only", "--auto"],
            &["me-only", "--auto", "--test"],
        ] {
            assert!(
                matches!(parse_words(refused), Err(Error::Usage(_))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn missing_command_is_one_line_naming_it() {
        let Err(Error::Usage(message)) = parse_words(&["me-only", "/tmp/a"]) else {
            panic!("a lock without a command must be a usage error");
        };
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("<COMMAND>"), "{message}");
    }
}
