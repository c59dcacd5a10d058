//! The use cases: what the CLI, the HTTP API and the daemon ask for, written
//! once over the store and the domain rules, so those layers only parse, call
//! and format.

pub mod approvals;
