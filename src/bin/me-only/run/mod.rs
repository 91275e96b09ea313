//! Running COMMAND once the lock is held: exec'd in me-only's place
//! (launch), as a supervised child (supervise: --fork, --max-time), again
//! and again (respawn), in the background (detach), after stopping the
//! holder (replace).

pub mod detach;
pub mod launch;
pub mod replace;
pub mod respawn;
pub mod sigpipe;
pub mod supervise;
