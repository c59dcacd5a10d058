//! The domain: what an action is, its kinds, modes, states and reasons. Plain
//! data and pure rules, no I/O; every other layer builds on it.

mod kind;
mod mode;
mod reason;

pub use kind::ActionKind;
pub use mode::Mode;
pub use reason::Reason;
