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
                case --timeout --conflict-exit-code --replace-older --kill-after --signal --max-time --respawn-delay --tries --slots --ttl --cacert --cert --key --user --password
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
                    string match -qr -- '^-[^-E]*[E]$' $word; and set i (math $i + 1)
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
complete -c me-only -n 'not __me_only_command_start' -l timeout -d 'Wait at most SECS, then exit as when held' -r
complete -c me-only -n 'not __me_only_command_start' -s E -l conflict-exit-code -d 'Exit code when the lock is held' -r
complete -c me-only -n 'not __me_only_command_start' -l replace-older -d 'Like --replace, but only a holder SECS old or more' -r
complete -c me-only -n 'not __me_only_command_start' -l kill-after -d 'Seconds from the first signal to SIGKILL [default: 10]' -r
complete -c me-only -n 'not __me_only_command_start' -l signal -d 'The first signal to what is stopped [default: TERM]' -r
complete -c me-only -n 'not __me_only_command_start' -l max-time -d 'Stop COMMAND once it has held the lock SECS: exit 124' -r
complete -c me-only -n 'not __me_only_command_start' -l respawn-delay -d 'Back-off between runs: MIN doubling up to MAX [default: 1,60]' -r
complete -c me-only -n 'not __me_only_command_start' -l tries -d 'Run COMMAND N times at most (with --respawn and the like)' -r
complete -c me-only -n 'not __me_only_command_start' -l list -d 'List the locks held and their holders (--json)' -r
complete -c me-only -n 'not __me_only_command_start' -l slots -d 'Let up to N instances run at once' -r
complete -c me-only -n 'not __me_only_command_start' -l etcd -d 'Lock the name LOCK in an etcd cluster, across hosts' -r
complete -c me-only -n 'not __me_only_command_start' -l ttl -d 'With --etcd: the lease\'s time to live [default: 10]' -r
complete -c me-only -n 'not __me_only_command_start' -l cacert -d 'With --etcd: the CA certificates (PEM) that sign the https endpoints\' certificates [default: the system\'s]' -r -F
complete -c me-only -n 'not __me_only_command_start' -l cert -d 'With --etcd: a client certificate (PEM), for clusters that ask for one; with --key' -r -F
complete -c me-only -n 'not __me_only_command_start' -l key -d 'With --etcd: the client certificate\'s private key (PEM)' -r -F
complete -c me-only -n 'not __me_only_command_start' -l user -d 'With --etcd: log in to a cluster with auth enabled as USER (the password after the first colon, with --password, or in ME_ONLY_ETCD_PASSWORD; given twice, the command line\'s wins over the environment\'s, and USER:PASSWORD\'s over the other)' -r
complete -c me-only -n 'not __me_only_command_start' -l password -d 'With --etcd: the password of --user (better in ME_ONLY_ETCD_PASSWORD: an argument can be read by any user while me-only starts)' -r
complete -c me-only -n 'not __me_only_command_start' -l tcp -d 'Lock a loopback TCP port: LOCK is [ADDR:]PORT'
complete -c me-only -n 'not __me_only_command_start' -l flock -d 'Lock the file LOCK with flock(2), as flock(1) does'
complete -c me-only -n 'not __me_only_command_start' -s w -l wait -d 'Wait for the lock instead of failing when it is held'
complete -c me-only -n 'not __me_only_command_start' -s f -l fork -d 'Run COMMAND as a child, me-only keeping the lock'
complete -c me-only -n 'not __me_only_command_start' -s d -l detach -d 'Start COMMAND in the background and print its pid'
complete -c me-only -n 'not __me_only_command_start' -s t -l test -d 'Tell whether the lock is held, and by whom'
complete -c me-only -n 'not __me_only_command_start' -s q -l quiet -d 'Say nothing when the lock is held'
complete -c me-only -n 'not __me_only_command_start' -s v -l verbose -d 'Print diagnostics on stderr'
complete -c me-only -n 'not __me_only_command_start' -l replace -d 'Stop the instance that holds the lock, then run'
complete -c me-only -n 'not __me_only_command_start' -l respawn -d 'Run COMMAND again each time it exits, keeping the lock'
complete -c me-only -n 'not __me_only_command_start' -l until-success -d 'As --respawn, until a run exits 0; exit 0'
complete -c me-only -n 'not __me_only_command_start' -l until-failure -d 'As --respawn, until a run fails; exit with its status'
complete -c me-only -n 'not __me_only_command_start' -l auto -d 'No LOCK: the lock is named from COMMAND and its arguments'
complete -c me-only -n 'not __me_only_command_start' -l json -d 'With --list: print JSON instead of a table'
complete -c me-only -n 'not __me_only_command_start' -l shared -d 'With --flock: take a shared lock, as flock -s does'
complete -c me-only -n 'not __me_only_command_start' -l insecure-skip-tls-verify -d 'With --etcd: do not check the https endpoints\' certificates (the connection is then open to anyone in between)'
complete -c me-only -n 'not __me_only_command_start' -s h -l help -d 'Print help (see more with \'--help\')'
complete -c me-only -n 'not __me_only_command_start' -s V -l version -d 'Print version'
