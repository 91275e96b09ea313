//! The environment COMMAND learns its lock from: the names are the
//! library's, so that a lock handed on (by the command, or by a Rust
//! program that shares its guard) is read the same way everywhere.

/// The lock COMMAND holds, as it was given (a name, a TCP address, a
/// file).
pub const ENV_LOCK: &str = "ME_ONLY_LOCK";
/// The number of COMMAND's descriptor that holds the lock.
pub const ENV_FD: &str = "ME_ONLY_FD";
/// Which of --slots' locks COMMAND holds, 1 to N.
pub const ENV_SLOT: &str = "ME_ONLY_SLOT";
/// The fencing token of a lock that has one (etcd's); an outer me-only's
/// must not pass for the inner COMMAND's.
pub const ENV_FENCE: &str = "ME_ONLY_FENCE";
/// When the lock was taken, in seconds since boot (the clock of /proc's
/// process start times): --replace-older's measure of an instance, whose
/// processes may have started long before it held the lock (a --wait, a
/// wrapper script that exec'd me-only).
pub const ENV_LOCKED_AT: &str = "ME_ONLY_LOCKED_AT";
/// Set to 1 where COMMAND holds a shared lock (--shared: flock -s), which
/// others hold at the same time; absent for an exclusive one.
pub const ENV_SHARED: &str = "ME_ONLY_SHARED";
