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
    let mut command = full_command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "me-only", &mut script);
    let script = String::from_utf8(script).unwrap();
    match shell {
        Shell::Bash => bash_up_to_command(&script, &command),
        Shell::Zsh => zsh_up_to_command(&script),
        Shell::Fish => fish_up_to_command(&script, &command),
        _ => script,
    }
}

/// zsh: COMMAND and its arguments complete as a command line of their own
/// (`*:::` and `_normal`, as zsh's own completions of sudo and nice do); with --auto,
/// whose first word is COMMAND, there is no LOCK to complete.
fn zsh_up_to_command(script: &str) -> String {
    let command = "'*::command -- ";
    let auto = "'(--tcp --flock)--auto[";
    assert!(
        script.contains(command) && script.contains(auto),
        "clap's zsh script changed"
    );
    let rest = &script[script.find(command).unwrap()..];
    let action = &rest[..rest.find("' \\\n").unwrap()];
    // Three colons: `words` is then COMMAND and its arguments alone, not
    // LOCK before them.
    let described = action.strip_suffix(":_default").unwrap();
    let normal = format!("{}:_normal", described.replacen("'*::", "'*:::", 1));
    script
        .replace(action, &normal)
        .replace(auto, "'(--tcp --flock 1)--auto[")
}

/// bash: clap's function knows no COMMAND, and offers me-only's options
/// after it (they would be COMMAND's). A small function in front finds
/// where COMMAND starts, as me-only reads the words, and from there
/// completes a command line of its own: with bash-completion, by its
/// `_command_offset` (as sudo's and nice's completions do); without, command
/// names, then file names (`-o default`). Before COMMAND, clap's function.
const BASH_UP_TO_COMMAND: &str = r#"
# COMMAND and its arguments complete as a command line of their own.
_me_only_command() {
    local i word positional=0 first=2 options=1
    for (( i = 1; i < COMP_CWORD; i++ )); do
        word=${COMP_WORDS[i]}
        if (( options )) && [[ $word == -?* ]]; then
            case $word in
                --) options=0 ;;
                --auto) first=1 ;;
                # No COMMAND: these run nothing.
                --test | --list | --list=* | -[!-]*t*) first=0 ;;
                VALUE_OPTIONS) (( i++ )) ;;
                # A word right after --etcd is its ENDPOINTS.
                --etcd) [[ ${COMP_WORDS[i+1]} == -* ]] || (( i++ )) ;;
            esac
            [[ $word =~ ^-[^-SHORT_VALUES]*[SHORT_VALUES]$ ]] && (( i++ ))
        elif (( ++positional == first )); then
            _me_only_run_command "$i"
            return
        fi
    done
    if (( first > 0 && positional + 1 == first )) && [[ ${COMP_WORDS[COMP_CWORD]} != -* || $options == 0 ]]; then
        _me_only_run_command "$COMP_CWORD"
        return
    fi
    _me__only "$@"
}

# Completes the words from $1 on as a command line of their own.
_me_only_run_command() {
    if declare -F _command_offset >/dev/null; then
        _command_offset "$1"
    elif (( $1 == COMP_CWORD )); then
        COMPREPLY=($(compgen -c -- "${COMP_WORDS[COMP_CWORD]}"))
    else
        COMPREPLY=()
    fi
}
"#;

/// clap's script with `_me_only_command` in front, told which options
/// take a value (the word after them is not LOCK or COMMAND).
fn bash_up_to_command(script: &str, command: &clap::Command) -> String {
    let (longs, shorts) = options_taking_values(command);
    let front = BASH_UP_TO_COMMAND
        .replace("VALUE_OPTIONS", &longs.join(" | "))
        .replace("SHORT_VALUES", &shorts);
    let script = script.replace("complete -F _me__only ", "complete -F _me_only_command ");
    let (clap_function, registration) =
        script.split_at(script.find("\nif [[ \"${BASH_VERSINFO").unwrap());
    format!("{clap_function}{front}{registration}")
}

/// fish: as bash's, a function finds where COMMAND starts; from there
/// fish's own `__fish_complete_subcommand` completes a command line of its
/// own (as its completions of sudo and nice do), and clap's lines, each
/// told to keep out, offer me-only's options only before it.
const FISH_UP_TO_COMMAND: &str = r#"
# Where COMMAND starts among the words before the cursor (1 is me-only's):
# printed, with status 0, once it has; status 1 before.
function __me_only_command_start
    set -l words (commandline -opc)
    set -l positional 0
    set -l first 2
    set -l options 1
    set -l i 2
    while test $i -le (count $words)
        set -l word $words[$i]
        if test $options = 1; and string match -qr -- '^-.' $word
            switch $word
                case --
                    set options 0
                case --auto
                    set first 1
                # No COMMAND: these run nothing.
                case --test --list '--list=*'
                    set first 0
                case VALUE_OPTIONS
                    set i (math $i + 1)
                # A word right after --etcd is its ENDPOINTS.
                case --etcd
                    set -l next (math $i + 1)
                    if test $next -le (count $words); and not string match -q -- '-*' $words[$next]
                        set i $next
                    end
                case '--*'
                case '*'
                    string match -qr -- '^-[^-]*t' $word; and set first 0
                    string match -qr -- '^-[^-SHORT_VALUES]*[SHORT_VALUES]$' $word; and set i (math $i + 1)
            end
        else
            set positional (math $positional + 1)
            if test $positional = $first
                echo $i
                return 0
            end
        end
        set i (math $i + 1)
    end
    # The word under the cursor is COMMAND.
    if test $first -gt 0; and test (math $positional + 1) = $first
        if test $options = 0; or not string match -q -- '-*' (commandline -ct)
            echo (math (count $words) + 1)
            return 0
        end
    end
    return 1
end

function __me_only_complete_command
    set -l start (__me_only_command_start)
    set -l words (commandline -opc) (commandline -ct)
    __fish_complete_subcommand --commandline $words[$start..-1]
end

complete -c me-only -n __me_only_command_start -f -a '(__me_only_complete_command)'
"#;

/// clap's script, each line kept to the words before COMMAND, after the
/// function that tells where COMMAND starts.
fn fish_up_to_command(script: &str, command: &clap::Command) -> String {
    let (longs, shorts) = options_taking_values(command);
    let front = FISH_UP_TO_COMMAND
        .replace("VALUE_OPTIONS", &longs.join(" "))
        .replace("SHORT_VALUES", &shorts);
    let lines = script.replace(
        "complete -c me-only ",
        "complete -c me-only -n 'not __me_only_command_start' ",
    );
    format!("{}{lines}", front.trim_start())
}

/// The long options (`--timeout`) and short letters (`E`) that take a
/// value: the word after them is not LOCK or COMMAND.
fn options_taking_values(command: &clap::Command) -> (Vec<String>, String) {
    let takes_value = |arg: &&clap::Arg| {
        arg.get_num_args()
            .is_some_and(|range| range.min_values() > 0)
            && arg.get_action().takes_values()
            && !arg.is_positional()
    };
    let longs = command
        .get_arguments()
        .filter(takes_value)
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect();
    let shorts = command
        .get_arguments()
        .filter(takes_value)
        .filter_map(clap::Arg::get_short)
        .collect();
    (longs, shorts)
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
