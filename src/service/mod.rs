//! The service layer: the use cases the CLI, the HTTP API and the daemon call,
//! written once, so that each edge only parses input, calls one and formats its
//! result.

pub mod actions;
pub mod approvals;
pub mod cycle;
pub mod execution;
pub mod history;
mod plan_run;
mod record_run;
pub mod remediate;
pub mod run;
pub mod posture;
pub mod run_decision;
pub mod scan;
pub mod scan_view;
pub mod show;
pub mod undo;
