_me__only() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="me__only"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        me__only)
            opts="-w -f -d -t -E -q -v -h -V --tcp --flock --wait --timeout --fork --detach --test --conflict-exit-code --quiet --verbose --replace --replace-older --kill-after --signal --max-time --respawn --until-success --until-failure --respawn-delay --tries --auto --list --json --slots --shared --etcd --ttl --cacert --cert --key --insecure-skip-tls-verify --user --password --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --conflict-exit-code)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -E)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --replace-older)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --kill-after)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --signal)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-time)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --respawn-delay)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --tries)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --list)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --slots)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --etcd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ttl)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cacert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cert)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --user)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --password)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

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
                --timeout | --conflict-exit-code | --replace-older | --kill-after | --signal | --max-time | --respawn-delay | --tries | --slots | --ttl | --cacert | --cert | --key | --user | --password) (( i++ )) ;;
                # A word right after --etcd is its ENDPOINTS.
                --etcd) [[ ${COMP_WORDS[i+1]} == -* ]] || (( i++ )) ;;
            esac
            [[ $word =~ ^-[^-E]*[E]$ ]] && (( i++ ))
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

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _me_only_command -o nosort -o bashdefault -o default me-only
else
    complete -F _me_only_command -o bashdefault -o default me-only
fi
