//! me-only's locks, for Rust programs: the same kernel locks the `me-only`
//! command takes (an abstract AF_UNIX socket name, a loopback TCP port, a
//! flock(2) on a file), so that a Rust daemon and a `me-only` cron line
//! keep each other out. The kernel grants a lock atomically and takes it
//! back the instant its holder dies: no stale locks, no files to clean up.
//!
//! ```
//! use std::time::Duration;
//! use me_only::{Error, Lock, Wait};
//!
//! # let name = format!("doc-crate-{}", std::process::id());
//! let lock = Lock::named(&name)?;           // as `me-only NAME COMMAND`
//! match lock.acquire(Wait::For(Duration::from_secs(1))) {
//!     Ok(_guard) => { /* ours until the guard drops */ }
//!     Err(Error::Busy { holder, .. }) => eprintln!("{name}: held by {holder}"),
//!     Err(other) => return Err(other),
//! }
//! # Ok::<(), Error>(())
//! ```
//!
//! A lock held is a [`Guard`]; [`Guard::share_with`] hands it to a child
//! process, and [`inherited`] adopts it there, or in a COMMAND started by
//! `me-only LOCK COMMAND`. A library holder listens on its socket, as the
//! command does, so `me-only --wait` is woken the moment it lets go, and
//! `me-only --test` names its pid.
//!
//! The `me-only` command (feature `cli`) is built on this crate. The
//! modules below the API are its building blocks, not a stable API, and
//! hidden from the documentation.
#![deny(missing_docs)]

mod api;
pub mod env;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod holder;
#[doc(hidden)]
pub mod lock;
#[doc(hidden)]
pub mod sys;

#[cfg(feature = "etcd")]
pub use api::etcd;
pub use api::{Error, Guard, Lock, Wait, inherited};
pub use holder::Holder;
