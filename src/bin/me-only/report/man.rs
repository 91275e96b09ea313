//! me-only(1), generated from the clap definition and the text at the end
//! of `--help`, so that the two cannot drift apart. The page is checked in
//! (doc/me-only.1, installed by the Debian package); a test fails when it
//! is stale. Regenerate with `ME_ONLY_UPDATE_MAN=1 cargo test man_page`.

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::cli::{AFTER_LONG_HELP, full_command};

const MAN_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/me-only.1");

/// SPEC.md section 5: what a user must know before trusting the lock.
const NOTES: &[&str] = &[
    "Abstract socket names and loopback ports live in the network namespace. \
     A process in another one (a container, a systemd unit with \
     PrivateNetwork=yes) does not see the lock and can run beside you. A \
     --flock lock is seen wherever the file is: across network namespaces \
     that share the filesystem, but not across hosts (flock over NFS is \
     unreliable).",
    "Any user can bind any abstract name, so another user may hold \"your\" \
     lock; me-only then names the holder's pid and uid.",
    "Every process that inherits the lock descriptor keeps the lock alive: a \
     daemonized child holds it after the command exits. A command that closes \
     all its descriptors loses it while it still runs; use --fork for such \
     commands if they stay in the foreground (a command that daemonizes \
     needs the default exec mode).",
    "With --flock, the lock file is never deleted: a process waiting on a \
     deleted file would hold a lock that a newcomer, creating a new file by \
     that name, does not see. Use a path in a directory that only trusted \
     users can write to (/run/lock, /var/lock); in /tmp me-only refuses a \
     symbolic link planted at LOCK, but anyone may create the file first and \
     hold the lock.",
    "With --detach, COMMAND's stdin and stdout are /dev/null, so that \
     pid=$(me-only -d LOCK cmd) returns at once; its stderr is me-only's. \
     Redirect inside the command to keep its output, e.g. sh -c 'exec job \
     >>job.log 2>&1'.",
    "With --etcd, the lock is the oldest key under LOCK/ in etcd, tied to a \
     lease of --ttl seconds that a keeper process (me-only-keeper LOCK in ps) \
     renews while COMMAND runs and revokes when it exits. If the lease is lost \
     (etcd unreachable for the TTL, or the key deleted), or the keeper is told \
     to stop, or dies (a sentry process watches it), COMMAND and its \
     descendants get SIGTERM, then SIGKILL after \
     --kill-after seconds: until then a new holder may already run, so pass \
     ME_ONLY_FENCE with whatever COMMAND writes, and have the store refuse \
     older tokens. Waiters (--wait) queue behind the holder's key, oldest \
     first, as etcdctl lock does, and contend with it.",
    "Asking who holds an abstract lock (a conflict, --test, --list, \
     --replace) reads the kernel's socket table and /proc. Only where /proc \
     cannot show the holder (another user's process, unless run as root; one \
     in another pid namespace) does me-only connect to its listening socket \
     to read its credentials; the kernel keeps such a connection until the \
     holder exits, so me-only connects only while fewer than 32 wait there, \
     and past that names the holder's uid alone. A waiter (--wait) keeps one \
     connection for as long as it waits; past net.core.somaxconn of them, \
     waiters fall back to a short backoff.",
];

const SEE_ALSO: &str =
    "flock(1), flock(2), etcdctl(1), run-one(1), systemd.service(5), systemd.exec(5), unix(7)";

/// NAME's line, in man's style (--help's first line is a sentence).
const WHAT_IT_DOES: &str = "run a command unless another instance holds its lock";

/// SYNOPSIS: each form of the command line, as the option that makes it
/// (none: the everyday form) and the words that follow. The options are
/// looked up in the definition, so a renamed one fails the test.
const FORMS: [(Option<&str>, &[&str]); 4] = [
    (None, &["[OPTIONS]", "LOCK", "COMMAND", "[ARGS]..."]),
    (Some("test"), &["[OPTIONS]", "LOCK"]),
    (Some("list"), &["[OPTIONS]", "[PREFIX]"]),
    (Some("auto"), &["[OPTIONS]", "COMMAND", "[ARGS]..."]),
];

/// The page as roff.
fn render() -> String {
    let command = full_command();
    let man = Man::new(command.clone())
        .manual("User Commands")
        .source(format!("me-only {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page).unwrap();
    let mut text = String::from_utf8(page).unwrap();
    text.push_str(&name_and_synopsis(&command).to_roff());
    let mut page = Vec::new();
    man.render_description_section(&mut page).unwrap();
    man.render_options_section(&mut page).unwrap();
    text.push_str(&headings_as_subsections(
        &command,
        String::from_utf8(page).unwrap(),
    ));

    let mut roff = Roff::new();
    for (heading, lines) in help_sections(AFTER_LONG_HELP) {
        roff.control("SH", [heading]);
        if heading == "EXAMPLES" {
            roff.control("nf", []);
            for line in lines {
                roff.text([roman(line.trim())]);
            }
            roff.control("fi", []);
        } else {
            for (key, description) in entries(&lines) {
                roff.control("TP", [])
                    .text([bold(key)])
                    .text([roman(description)]);
            }
        }
    }
    roff.control("SH", ["NOTES"]);
    for note in NOTES {
        roff.control("PP", []).text([roman(*note)]);
    }
    roff.control("SH", ["SEE ALSO"]).text([roman(SEE_ALSO)]);
    text.push_str(&roff.to_roff());
    text
}

/// NAME, and SYNOPSIS with one line per form.
fn name_and_synopsis(command: &clap::Command) -> Roff {
    let name = command.get_name();
    let mut roff = Roff::new();
    roff.control("SH", ["NAME"])
        .text([roman(format!("{name} - {WHAT_IT_DOES}"))])
        .control("SH", ["SYNOPSIS"]);
    for (n, (option, words)) in FORMS.into_iter().enumerate() {
        if n > 0 {
            roff.control("br", []);
        }
        let mut line = vec![bold(name)];
        if let Some(option) = option {
            let known = command
                .get_arguments()
                .any(|arg| arg.get_long() == Some(option));
            assert!(known, "--{option} is no option of {name}");
            line.extend([roman(" "), bold(format!("--{option}"))]);
        }
        for word in words {
            // Brackets and dots are syntax, the names placeholders.
            let (open, rest) = word.split_at(usize::from(word.starts_with('[')));
            let placeholder = rest.trim_end_matches(['.', ']']);
            let close = &rest[placeholder.len()..];
            line.extend([roman(format!(" {open}")), italic(placeholder), roman(close)]);
        }
        roff.text(line);
    }
    roff
}

/// clap_mangen makes each --help heading a section of its own (.SH LOCK,
/// after OPTIONS): here each is a subsection of OPTIONS, as --help shows it.
fn headings_as_subsections(command: &clap::Command, mut sections: String) -> String {
    for heading in command
        .get_arguments()
        .filter_map(|arg| arg.get_help_heading())
    {
        let section = Roff::new()
            .control("SH", [heading.to_uppercase().as_str()])
            .to_roff();
        let subsection = Roff::new().control("SS", [heading]).to_roff();
        sections = sections.replace(&section, &subsection);
    }
    sections
}

/// Splits the help text into its `HEADING:` sections.
fn help_sections(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut sections: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        match line.strip_suffix(':') {
            Some(heading) if !line.starts_with(' ') => sections.push((heading, Vec::new())),
            _ => sections
                .last_mut()
                .expect("text before the first heading")
                .1
                .push(line),
        }
    }
    sections
}

/// `  KEY  description` entries; deeper-indented lines continue the last.
fn entries(lines: &[&str]) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in lines {
        let body = line.strip_prefix("  ").unwrap_or(line);
        match (body.starts_with(' '), entries.last_mut()) {
            (true, Some((_, description))) => {
                description.push(' ');
                description.push_str(body.trim());
            }
            _ => {
                let (key, description) = body.split_once("  ").unwrap_or((body, ""));
                entries.push((key.to_owned(), description.trim().to_owned()));
            }
        }
    }
    entries
}

#[test]
fn man_page_is_up_to_date() {
    let rendered = render();
    if std::env::var_os("ME_ONLY_UPDATE_MAN").is_some() {
        std::fs::write(MAN_PAGE, &rendered).unwrap();
    }
    let checked_in = std::fs::read_to_string(MAN_PAGE).unwrap_or_default();
    assert!(
        checked_in == rendered,
        "doc/me-only.1 is stale: run `ME_ONLY_UPDATE_MAN=1 cargo test man_page` and commit it"
    );
}

#[test]
fn man_page_has_the_sections_and_every_option() {
    let page = render();
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "NOTES",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            page.contains(&format!(".SH {section}\n"))
                || page.contains(&format!(".SH \"{section}\"\n")),
            "{section}"
        );
    }
    for argument in full_command().get_arguments() {
        if let Some(long) = argument.get_long() {
            let escaped = format!("--{long}").replace('-', "\\-");
            assert!(page.contains(&escaped), "--{long}");
        }
    }
}

/// The NAME line was --help's first sentence, capitalised; SYNOPSIS was
/// one seven-line dump of every option (issue #24).
#[test]
fn man_page_names_what_it_does_and_shows_each_form() {
    let page = render();
    let section = |name: &str| -> Vec<String> {
        page.lines()
            .skip_while(|line| *line != format!(".SH {name}"))
            .skip(1)
            .take_while(|line| !line.starts_with(".SH"))
            // Each roff chunk's preamble, defining the apostrophe.
            .filter(|line| !line.starts_with(".ie") && !line.starts_with(".el"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        section("NAME"),
        ["me\\-only \\- run a command unless another instance holds its lock"]
    );
    assert_eq!(
        section("SYNOPSIS"),
        [
            "\\fBme\\-only\\fR [\\fIOPTIONS\\fR] \\fILOCK\\fR \\fICOMMAND\\fR [\\fIARGS\\fR]...",
            ".br",
            "\\fBme\\-only\\fR \\fB\\-\\-test\\fR [\\fIOPTIONS\\fR] \\fILOCK\\fR",
            ".br",
            "\\fBme\\-only\\fR \\fB\\-\\-list\\fR [\\fIOPTIONS\\fR] [\\fIPREFIX\\fR]",
            ".br",
            "\\fBme\\-only\\fR \\fB\\-\\-auto\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ]
    );
}

/// OPTIONS holds --help's headings as subsections, and names the values.
#[test]
fn man_page_options_are_grouped_as_in_help() {
    let page = render();
    let options = page
        .split(".SH OPTIONS\n")
        .nth(1)
        .and_then(|rest| rest.split(".SH ").next())
        .unwrap();
    for heading in full_command()
        .get_arguments()
        .filter_map(|arg| arg.get_help_heading())
    {
        let subsection = Roff::new().control("SS", [heading]).to_roff();
        assert!(options.contains(&subsection), "{subsection}");
    }
    for shown in [
        "\\fB\\-\\-timeout\\fR \\fI<SECS>\\fR",
        "\\fB\\-E\\fR, \\fB\\-\\-conflict\\-exit\\-code\\fR \\fI<N>\\fR",
    ] {
        assert!(options.contains(shown), "{shown} not in {options}");
    }
}

#[test]
fn help_entries_fold_continuation_lines() {
    let sections = help_sections("A:\n  k  one\n     two\n  kk  three\nB:\n  x\n");
    assert_eq!(sections.len(), 2);
    assert_eq!(
        entries(&sections[0].1),
        [
            ("k".to_owned(), "one two".to_owned()),
            ("kk".to_owned(), "three".to_owned())
        ]
    );
}
