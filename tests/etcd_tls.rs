//! `--etcd` against clusters set up as production ones are: TLS (a server
//! certificate, client certificates), auth (a user whose role reaches one
//! key prefix), and etcdctl's variables. The certificates are made by
//! openssl for each test.
#![cfg(feature = "etcd")]

use crate::common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::prelude::*;
use common::etcd::*;
use common::{Holding, me_only, refused, text};

/// A real etcd serving TLS, asking clients for a certificate if
/// `ask_clients`; None (the test skipped) where openssl, etcd or etcdctl is
/// missing.
fn tls_etcd(pki: &Pki, ask_clients: bool) -> Option<Etcd> {
    tls_etcd_with(pki, ask_clients, &[])
}

/// As `tls_etcd`, with more of etcd's `options`.
fn tls_etcd_with(pki: &Pki, ask_clients: bool, options: &[&str]) -> Option<Etcd> {
    if !common::programs_or_skip(&["etcdctl"]) {
        return None;
    }
    Etcd::start_serving(Serving {
        tls: Some((pki, ask_clients)),
        options,
        ..Serving::default()
    })
}

/// A holder on `etcd` whose command says `ready`, then waits for stdin to
/// close.
fn holding(etcd: &Etcd, args: &[&str]) -> Holding {
    let mut command = on(etcd, args);
    command.args(["sh", "-c", "echo ready; exec cat"]);
    Holding::spawn(command)
}

/// Over mutual TLS, every mode works as over plain http: a holder keeps
/// others out and --test names it, a waiter takes over, --fork and
/// --detach hold the lock, and a deleted key fences the holder off.
#[test]
fn every_mode_works_over_mutual_tls() {
    let Some(pki) = Pki::make() else { return };
    let Some(etcd) = tls_etcd(&pki, true) else {
        return;
    };
    assert!(etcd.endpoint.starts_with("https://"));
    let lock = lock_name("mtls");
    let holder = holding(&etcd, &[&lock]);
    on(&etcd, &["--test", &lock])
        .assert()
        .code(4)
        .stdout(format!("{} {}\n", hostname(), holder.pid));
    refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4);
    let waiter = common::spawn_waiting(&mut on(&etcd, &["-v", "--wait", &lock, "echo", "waited"]));
    assert!(holder.release().success());
    let output = waiter.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "waited\n");

    // (The waiter's keeper gives the lock back as its command exits, just
    // after: the next one waits for that.)
    let forked = holding(&etcd, &["--timeout", "10", "--fork", &lock]);
    refused(&mut on(&etcd, &[&lock, "echo", "ran"]), 4);
    assert!(forked.release().success());
    a_detached_command_holds(&etcd, &lock);

    let (fenced, mut stdout) = started(
        on(
            &etcd,
            &["--timeout", "10", "--ttl", "3", "--kill-after", "1", &lock],
        )
        .args([
            "sh",
            "-c",
            "trap 'echo terminated; exit 0' TERM; echo ready; \
                    while :; do sleep 1 & wait $!; done",
        ]),
    );
    etcd.delete_keys_of(&lock);
    common::read_until_a_line_with(&mut stdout, "terminated");
    let output = fenced.wait_with_output().unwrap();
    assert!(
        text(&output.stderr).contains("lock key deleted; terminating pid"),
        "{output:?}"
    );
}

/// What a launch on `etcd` with `args` says, after `me-only: LOCK: `,
/// when it fails (exit 3); the lock is its last word but the command's.
fn lock_error(etcd: &Etcd, args: &[&str]) -> String {
    let lock = lock_name("refused");
    let mut command = me_only();
    command.args(["--etcd", &etcd.endpoint]).args(args);
    let line = refused(command.args([&lock, "echo", "ran"]), 3);
    line.strip_prefix(&format!("me-only: {lock}: "))
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end()
        .replace(&etcd.endpoint, "URL")
}

/// Each certificate problem is exit 3 with a line that names it: the
/// server's certificate signed by a CA not given, no client certificate
/// where the cluster asks for one, an expired one, a file that is not
/// there. A certificate and its key go together (exit 2 otherwise).
#[test]
fn a_certificate_problem_is_a_lock_error_that_names_it() {
    let Some(pki) = Pki::make() else { return };
    let Some(etcd) = tls_etcd(&pki, true) else {
        return;
    };
    let (ca, other_ca) = (pki.path("ca.pem"), pki.path("other-ca.pem"));
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let expired = pki.path("expired.pem");
    let said = lock_error(
        &etcd,
        &["--cacert", &other_ca, "--cert", &cert, "--key", &key],
    );
    assert_eq!(
        said,
        "cannot grant a lease: etcd at URL: TLS: its certificate is not signed by a CA \
         in --cacert (or the system's) (invalid peer certificate: UnknownIssuer)"
    );
    let refused_client = "cannot grant a lease: etcd at URL: TLS: it refused the client \
                          certificate: none was given (--cert, --key), or it is not one it \
                          accepts (expired, or not signed by its CA)";
    for client in [&[][..], &["--cert", &expired, "--key", &key]] {
        let mut args = vec!["--cacert", ca.as_str()];
        args.extend_from_slice(client);
        let said = lock_error(&etcd, &args);
        assert!(said.starts_with(refused_client), "{client:?}: {said}");
    }
    let missing = pki.path("missing.pem");
    assert_eq!(
        lock_error(&etcd, &["--cacert", &missing]),
        format!(
            "cannot read the certificates in --cacert {missing}: I/O error: \
             No such file or directory (os error 2)"
        )
    );
    let line = refused(
        me_only().args(["--etcd", &etcd.endpoint, "--cert", &cert, "l", "true"]),
        2,
    );
    assert_eq!(
        line,
        "me-only: --etcd: --cert needs --key (the certificate's private key)\n"
    );
}

/// A server that asks for no client certificate: --cacert alone does, and
/// --insecure-skip-tls-verify does without it; etcdctl's variables are
/// enough (an endpoint without a scheme is https when TLS files are
/// given, as etcdctl takes it).
#[test]
fn server_tls_with_etcdctls_variables() {
    let Some(pki) = Pki::make() else { return };
    let Some(etcd) = tls_etcd(&pki, false) else {
        return;
    };
    let ca = pki.path("ca.pem");
    me_only()
        .args([
            "--etcd",
            &etcd.endpoint,
            "--cacert",
            &ca,
            &lock_name("cacert"),
            "echo",
            "ran",
        ])
        .assert()
        .success()
        .stdout("ran\n");
    me_only()
        .args(["--etcd", &etcd.endpoint, "--insecure-skip-tls-verify"])
        .arg(lock_name("insecure"))
        .args(["echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
    let bare = etcd.endpoint.trim_start_matches("https://");
    me_only()
        .env("ETCDCTL_ENDPOINTS", bare)
        .env("ETCDCTL_CACERT", &ca)
        .env_remove("ME_ONLY_ETCD_ENDPOINTS")
        .args(["--etcd=", &lock_name("etcdctl-variables"), "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
    // ME_ONLY_ETCD_* comes first: a wrong ETCDCTL_CACERT is not read.
    me_only()
        .env("ME_ONLY_ETCD_ENDPOINTS", &etcd.endpoint)
        .env("ME_ONLY_ETCD_CACERT", &ca)
        .env("ETCDCTL_CACERT", pki.path("other-ca.pem"))
        .args(["--etcd=", &lock_name("own-variables"), "echo", "ran"])
        .assert()
        .success()
        .stdout("ran\n");
}

/// Auth on: a user whose role reaches `jobs/` only. The login works given
/// every way etcdctl takes it; a wrong password, no login at all, and a
/// lock outside the role's keys are exit 3 with a line that says so; the
/// password is never in ps, neither for me-only nor its keeper.
#[test]
fn a_user_with_a_role_logs_in() {
    let Some(pki) = Pki::make() else { return };
    let Some(mut etcd) = tls_etcd(&pki, true) else {
        return;
    };
    let prefix = format!("{}/", lock_name("jobs"));
    etcd.enable_auth("alice", "alice-secret", &prefix);
    let lock = format!("{prefix}nightly");
    for (args, variables) in [
        (&["--user", "alice:alice-secret"][..], &[][..]),
        (&["--user", "alice", "--password", "alice-secret"], &[]),
        (
            &[],
            &[
                ("ME_ONLY_ETCD_USER", "alice"),
                ("ME_ONLY_ETCD_PASSWORD", "alice-secret"),
            ],
        ),
        (&[], &[("ETCDCTL_USER", "alice:alice-secret")]),
    ] {
        // (--timeout: the last launch's keeper gives the lock back just
        // after its command exits.)
        let mut command = on(&etcd, args);
        command
            .args(["--timeout", "10"])
            .envs(variables.iter().copied());
        command
            .args([&lock, "echo", "ran"])
            .assert()
            .success()
            .stdout("ran\n");
    }
    assert_eq!(
        lock_error_with_client_args(&etcd, &["--user", "alice:wrong"], &lock),
        "cannot grant a lease: etcd refused to log in user alice: etcdserver: \
         authentication failed, invalid user ID or password"
    );
    assert_eq!(
        lock_error_with_client_args(&etcd, &[], &lock),
        "cannot take the lock: etcd says: etcdserver: permission denied \
         (etcd has auth on: give --user and --password)"
    );
    // A client certificate with a CommonName (a user name) is refused by
    // etcd's gateway once auth is on.
    let line = refused(
        me_only()
            .args(["--etcd", &etcd.endpoint])
            .args(pki.client_args("client"))
            .args(["--user", "alice:alice-secret", &lock, "true"]),
        3,
    );
    assert!(
        line.ends_with(
            "etcd refused to log in user alice: CommonName of client sending a request \
             against gateway will be ignored and not used as expected (with auth on, etcd's \
             gateway takes only a client certificate without a CommonName)\n"
        ),
        "{line}"
    );
    let outside = lock_name("elsewhere");
    assert_eq!(
        lock_error_with_client_args(&etcd, &["--user", "alice:alice-secret"], &outside),
        format!(
            "cannot take the lock: etcd says: etcdserver: permission denied \
             (user alice may not use the keys under {outside}/)"
        )
    );
    // A --fork holder (me-only stays) and its keeper, seen by ps.
    let holder = holding(
        &etcd,
        &[
            "--user",
            "alice:alice-secret",
            "--timeout",
            "10",
            "--fork",
            &lock,
        ],
    );
    let keeper = keeper_of(&lock).expect("a keeper runs");
    for pid in [holder.pid as i32, keeper.as_raw()] {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !text(&cmdline).contains("alice-secret"),
            "{}",
            text(&cmdline)
        );
    }
    // A waiter watches the holder's key with its own login.
    let waiter = common::spawn_waiting(&mut on(
        &etcd,
        &[
            "-v",
            "--user",
            "alice:alice-secret",
            "--wait",
            &lock,
            "echo",
            "waited",
        ],
    ));
    assert!(holder.release().success());
    let output = waiter.wait_with_output().unwrap();
    assert_eq!(text(&output.stdout), "waited\n", "{output:?}");
}

/// As `lock_error`, on `lock`, with the client certificate and `args`.
fn lock_error_with_client_args(etcd: &Etcd, args: &[&str], lock: &str) -> String {
    let line = refused(on(etcd, args).args([lock, "echo", "ran"]), 3);
    line.strip_prefix(&format!("me-only: {lock}: "))
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end()
        .to_owned()
}

/// A token goes stale (etcd forgets one unused for --auth-token-ttl, here
/// 1 s, less than the keeper's 3.3 s between renewals): the keeper logs in
/// again within each renewal, and the holder runs on, holding the lock.
#[test]
fn the_keeper_logs_in_again_when_its_token_goes_stale() {
    let Some(pki) = Pki::make() else { return };
    let Some(mut etcd) = tls_etcd_with(&pki, true, &["--auth-token-ttl", "1"]) else {
        return;
    };
    let prefix = format!("{}/", lock_name("relogin"));
    etcd.enable_auth("alice", "alice-secret", &prefix);
    let lock = format!("{prefix}job");
    let mut command = on(
        &etcd,
        &["--user", "alice:alice-secret", "--ttl", "10", &lock],
    );
    command
        .env("RUST_LOG", "trace")
        .args(["sh", "-c", "echo ready; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut holder = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(holder.stdout.take().unwrap());
    common::read_until_a_line_with(&mut stdout, "ready");
    let mut stderr = std::io::BufReader::new(holder.stderr.take().unwrap());
    // Should the lines never come, the holder and its helpers (which keep
    // stderr open) go after a minute, and the reads below end.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let helpers: Vec<i32> = [keeper_of(&lock), sentry_of(&lock)]
        .into_iter()
        .flatten()
        .map(|pid| pid.as_raw())
        .chain([holder.id() as i32])
        .collect();
    std::thread::spawn(move || {
        let waited = watchdog.recv_timeout(Duration::from_secs(60));
        if waited == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            for pid in helpers {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    });
    let mut next_line = || {
        let mut line = String::new();
        let read = stderr.read_line(&mut line).unwrap();
        assert_ne!(read, 0, "no new login within a minute");
        assert!(!line.contains("terminating"), "{line}");
        line
    };
    // Two renewals, each on a new login, the key found still ours.
    for _ in 0..2 {
        while !next_line().contains("logging in again") {}
        while !next_line().contains("lease renewed, key still ours") {}
    }
    drop(done);
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    on(&etcd, &["--user", "alice:alice-secret", "--test", &lock])
        .assert()
        .code(4);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
}
