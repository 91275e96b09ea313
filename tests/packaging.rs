//! The Debian package's metadata agrees with the crate's.

use crate::common;

use std::fs;
use std::path::Path;

fn in_repo(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// One version: Cargo.toml's, which `--version` prints, is the package's
/// upstream version, followed by a Debian revision (format 3.0 (quilt)).
#[test]
fn debian_changelog_version_is_the_crate_version() {
    let changelog = in_repo("debian/changelog");
    let first_line = changelog.lines().next().unwrap();
    let version = first_line
        .strip_prefix("me-only (")
        .and_then(|rest| rest.split_once(')'))
        .map(|(version, _)| version)
        .unwrap_or_else(|| panic!("unexpected first line: {first_line}"));
    let (upstream, revision) = version
        .rsplit_once('-')
        .unwrap_or_else(|| panic!("{version}: no Debian revision"));
    assert_eq!(upstream, env!("CARGO_PKG_VERSION"));
    assert!(
        !revision.is_empty()
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.'),
        "{version}: odd Debian revision"
    );
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

/// One text for the exit status, everywhere: the README's table says what
/// `--help` (and so the man page, made from it) says, word for word once
/// the README's backticks are gone.
#[test]
fn readme_exit_status_table_is_the_help_text() {
    let help = common::me_only().arg("--help").output().unwrap();
    let help = common::text(&help.stdout);
    let section = help
        .split("EXIT STATUS:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("an EXIT STATUS section in --help");
    // `  KEY  description`, continued on more deeply indented lines.
    let mut from_help: Vec<(String, String)> = Vec::new();
    for line in section.lines() {
        let body = &line[2..];
        match from_help.last_mut() {
            Some((_, description)) if body.starts_with(' ') => {
                description.push(' ');
                description.push_str(body.trim());
            }
            _ => {
                let (code, description) = body.split_once("  ").unwrap();
                from_help.push((code.to_owned(), description.trim().to_owned()));
            }
        }
    }
    let readme = in_repo("README.md");
    let from_readme: Vec<(String, String)> = readme
        .split("| code | meaning |\n|---|---|\n")
        .nth(1)
        .expect("the README's exit status table")
        .lines()
        .take_while(|line| line.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
            (cells[0].trim().to_owned(), cells[1].trim().replace('`', ""))
        })
        .collect();
    assert_eq!(from_readme, from_help);
}

/// The README's table of options names every option `--help` has (issue
/// #24): --replace, --max-time, --slots and the like were added without a
/// row, so a reader of the README never learnt of them.
#[test]
fn readme_options_table_has_every_long_option_of_help() {
    let help = common::me_only().arg("--help").output().unwrap();
    let help = common::text(&help.stdout);
    let options = help
        .split("Options:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n\n").next())
        .expect("an Options section in --help");
    // An option's own line, `  -w, --wait` or `      --timeout <SECS>`;
    // its description is indented further.
    let from_help: Vec<&str> = options
        .lines()
        .filter_map(|line| {
            line.strip_prefix("  -")
                .and_then(|short| short.split_once(", --"))
                .map(|(_, long)| long)
                .or_else(|| line.strip_prefix("      --"))
        })
        .filter_map(|long| long.split([' ', '[']).next())
        .collect();
    assert!(
        from_help.contains(&"wait") && from_help.contains(&"version"),
        "{from_help:?}"
    );
    let readme = in_repo("README.md");
    let table_options: Vec<&str> = readme
        .split("| option | meaning |\n|---|---|\n")
        .nth(1)
        .expect("the README's table of options")
        .lines()
        .take_while(|line| line.starts_with('|'))
        .filter_map(|row| row.trim_start_matches('|').split(" | ").next())
        .flat_map(|cell| cell.split("--").skip(1))
        .filter_map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
        })
        .collect();
    let missing: Vec<&&str> = from_help
        .iter()
        .filter(|option| !table_options.contains(option))
        .collect();
    assert!(
        missing.is_empty(),
        "README's table of options lacks {missing:?}"
    );
}

/// README and the guides it links to (issue #24 moved most of README into
/// doc/): every relative link names a file of the tree, and a `#part` a
/// heading of that file, as GitHub makes anchors of headings.
#[test]
fn readme_and_guides_link_to_what_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = vec![root.join("README.md")];
    for entry in fs::read_dir(root.join("doc")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            documents.push(path);
        }
    }
    assert!(documents.len() > 5, "{documents:?}");
    let mut broken = Vec::new();
    for document in &documents {
        let text = fs::read_to_string(document).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, part) = target.split_once('#').unwrap_or((&target, ""));
            let linked = match file {
                "" => document.clone(),
                file => document.parent().unwrap().join(file),
            };
            let ok = match fs::read_to_string(&linked) {
                Ok(linked_text) => {
                    part.is_empty() || anchors(&linked_text).iter().any(|a| a == part)
                }
                Err(_) => linked.exists() && part.is_empty(),
            };
            if !ok {
                broken.push(format!("{}: {target}", document.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// The targets of the Markdown links `[text](target)` of `text`.
fn link_targets(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
        .filter(|target| !target.contains(char::is_whitespace))
        .collect()
}

/// The anchors GitHub makes of a document's headings (outside code
/// blocks): lower case, punctuation dropped, spaces as hyphens.
fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let heading = line.trim_start_matches('#');
        if in_code || heading.len() == line.len() || !heading.starts_with(' ') {
            continue;
        }
        let anchor: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        anchors.push(anchor);
    }
    anchors
}

/// Every guide of doc/ is installed with README (debian/me-only.docs
/// names files, not patterns: a new guide must be added there).
#[test]
fn every_guide_is_installed() {
    let installed = in_repo("debian/me-only.docs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in fs::read_dir(root.join("doc")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            let guide = format!("doc/{name}");
            assert!(
                installed.lines().any(|line| line == guide),
                "debian/me-only.docs lacks {guide}"
            );
        }
    }
}
