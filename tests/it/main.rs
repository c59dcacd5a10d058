//! Integration tests: one binary with modules, because every file under `tests/`
//! is a separate binary to link, and links are slow on small machines.

mod api;
mod approvals;
mod common;
mod config;
mod crash;
mod daemon;
mod execute;
mod h1;
mod h3;
mod h4;
mod h5;
mod h2;
mod history;
mod hostile;
mod notify;
mod plan;
mod policy;
mod scan;
mod secrets;
mod store;
mod terminal;
