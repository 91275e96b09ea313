//! The shell completions in doc/completions (what the Debian package
//! installs), run by the shells themselves: `me-only --ti<Tab>` becomes
//! `--timeout`, `me-only --te<Tab>` becomes `--test`.

use crate::common;

use std::process::Command;

use common::text;

const COMPLETIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/doc/completions");

/// The words that complete `start` as bash's completion offers them.
fn bash_completes(start: &str) -> Vec<String> {
    bash_completes_line(&format!("me-only {start}"), "")
}

/// bash-completion's main script, whose `_command_offset` completes a
/// command line inside another (sudo's, nice's, me-only's COMMAND).
const BASH_COMPLETION: &str = "/usr/share/bash-completion/bash_completion";

/// What bash's completion offers for the last word of `line` (empty when
/// it ends with a space), `prelude` run first.
fn bash_completes_line(line: &str, prelude: &str) -> Vec<String> {
    let mut words: Vec<&str> = line.split(' ').collect();
    let current = words.len() - 1;
    if words[current].is_empty() {
        words[current] = "''";
    }
    let script = format!(
        "{prelude}
         source {COMPLETIONS}/me-only.bash
         function=$(complete -p me-only | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')
         COMP_WORDS=({words}); COMP_CWORD={current}
         COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
         \"$function\" me-only \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = words.join(" ")
    );
    words_of(Command::new("bash").args(["--norc", "-c", &script]))
}

/// The words that complete `start` as fish's completion offers them.
fn fish_completes(start: &str) -> Vec<String> {
    let script =
        format!("source {COMPLETIONS}/me-only.fish; complete -C 'me-only {start}' | cut -f1");
    words_of(Command::new("fish").args(["--no-config", "-c", &script]))
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
    words_of(Command::new("zsh").args(["-f", "-c", &script]))
}

fn words_of(command: &mut Command) -> Vec<String> {
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

/// After COMMAND, bash offered me-only's 37 options (they would be
/// COMMAND's), and COMMAND itself completed as nothing in particular
/// (issue #24): COMMAND completes as a command name, its arguments as its
/// own; --auto's COMMAND too; before COMMAND, me-only's options as before.
#[test]
fn bash_completes_command_as_a_command_line_of_its_own() {
    if !common::programs_or_skip(&["bash"]) {
        return;
    }
    let offered = |line: &str| bash_completes_line(line, "cd /");
    for line in [
        "me-only lock ls --",
        "me-only -q -E 9 lock ls --",
        "me-only --timeout 5 lock sh --",
        "me-only --auto ls --",
        "me-only -- lock ls --",
    ] {
        let options = offered(line);
        assert!(
            !options.iter().any(|word| word == "--wait"),
            "{line}: {options:?}"
        );
    }
    for line in [
        "me-only lock ech",
        "me-only -w --etcd http://h:1 lock ech",
        "me-only --auto ech",
        "me-only -qE 3 lock ech",
    ] {
        assert!(
            offered(line).contains(&"echo".to_owned()),
            "{line}: {:?}",
            offered(line)
        );
    }
    assert_eq!(offered("me-only --wa"), ["--wait"]);
    assert_eq!(offered("me-only lock --ti"), ["--timeout"]);
    assert_eq!(offered("me-only --list --js"), ["--json"]);
    assert_eq!(offered("me-only --test lock --qu"), ["--quiet"]);
}

/// With bash-completion, COMMAND's arguments complete as COMMAND's own
/// completion has them: `me-only lock ls --al` offers ls's --all.
#[test]
fn bash_with_bash_completion_completes_commands_arguments_as_its_own() {
    if !common::programs_or_skip(&["bash"]) {
        return;
    }
    if !std::path::Path::new(BASH_COMPLETION).exists() {
        common::skip("needs bash-completion (apt-get install bash-completion)");
        return;
    }
    let prelude = format!("source {BASH_COMPLETION}");
    for line in ["me-only lock ls --al", "me-only --auto -q ls --al"] {
        let offered = bash_completes_line(line, &prelude);
        assert!(offered.contains(&"--all".to_owned()), "{line}: {offered:?}");
    }
    let commands = bash_completes_line("me-only -w lock ech", &prelude);
    assert!(commands.contains(&"echo".to_owned()), "{commands:?}");
}

/// What zsh makes of `LINE<Tab>` (as zsh_completes does): the last word of
/// the line once it has grown, "" if it did not within 10 s.
fn zsh_completes_line(line: &str) -> String {
    let last = line.rsplit(' ').next().unwrap();
    let script = format!(
        r#"setopt extendedglob
        zmodload zsh/zpty
        zpty shell zsh -f -i
        zpty -w shell "PS1='> '; fpath=({COMPLETIONS} \$fpath); autoload -U compinit; compinit -u -D"
        zpty -w -n shell "{line}"$'\t'
        out=""
        for i in {{1..100}}; do
            zpty -rt shell chunk && out+=$chunk
            [[ $out == *"{line}"[a-z-]##* ]] && break
            sleep 0.1
        done
        zpty -d shell
        print -r -- $out | grep -ao -- '{last}[a-z-]*' | tail -n 1"#
    );
    words_of(Command::new("zsh").args(["-f", "-c", &script]))
        .pop()
        .unwrap_or_default()
}

/// zsh completed COMMAND and its arguments as any word (`_default`):
/// COMMAND now completes as a command name, its arguments as that
/// command's (`_normal`), --auto's COMMAND too.
#[test]
fn zsh_completes_command_as_a_command_line_of_its_own() {
    if !common::programs_or_skip(&["zsh"]) {
        return;
    }
    assert_eq!(zsh_completes_line("me-only lock whoam"), "whoami");
    assert_eq!(zsh_completes_line("me-only --auto whoam"), "whoami");
    assert_eq!(
        zsh_completes_line("me-only -q lock ls --almost-a"),
        "--almost-all"
    );
}

/// What fish's completion offers for `line`, with fish's own completions of
/// other commands (`ls`'s) loaded as an interactive fish would.
fn fish_completes_line(line: &str) -> Vec<String> {
    let script = format!(
        "set -g fish_complete_path $__fish_data_dir/completions
         source {COMPLETIONS}/me-only.fish; complete -C '{line}' | cut -f1"
    );
    words_of(Command::new("fish").args(["--no-config", "-c", &script]))
}

/// fish, as bash: after COMMAND it offered me-only's options (issue #24).
/// COMMAND completes as a command name, its arguments as its own (fish's
/// completion of ls offers --all); --auto's COMMAND too; before COMMAND,
/// me-only's options.
#[test]
fn fish_completes_command_as_a_command_line_of_its_own() {
    if !common::programs_or_skip(&["fish"]) {
        return;
    }
    for line in [
        "me-only lock ls --al",
        "me-only -q -E 9 lock ls --al",
        "me-only --timeout 5 lock ls --al",
        "me-only --auto ls --al",
        "me-only -- lock ls --al",
    ] {
        let offered = fish_completes_line(line);
        assert!(offered.contains(&"--all".to_owned()), "{line}: {offered:?}");
        assert!(
            !offered.contains(&"--wait".to_owned()),
            "{line}: {offered:?}"
        );
    }
    for line in [
        "me-only lock ech",
        "me-only -w --etcd http://h:1 lock ech",
        "me-only --auto ech",
        "me-only -qE 3 lock ech",
    ] {
        let offered = fish_completes_line(line);
        assert!(offered.contains(&"echo".to_owned()), "{line}: {offered:?}");
    }
    assert_eq!(fish_completes_line("me-only --wa"), ["--wait"]);
    assert_eq!(fish_completes_line("me-only lock --ti"), ["--timeout"]);
    assert_eq!(fish_completes_line("me-only --list --js"), ["--json"]);
    assert_eq!(fish_completes_line("me-only --test lock --qu"), ["--quiet"]);
}
