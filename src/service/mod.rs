//! The service layer: the use cases the CLI, the HTTP API and the daemon call,
//! so that each edge only parses, calls one and formats its result.

pub mod cycle;
pub mod execution;
mod plan_run;
mod record_run;
pub mod run;
