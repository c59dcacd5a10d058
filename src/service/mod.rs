//! The use cases: what the command line, the HTTP API and the daemon do with
//! the store and the config, written once. The edges only parse input, call a
//! use case and format its result.

pub mod actions;
pub mod history;
pub mod run_decision;
pub mod show;
pub mod undo;
