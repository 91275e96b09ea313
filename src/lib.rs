//! me-only's locks: a kernel object (an abstract AF_UNIX socket name, a
//! loopback TCP port, a flock(2) on a file) or an etcd key, taken
//! atomically and given back the instant its holder dies. The `me-only`
//! command (feature `cli`) is built on this crate.
//!
//! The modules below are the command's building blocks, not yet a stable
//! API: they are hidden from the documentation until the library's own
//! types (a lock, its guard, how long to wait) stand in front of them.

pub mod env;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod holder;
#[doc(hidden)]
pub mod lock;
#[doc(hidden)]
pub mod sys;
