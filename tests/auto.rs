//! --auto: the lock named from the command line.

use crate::common;

use std::process::Command;

use common::{Holding, me_only, refused, text};

/// A holder's script, one for each test: tests run at once, and the same
/// words would be the same lock.
fn holder_script(test: &str) -> String {
    format!("echo ready; exec cat # {test} {}", std::process::id())
}

fn auto_holder(script: &str) -> Holding {
    Holding::with_script(["--auto"], script)
}

/// The lock name as the README tells another tool to compute it, in
/// Python: an oracle written apart from me-only's own code.
fn documented_name(command: &[&str]) -> String {
    const PYTHON: &str = r#"
import os, shutil, sys
def auto_lock_name(command, *arguments):
    path = command if "/" in command else (shutil.which(command) or command)
    data = os.fsencode(os.path.realpath(path) if os.path.exists(path) else path)
    for argument in arguments:
        data += b"\0" + os.fsencode(argument)
    hash = 0xcbf29ce484222325
    for byte in data:
        hash = ((hash ^ byte) * 0x100000001b3) % 2**64
    return f"me-only/auto/{os.getuid()}/{hash:016x}"
print(auto_lock_name(*sys.argv[1:]))
"#;
    if !common::programs_or_skip(&["python3"]) {
        return String::new();
    }
    let output = Command::new("python3")
        .args(["-c", PYTHON])
        .args(command)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    text(&output.stdout).trim_end().to_owned()
}

#[test]
fn the_same_command_line_is_the_same_lock() {
    let script = holder_script("same");
    let holder = auto_holder(&script);
    // The same words, and the same program by another path (/bin/sh is
    // /usr/bin/sh is dash on Debian).
    for program in ["sh", "/bin/sh"] {
        let line = refused(me_only().args(["--auto", program, "-c", &script]), 4);
        assert!(
            line.contains(&format!("already held by pid {}", holder.pid)),
            "{program}: {line}"
        );
    }
    // Other arguments, another lock.
    let output = me_only()
        .args(["--auto", "sh", "-c", "echo \"$ME_ONLY_LOCK\""])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let name = documented_name(&["sh", "-c", "echo \"$ME_ONLY_LOCK\""]);
    if !name.is_empty() {
        assert_eq!(text(&output.stdout), format!("{name}\n"));
    }
}

#[test]
fn another_tool_can_compute_the_name() {
    let script = holder_script("computed");
    let holder = auto_holder(&script);
    let name = documented_name(&["sh", "-c", &script]);
    if name.is_empty() {
        return;
    }
    assert!(name.starts_with("me-only/auto/"), "{name}");
    let output = me_only().args(["--test", &name]).output().unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(text(&output.stdout), format!("{}\n", holder.pid));
    // --test --auto asks about a command line.
    let output = me_only()
        .args(["--test", "--auto", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(text(&output.stdout), format!("{}\n", holder.pid));
}

#[test]
fn a_command_alone_is_enough_and_bad_combinations_are_usage_errors() {
    let output = me_only().args(["--auto", "true"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    for (words, message) in [
        (&["--auto"][..], "required"),
        (&["--auto", "--tcp", "echo", "ran"], "cannot be used with"),
        (&["--auto", "--flock", "echo", "ran"], "cannot be used with"),
    ] {
        let line = refused(me_only().args(words), 2);
        assert!(line.contains(message), "{words:?}: {line}");
    }
    let line = refused(me_only().args(["--auto", "/no/such/command"]), 1);
    assert!(
        line.contains("/no/such/command: command not found"),
        "{line}"
    );
}

/// With --etcd, the same name in etcd: one run of a command line across
/// hosts.
#[cfg(feature = "etcd")]
#[test]
fn with_etcd_the_name_is_an_etcd_lock() {
    use common::etcd::{Etcd, on};

    let Some(etcd) = Etcd::start() else { return };
    let script = holder_script("etcd");
    let holder = Holding::spawn(on(&etcd, &["--auto", "sh", "-c", &script]));
    let line = refused(&mut on(&etcd, &["--auto", "/bin/sh", "-c", &script]), 4);
    assert!(
        line.contains(&format!("already held by pid {}", holder.pid)),
        "{line}"
    );
    let name = documented_name(&["sh", "-c", &script]);
    if !name.is_empty() {
        let output = on(&etcd, &["--test", &name]).output().unwrap();
        assert_eq!(output.status.code(), Some(4), "{output:?}");
    }
}
