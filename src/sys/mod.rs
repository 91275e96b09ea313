//! What the kernel offers and how me-only reads it: /proc, the socket
//! diagnostics (unix_diag, inet_diag), pidfds and process trees (whom a
//! signal may go to), signal dispositions, deadlines and poll's clock, the process title.
//! Nothing here knows about locks or the command line.

pub mod deadline;
pub mod inet_diag;
pub mod instance;
pub mod pidfd;
pub mod poll_time;
#[cfg(feature = "etcd")]
pub mod process_title;
pub mod procfs;
pub mod signals;
pub mod sock_diag;
pub mod tree;
pub mod unix_diag;
