//! Integration tests: one binary with modules, because every file under `tests/`
//! is a separate binary to link, and links are slow on small machines.

mod api;
mod approvals;
mod audit_chain;
mod batch_repack;
mod browser;
mod common;
mod config;
mod console;
mod console_data;
mod crash;
mod daemon;
mod daemon_leases;
mod execute;
mod graph_scan;
mod graph_window;
mod history;
mod import;
mod hostile;
mod input_trust;
mod live_safety;
mod mfa_pim_settle;
mod notify;
mod plan;
mod policy;
mod reload_people_api;
mod remediate;
mod scan;
mod secrets;
mod store;
mod store_reads;
mod terminal;
mod user_reads;
