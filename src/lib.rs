//! entra-remediator: policy-driven remediation for Microsoft Entra ID.
//!
//! Modules in the order of the flow: the domain and leaf helpers at the bottom,
//! then config -> scan -> policy -> plan (guard, exceptions) -> approval ->
//! execute (one module per action in `actions`, through `graph`) -> store; the
//! `service` layer holds the use cases; the edges (`daemon`, `api`, `cli`) only
//! parse, call a use case and format. `docs/architecture.md` is the map.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![deny(missing_docs)]

pub mod domain; // actions, kinds, states, outcomes, modes, reasons, clock: no I/O
pub mod text; // leaf text helpers (clipping, printable, places, GUIDs)
pub mod config; // the TOML config and its validation
pub mod scan; // the scan v1 contract and where scans come from
pub mod policy; // Rhai rules: loading, sandbox, what rules may call
pub mod plan; // proposals -> a plan: merge, exceptions, guardrails, modes, limits
pub mod guard; // guardrails for every action: protected identities, last admin
pub mod exceptions; // exceptions file: who is exempt from what, until when
pub mod approval; // who may decide, four eyes, expiry (pure)
pub mod access; // roles of people and API tokens, the caller of a request (pure)
pub mod execute; // claim, decide live, commit intents, write, record; settling
pub mod actions; // one module per remediation action, behind one trait
pub mod graph; // the one Microsoft Graph client: tokens, retries, $batch, paging
pub mod collect; // the built-in posture scan's read-only Graph reading
pub mod store; // the history store: one script layer, SQLite and PostgreSQL SQL
pub mod service; // the use cases every edge calls
pub mod notify; // webhooks
pub mod metrics; // Prometheus metrics
pub mod output; // table, JSON and CSV output
pub mod daemon; // the service: schedules, reloads, signals
pub mod api; // the HTTP API
pub mod console; // the operator console in the browser (OpenID Connect sign-in)
pub mod cli; // the command line
