//! The domain: what an action is, its kinds, modes, life cycle, outcomes and
//! reasons. Plain data and pure rules, no I/O; every other layer builds on it.

mod action;
mod clock;
mod kind;
mod mode;
mod outcome;
mod reason;
mod snapshot;
mod state;

pub use action::{Action, WorkKind, initial_state};
pub use clock::{Clock, SystemClock};
pub use kind::ActionKind;
pub use mode::Mode;
pub use outcome::{ExecReport, ExecResult, Outcome};
pub use reason::Reason;
pub use snapshot::{CaMode, RemovedAssignment, Snapshot};
pub use state::{ActionState, IllegalTransition};
