//! The shell completions in doc/completions (what the Debian package
//! installs), run by the shells themselves: `me-only --ti<Tab>` becomes
//! `--timeout`, `me-only --te<Tab>` becomes `--test`.

use crate::common;

use std::process::Command;

use common::text;

const COMPLETIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/completions");

/// The words that complete `start` as bash's completion offers them.
fn bash_completes(start: &str) -> Vec<String> {
    let script = format!(
        "source {COMPLETIONS}/me-only.bash
         function=$(complete -p me-only | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')
         COMP_WORDS=(me-only {start}); COMP_CWORD=1
         COMP_LINE='me-only {start}'; COMP_POINT=${{#COMP_LINE}}
         \"$function\" me-only {start} me-only
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    words(Command::new("bash").args(["--norc", "-c", &script]))
}

/// The words that complete `start` as fish's completion offers them.
fn fish_completes(start: &str) -> Vec<String> {
    let script =
        format!("source {COMPLETIONS}/me-only.fish; complete -C 'me-only {start}' | cut -f1");
    words(Command::new("fish").args(["--no-config", "-c", &script]))
}

/// What zsh's completion system makes of `me-only START<Tab>` typed into
/// an interactive zsh on a pseudo-terminal (zsh/zpty): the word the line
/// then holds after `me-only `. zsh draws the line as it completes it, so
/// its output is read until the word has grown, for 10 s at most.
fn zsh_completes(start: &str) -> Vec<String> {
    let script = format!(
        r#"setopt extendedglob
        zmodload zsh/zpty
        zpty shell zsh -f -i
        zpty -w shell "PS1='> '; fpath=({COMPLETIONS} \$fpath); autoload -U compinit; compinit -u -D"
        zpty -w -n shell "me-only {start}"$'\t'
        out=""
        for i in {{1..100}}; do
            zpty -rt shell chunk && out+=$chunk
            [[ $out == *"me-only {start}"[a-z-]##* ]] && break
            sleep 0.1
        done
        zpty -d shell
        print -r -- $out | grep -ao 'me-only --[a-z-]*' | tail -n 1 | cut -d' ' -f2"#
    );
    words(Command::new("zsh").args(["-f", "-c", &script]))
}

fn words(command: &mut Command) -> Vec<String> {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    text(&output.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_shell_completes_the_options() {
    type Completer = fn(&str) -> Vec<String>;
    for (shell, completes) in [
        ("bash", bash_completes as Completer),
        ("fish", fish_completes),
        ("zsh", zsh_completes),
    ] {
        if !common::programs_or_skip(&[shell]) {
            continue;
        }
        assert_eq!(completes("--ti"), ["--timeout"], "{shell}");
        assert_eq!(completes("--te"), ["--test"], "{shell}");
    }
}
