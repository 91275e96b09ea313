complete -c me-only -l timeout -d 'Wait at most SECS (fractions allowed; implies --wait), then exit as when held; 0 does not wait' -r
complete -c me-only -s E -l conflict-exit-code -d 'Exit with N instead of 4 when the lock is held' -r
complete -c me-only -l replace-older -d 'Like --replace, but only a holder started at least SECS ago; a younger one is a conflict as without --replace' -r
complete -c me-only -l kill-after -d 'How long a process being stopped (--replace\'s holder, a run past --max-time, with --etcd a fenced-off COMMAND) has between its first signal and SIGKILL [default: 10]' -r
complete -c me-only -l signal -d 'The first signal --replace and --max-time send to what they stop (SIGKILL follows after --kill-after), as timeout(1)\'s: a name, with or without SIG, or a number. With --etcd --replace, the holder\'s own keeper stops it, with TERM [default: TERM]' -r
complete -c me-only -l max-time -d 'Stop COMMAND and every process it started (SIGTERM or --signal, SIGKILL after --kill-after) once it has held the lock SECS, and exit 124 (or COMMAND\'s own status, if it had ended in time and only what it left running was stopped); 0 is no limit, as in timeout(1). Implies --fork: me-only stays to keep the time and tell a capped run by its exit code' -r
complete -c me-only -l list -d 'Run nothing: list the me-only locks held on this host (abstract, tcp, flock; only those with --tcp or --flock; with --etcd, those in etcd) whose names start with PREFIX: lock, backend, pid, uid, host, age, command. Another user\'s are seen by root only' -r
complete -c me-only -l slots -d 'Let up to N instances run at once: take the first free of N locks named from LOCK (LOCK.1 ... LOCK.N; with --tcp, ports PORT to PORT+N-1); COMMAND learns which in ME_ONLY_SLOT. Held when all N are; --wait waits for the first to come free' -r
complete -c me-only -l etcd -d 'Lock the name LOCK in an etcd cluster, for one instance across hosts. ENDPOINTS: http[s]://HOST:PORT[,...]; without them (--etcd= or --etcd followed by another option), ME_ONLY_ETCD_ENDPOINTS or ETCDCTL_ENDPOINTS. A word right after --etcd is always ENDPOINTS: `--etcd LOCK CMD` is not what you mean, `--etcd= LOCK CMD` is' -r
complete -c me-only -l ttl -d 'With --etcd: the lease\'s time to live; a holder cut off from etcd this long is fenced off [default: 10]' -r
complete -c me-only -l cacert -d 'With --etcd: the CA certificates (PEM) that sign the https endpoints\' certificates [default: the system\'s]' -r -F
complete -c me-only -l cert -d 'With --etcd: a client certificate (PEM), for clusters that ask for one; with --key' -r -F
complete -c me-only -l key -d 'With --etcd: the client certificate\'s private key (PEM)' -r -F
complete -c me-only -l user -d 'With --etcd: log in to a cluster with auth enabled as USER (the password after the first colon, with --password, or in ME_ONLY_ETCD_PASSWORD; given twice, the command line\'s wins over the environment\'s, and USER:PASSWORD\'s over the other)' -r
complete -c me-only -l password -d 'With --etcd: the password of --user (better in ME_ONLY_ETCD_PASSWORD: an argument can be read by any user while me-only starts)' -r
complete -c me-only -l tcp -d 'Lock a loopback TCP port: LOCK is PORT or ADDR:PORT (ADDR in 127.0.0.0/8; default 127.H.L.1, H.L the low two bytes of the real uid)'
complete -c me-only -l flock -d 'Lock the file LOCK with flock(2), as flock(1) does, and contend with it: seen from every network namespace that shares the file. LOCK is created (mode 0644 less umask) if missing and never deleted; a symbolic link or anything but a regular file is refused'
complete -c me-only -s w -l wait -d 'Wait for the lock instead of failing when it is held'
complete -c me-only -s t -l test -d 'Run nothing: exit 0 if the lock is free, 4 (or -E) if held, and print the holder\'s pid on stdout (with --etcd, HOST PID)'
complete -c me-only -s f -l fork -d 'Keep the lock in me-only and run COMMAND as its child, forwarding TERM, INT, HUP, QUIT, USR1, USR2 and WINCH; exit with its status, or die of the signal that killed it. The lock is held until the child and all it left running (even daemonized) have exited. If me-only is killed, so is the child. For commands that close all their descriptors'
complete -c me-only -s d -l detach -d 'Start COMMAND in the background, in a session of its own with stdin and stdout on /dev/null, holding the lock; print its pid on stdout and exit 0 once it runs (1 if it could not be started)'
complete -c me-only -s q -l quiet -d 'Say nothing when the lock is held (other errors are still reported)'
complete -c me-only -s v -l verbose -d 'Print diagnostics on stderr (RUST_LOG refines them)'
complete -c me-only -l replace -d 'Stop the instance that holds the lock, all of it (SIGTERM or --signal, SIGKILL after --kill-after: every process that holds it and all they started), then run COMMAND once the lock is free. With --etcd, its keeper is asked to stop it, wherever it runs'
complete -c me-only -l auto -d 'No LOCK: the first word is COMMAND, and the lock is named from the command line: me-only/auto/UID/HASH, HASH from COMMAND\'s real path and its arguments (run-one\'s way). An abstract socket lock, or with --etcd a name in etcd'
complete -c me-only -l json -d 'With --list: print a JSON array of objects (lock, backend, pid, uid, host, age_seconds, command: the argument list) instead of a table'
complete -c me-only -l insecure-skip-tls-verify -d 'With --etcd: do not check the https endpoints\' certificates (the connection is then open to anyone in between)'
complete -c me-only -s h -l help -d 'Print help (see more with \'--help\')'
complete -c me-only -s V -l version -d 'Print version'
