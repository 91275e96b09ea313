//! The Debian package's metadata agrees with the crate's.

mod common;

use std::fs;
use std::path::Path;

fn in_repo(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// One version: Cargo.toml's, which `--version` prints, is the package's.
#[test]
fn debian_changelog_version_is_the_crate_version() {
    let changelog = in_repo("debian/changelog");
    let first_line = changelog.lines().next().unwrap();
    let version = first_line
        .strip_prefix("me-only (")
        .and_then(|rest| rest.split_once(')'))
        .map(|(version, _)| version)
        .unwrap_or_else(|| panic!("unexpected first line: {first_line}"));
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}

/// Every file the package installs exists in the tree.
#[test]
fn files_the_package_installs_exist() {
    for list in [
        "debian/me-only.manpages",
        "debian/me-only.docs",
        "debian/me-only.examples",
    ] {
        for file in in_repo(list).lines().filter(|line| !line.trim().is_empty()) {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            assert!(path.is_file(), "{list} names {file}, which does not exist");
        }
    }
}

/// The example job prints "running <pid>" the number of times asked.
#[test]
fn example_job_says_running_with_its_pid() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/example-job");
    let (pid, stdout) =
        common::run_noting_pid(std::process::Command::new(&script).args(["0", "3"]));
    assert_eq!(stdout, format!("running {pid}\n").repeat(3));
}
