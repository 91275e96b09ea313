//! The options of the etcd backend, and where each is found when the
//! command line lacks it: ME_ONLY_ETCD_*, then etcdctl's ETCDCTL_*, so that
//! a host set up for etcdctl needs nothing more.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use super::heading;
use crate::error::Error;
use crate::lock::etcd::{Gateway, Login, Settings, TlsOptions};

// The options are added to the command line's definition only where the
// words ask for them (or for --help): each option clap defines costs every
// launch, and the launches that use a kernel lock are the ones that count
// (`full_command_needed`). Plain comments: a doc comment here would become
// the whole program's description in --help.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdOptions {
    /// Lock the name LOCK in an etcd cluster, across hosts
    ///
    /// ENDPOINTS: http[s]://HOST:PORT[,...]; without them (--etcd= or
    /// --etcd followed by another option), ME_ONLY_ETCD_ENDPOINTS or
    /// ETCDCTL_ENDPOINTS. A word right after --etcd is always ENDPOINTS:
    /// `--etcd LOCK CMD` is not what you mean, `--etcd= LOCK CMD` is
    #[arg(
        long,
        value_name = "ENDPOINTS",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with_all = ["tcp", "flock"],
        help_heading = heading::CLUSTER
    )]
    pub etcd: Option<String>,

    /// With --etcd: the lease's time to live [default: 10]
    ///
    /// A holder cut off from etcd this long is fenced off
    #[arg(
        long,
        value_name = "SECS",
        value_parser = clap::value_parser!(i64).range(1..=86400),
        requires = "etcd",
        hide_short_help = true,
        help_heading = heading::CLUSTER
    )]
    pub ttl: Option<i64>,

    /// With --etcd: the CA certificates (PEM) that sign the https
    /// endpoints' certificates [default: the system's]
    #[arg(long, value_name = "FILE", requires = "etcd", hide_short_help = true, help_heading = heading::CLUSTER)]
    pub cacert: Option<PathBuf>,

    /// With --etcd: a client certificate (PEM), for clusters that ask for
    /// one; with --key
    #[arg(long, value_name = "FILE", requires = "etcd", hide_short_help = true, help_heading = heading::CLUSTER)]
    pub cert: Option<PathBuf>,

    /// With --etcd: the client certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "etcd", hide_short_help = true, help_heading = heading::CLUSTER)]
    pub key: Option<PathBuf>,

    /// With --etcd: do not check the https endpoints' certificates (the
    /// connection is then open to anyone in between)
    #[arg(long, requires = "etcd", hide_short_help = true, help_heading = heading::CLUSTER)]
    pub insecure_skip_tls_verify: bool,

    /// With --etcd: log in to a cluster with auth enabled as USER (the
    /// password after the first colon, with --password, or in
    /// ME_ONLY_ETCD_PASSWORD; given twice, the command line's wins over the
    /// environment's, and USER:PASSWORD's over the other)
    #[arg(long, value_name = "USER[:PASSWORD]", requires = "etcd", hide_short_help = true, help_heading = heading::CLUSTER)]
    pub user: Option<String>,

    /// With --etcd: the password of --user (better in ME_ONLY_ETCD_PASSWORD:
    /// an argument can be read by any user while me-only starts)
    #[arg(long, value_name = "PASSWORD", requires = "etcd", hide_short_help = true, help_heading = heading::CLUSTER)]
    pub password: Option<String>,
}

/// --ttl when not given. Applied here rather than by clap: every default
/// clap fills in costs every launch, etcd or not.
const DEFAULT_TTL: i64 = 10;

/// Where an option is found when not given: me-only's own variable first,
/// then etcdctl's.
const ENV_PREFIXES: [&str; 2] = ["ME_ONLY_ETCD_", "ETCDCTL_"];

impl EtcdOptions {
    /// The etcd backend's settings, for LOCK. A malformed endpoint or a
    /// missing half of a pair is a usage error; a file that cannot be used
    /// (TLS) is a lock error. A fenced-off COMMAND gets `kill_after`
    /// between SIGTERM and SIGKILL.
    pub fn settings(
        &self,
        endpoints: &str,
        lock: &OsStr,
        kill_after: Duration,
    ) -> Result<Settings, Error> {
        let endpoints = match endpoints {
            "" => from_environment("ENDPOINTS").ok_or_else(|| {
                Error::Usage(
                    "--etcd: no endpoints given, and neither ME_ONLY_ETCD_ENDPOINTS \
                     nor ETCDCTL_ENDPOINTS is set"
                        .into(),
                )
            })?,
            given => given.to_owned(),
        };
        let tls = self.tls_options();
        tls.check()
            .map_err(|problem| Error::Usage(format!("--etcd: {problem}")))?;
        let login = self.login().map_err(Error::Usage)?;
        let gateway = Gateway::parse(&endpoints, tls.any())
            .map_err(|problem| Error::Usage(format!("--etcd: {problem}")))?
            .with_access(&tls, login)
            .map_err(|what| Error::Etcd {
                lock: lock.to_string_lossy().into_owned(),
                what,
            })?;
        Ok(Settings {
            gateway,
            ttl: self.ttl.unwrap_or(DEFAULT_TTL),
            kill_after,
            contest: None,
        })
    }

    fn tls_options(&self) -> TlsOptions {
        let file = |given: &Option<PathBuf>, name| {
            given
                .clone()
                .or_else(|| from_environment(name).map(PathBuf::from))
        };
        TlsOptions {
            cacert: file(&self.cacert, "CACERT"),
            cert: file(&self.cert, "CERT"),
            key: file(&self.key, "KEY"),
            insecure_skip_verify: self.insecure_skip_tls_verify
                || from_environment("INSECURE_SKIP_TLS_VERIFY").is_some_and(|on| on == "true"),
        }
    }

    /// The login, as etcdctl takes it: `--user USER:PASSWORD` (split at
    /// the first colon, whatever else is given), or `--user USER` and the
    /// password apart (--password, or the environment). Given twice, the
    /// password in the arguments wins over the environment's, and in
    /// either the one in USER:PASSWORD over the one apart. Every password
    /// given in the arguments is hidden from ps.
    fn login(&self) -> Result<Option<Login>, String> {
        let (user, in_arguments) = match &self.user {
            Some(user) => (Some(split_user(user)), true),
            None => (from_environment("USER").as_deref().map(split_user), false),
        };
        let (user, attached) = match user {
            Some((user, attached)) => (Some(user), attached),
            None => (None, None),
        };
        let (argument, environment) = match in_arguments {
            true => (attached, None),
            false => (None, attached),
        };
        let given = [argument, self.password.clone()];
        for password in given.iter().flatten() {
            // SAFETY: me-only read its arguments once, into its own
            // strings, at start-up, and runs no other thread while it
            // reads its options.
            unsafe { crate::sys::process_title::hide(password) };
        }
        let password = given
            .into_iter()
            .chain([environment, from_environment("PASSWORD")])
            .flatten()
            .next();
        let Some(user) = user else {
            return match password {
                Some(_) => Err("--etcd: a password needs a user (--user)".into()),
                None => Ok(None),
            };
        };
        let Some(password) = password else {
            return Err(format!(
                "--etcd: no password for user {user}: give --user {user}:PASSWORD, \
                 --password, or ME_ONLY_ETCD_PASSWORD"
            ));
        };
        if user.is_empty() {
            return Err("--etcd: the user name is empty".into());
        }
        Ok(Some(Login { user, password }))
    }
}

/// `USER[:PASSWORD]`: the user's name, and the password after the first
/// colon if there is one (a name has none; a password may).
fn split_user(user: &str) -> (String, Option<String>) {
    match user.split_once(':') {
        Some((name, password)) => (name.to_owned(), Some(password.to_owned())),
        None => (user.to_owned(), None),
    }
}

/// The first of ME_ONLY_ETCD_NAME and ETCDCTL_NAME that is set and not
/// empty.
fn from_environment(name: &str) -> Option<String> {
    ENV_PREFIXES
        .iter()
        .filter_map(|prefix| std::env::var(format!("{prefix}{name}")).ok())
        .find(|value| !value.is_empty())
}
