//! Shell completions for bash, zsh and fish, generated from the clap
//! definition so that they cannot drift from `--help`. They are checked in
//! (doc/completions/, installed by the Debian package); a test fails when
//! one is stale. Regenerate with
//! `ME_ONLY_UPDATE_COMPLETIONS=1 cargo test completions`.

use clap_complete::Shell;

use crate::cli::full_command;

const DIRECTORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/completions");

/// Each shell, and the file its completion is kept in.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "me-only.bash"),
    (Shell::Zsh, "_me-only"),
    (Shell::Fish, "me-only.fish"),
];

fn render(shell: Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut full_command(), "me-only", &mut script);
    String::from_utf8(script).unwrap()
}

#[test]
fn completions_are_up_to_date() {
    for (shell, file) in SHELLS {
        let path = format!("{DIRECTORY}/{file}");
        let rendered = render(shell);
        if std::env::var_os("ME_ONLY_UPDATE_COMPLETIONS").is_some() {
            std::fs::write(&path, &rendered).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == rendered,
            "doc/completions/{file} is stale: run \
             `ME_ONLY_UPDATE_COMPLETIONS=1 cargo test completions` and commit it"
        );
    }
}
