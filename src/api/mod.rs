//! The library's own API, in front of the command's building blocks: a
//! lock ([`Lock`]), how long to wait for it ([`Wait`]), the guard that holds
//! it ([`Guard`]), a lock handed down by `me-only` or by another guard
//! ([`inherited`]), and what can go wrong ([`Error`]). Each wraps the
//! backends in `crate::lock`, so that the command and the library take the
//! same lock the same way.

mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod guard;
mod handle;
mod inherited;

pub use error::Error;
pub use guard::Guard;
pub use handle::{Lock, Wait};
pub use inherited::inherited;
