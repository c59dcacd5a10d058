//! entra-remediator: policy-driven remediation for Microsoft Entra ID.
//!
//! The flow, one module per step: [`config`] -> [`scan`] -> [`policy`] ->
//! [`plan`] (with [`guard`] and [`exceptions`]) -> [`approval`] -> [`store`];
//! [`run`] ties one cycle together and [`cli`] is the command line.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(missing_docs)]

pub mod api;
pub mod approval;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod exceptions;
pub mod execute;
pub mod graph;
pub mod guard;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod plan;
pub mod policy;
pub mod run;
pub mod scan;
pub mod service;
pub mod store;
pub mod text;
