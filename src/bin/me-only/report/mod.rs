//! Reports that run no command: --test, --list, and the man page and
//! completions (generated from the command line's definition, checked by
//! tests).

// Like the man page: the completions of the default build.
#[cfg(all(test, feature = "etcd"))]
pub mod completions;
pub mod list;
// The page documents the default build, --etcd included: a build without
// that feature has a shorter --help, and no page is checked against it.
#[cfg(all(test, feature = "etcd"))]
pub mod man;
pub mod test_mode;
