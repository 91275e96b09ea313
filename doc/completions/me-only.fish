complete -c me-only -l timeout -d 'Wait at most SECS, then exit as when held' -r
complete -c me-only -s E -l conflict-exit-code -d 'Exit code when the lock is held' -r
complete -c me-only -l replace-older -d 'Like --replace, but only a holder SECS old or more' -r
complete -c me-only -l kill-after -d 'Seconds from the first signal to SIGKILL [default: 10]' -r
complete -c me-only -l signal -d 'The first signal to what is stopped [default: TERM]' -r
complete -c me-only -l max-time -d 'Stop COMMAND once it has held the lock SECS: exit 124' -r
complete -c me-only -l list -d 'List the locks held and their holders (--json)' -r
complete -c me-only -l slots -d 'Let up to N instances run at once' -r
complete -c me-only -l etcd -d 'Lock the name LOCK in an etcd cluster, across hosts' -r
complete -c me-only -l ttl -d 'With --etcd: the lease\'s time to live [default: 10]' -r
complete -c me-only -l cacert -d 'With --etcd: the CA certificates (PEM) that sign the https endpoints\' certificates [default: the system\'s]' -r -F
complete -c me-only -l cert -d 'With --etcd: a client certificate (PEM), for clusters that ask for one; with --key' -r -F
complete -c me-only -l key -d 'With --etcd: the client certificate\'s private key (PEM)' -r -F
complete -c me-only -l user -d 'With --etcd: log in to a cluster with auth enabled as USER (the password after the first colon, with --password, or in ME_ONLY_ETCD_PASSWORD; given twice, the command line\'s wins over the environment\'s, and USER:PASSWORD\'s over the other)' -r
complete -c me-only -l password -d 'With --etcd: the password of --user (better in ME_ONLY_ETCD_PASSWORD: an argument can be read by any user while me-only starts)' -r
complete -c me-only -l tcp -d 'Lock a loopback TCP port: LOCK is [ADDR:]PORT'
complete -c me-only -l flock -d 'Lock the file LOCK with flock(2), as flock(1) does'
complete -c me-only -s w -l wait -d 'Wait for the lock instead of failing when it is held'
complete -c me-only -s f -l fork -d 'Run COMMAND as a child, me-only keeping the lock'
complete -c me-only -s d -l detach -d 'Start COMMAND in the background and print its pid'
complete -c me-only -s t -l test -d 'Tell whether the lock is held, and by whom'
complete -c me-only -s q -l quiet -d 'Say nothing when the lock is held'
complete -c me-only -s v -l verbose -d 'Print diagnostics on stderr'
complete -c me-only -l replace -d 'Stop the instance that holds the lock, then run'
complete -c me-only -l auto -d 'No LOCK: the lock is named from COMMAND and its arguments'
complete -c me-only -l json -d 'With --list: print JSON instead of a table'
complete -c me-only -l insecure-skip-tls-verify -d 'With --etcd: do not check the https endpoints\' certificates (the connection is then open to anyone in between)'
complete -c me-only -s h -l help -d 'Print help (see more with \'--help\')'
complete -c me-only -s V -l version -d 'Print version'
