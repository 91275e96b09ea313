//! What a newcomer reads first (issue #24): `-h` is a one-screen summary,
//! `--help` the whole story, both grouped under headings and wrapped to
//! the terminal (80 columns when stdout is not one).

use crate::common;
use std::io::Read;
use std::process::Stdio;

use common::{me_only, text};

/// `me-only ARG`'s stdout, which must be all it printed, with exit 0.
fn help(arg: &str) -> String {
    let output = me_only().arg(arg).output().unwrap();
    assert!(output.status.success(), "{arg}: {output:?}");
    assert!(output.stderr.is_empty(), "{arg}: {output:?}");
    text(&output.stdout)
}

/// `me-only --help` with its stdout on a terminal `columns` wide.
fn help_on_terminal(columns: u16) -> String {
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut child = me_only()
        .arg("--help")
        .stdout(Stdio::from(pty.slave))
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    // The child, the slave's only holder, is gone: the master reads what
    // it wrote, then EIO.
    let mut master = std::fs::File::from(pty.master);
    let mut written = Vec::new();
    let _ = master.read_to_end(&mut written);
    text(&written).replace("\r\n", "\n")
}

fn widest(help: &str) -> usize {
    help.lines().map(|line| line.chars().count()).max().unwrap()
}

/// The long options under each heading, in order: `  -w, --wait` or
/// `      --timeout <SECS>` lines (descriptions are indented further).
fn sections(help: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if let Some(heading) = line.strip_suffix(':').filter(|_| !line.starts_with(' ')) {
            sections.push((heading.to_owned(), Vec::new()));
            continue;
        }
        let long = line
            .strip_prefix("  -")
            .and_then(|short| short.split_once(", --"))
            .map(|(_, long)| long)
            .or_else(|| line.strip_prefix("      --"));
        if let (Some(long), Some((_, options))) = (long, sections.last_mut()) {
            options.push(long.split([' ', '[']).next().unwrap().to_owned());
        }
    }
    sections.retain(|(_, options)| !options.is_empty());
    sections
}

/// Every option, under the heading a newcomer looks for it.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "Options",
        &["conflict-exit-code", "quiet", "verbose", "help", "version"],
    ),
    ("Lock", &["tcp", "flock", "auto", "slots", "shared"]),
    ("Waiting", &["wait", "timeout"]),
    (
        "Running COMMAND",
        &[
            "fork",
            "detach",
            "max-time",
            "respawn",
            "until-success",
            "until-failure",
            "respawn-delay",
            "tries",
        ],
    ),
    ("Reports (run nothing)", &["test", "list", "json"]),
    (
        "Stopping other instances",
        &["replace", "replace-older", "kill-after", "signal"],
    ),
    (
        "Cluster (etcd)",
        &[
            "etcd",
            "ttl",
            "cacert",
            "cert",
            "key",
            "insecure-skip-tls-verify",
            "user",
            "password",
        ],
    ),
];

/// --help was 147 lines, 22 of them wider than 100 columns, in one list of
/// 29 options; -h had lines of 412 characters.
#[test]
fn help_groups_every_option_under_a_heading_within_80_columns() {
    let long = help("--help");
    assert!(
        widest(&long) <= 80,
        "--help is {} wide:\n{long}",
        widest(&long)
    );
    let expected: Vec<(String, Vec<String>)> = GROUPS
        .iter()
        .map(|(heading, options)| {
            let options = options.iter().map(|option| (*option).to_owned());
            ((*heading).to_owned(), options.collect())
        })
        .collect();
    assert_eq!(sections(&long), expected, "{long}");
    for kept in [
        "Usage: me-only [OPTIONS] <LOCK> <COMMAND> [ARGS]...\n       me-only --test [OPTIONS] <LOCK>\n       me-only --list [OPTIONS] [PREFIX]\n       me-only --auto [OPTIONS] <COMMAND> [ARGS]...",
        "EXIT STATUS:",
        "EXAMPLES:",
    ] {
        assert!(long.contains(kept), "--help lacks {kept:?}:\n{long}");
    }
}

#[test]
fn short_help_is_one_screen_of_short_lines() {
    let short = help("-h");
    assert!(
        widest(&short) <= 80,
        "-h is {} wide:\n{short}",
        widest(&short)
    );
    assert!(
        short.lines().count() <= 40,
        "-h is {} lines:\n{short}",
        short.lines().count()
    );
    // The headings are --help's, in its order; each option keeps one line.
    let headings: Vec<String> = sections(&short)
        .into_iter()
        .map(|(heading, _)| heading)
        .collect();
    let all: Vec<&str> = GROUPS.iter().map(|(heading, _)| *heading).collect();
    assert_eq!(headings, all, "{short}");
    // The option lines: those under the headings (the usage's forms are
    // indented too).
    let options = short
        .split_once("\nOptions:\n")
        .map_or("", |(_, options)| options);
    for line in options.lines().filter(|line| line.starts_with("  ")) {
        let description = line
            .trim_start()
            .split_once("  ")
            .map(|(_, rest)| rest.trim());
        assert!(
            description.is_some_and(|d| !d.is_empty()),
            "wrapped or bare: {line:?}\n{short}"
        );
    }
}

/// On a terminal, --help is wrapped to its width, up to 100 columns.
#[test]
fn help_wraps_to_the_terminal_up_to_100_columns() {
    let narrow = help_on_terminal(60);
    assert!(widest(&narrow) <= 60, "{narrow}");
    assert!(narrow.contains("EXIT STATUS:"), "{narrow}");
    let wide = help_on_terminal(200);
    assert!(widest(&wide) <= 100, "{wide}");
    assert!(
        widest(&wide) > 80,
        "not wrapped to the terminal's 200 columns:\n{wide}"
    );
    // The same words, only the lines broken elsewhere.
    let words = |help: &str| {
        help.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(words(&narrow), words(&help("--help")));
}

/// The man page (made from the same definition) renders without a warning
/// from groff, NAME and SYNOPSIS as a man reader expects them.
#[test]
fn man_page_renders_its_forms() {
    if !common::programs_or_skip(&["groff"]) {
        return;
    }
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/me-only.1");
    let output = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-cbou", page])
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{output:?}"
    );
    let rendered = text(&output.stdout).replace('\u{2010}', "-");
    for line in [
        "me-only - run a command unless another instance holds its lock",
        "me-only [OPTIONS] LOCK COMMAND [ARGS]...",
        "me-only --test [OPTIONS] LOCK",
        "me-only --list [OPTIONS] [PREFIX]",
        "me-only --auto [OPTIONS] COMMAND [ARGS]...",
    ] {
        assert!(
            rendered.lines().any(|shown| shown.trim() == line),
            "{line:?} not in\n{rendered}"
        );
    }
}
