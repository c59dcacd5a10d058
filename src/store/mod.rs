//! The history store: one trait, one implementation per database.
//!
//! Runs and actions hold current state; the `events` table is the append-only,
//! hash-chained history of every decision and state change. The database itself
//! refuses updates and deletes of history rows. With a history key configured the
//! chain is an HMAC-SHA-256 chain from a `history_keyed` event on, every approval
//! row names the event that records it, and checkpoints (head seq, hash, count)
//! go to the log and an optional file, so a rewrite of the whole store can be
//! found by comparing with one.

mod backend;
mod chain;
mod checkpoint;
mod filter_sql;
mod key;
mod options;
mod postgres;
mod records;
mod rows;
mod scripts;
mod sqlite;
mod sqlite_open;
mod verify;

pub(crate) use rows::{ActionRow, into_actions};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

pub use chain::{GENESIS, event_hash, keyed_event_hash};
pub use checkpoint::Checkpoint;
pub use filter_sql::events_sql as sqlite_events_sql;
pub use key::{HistoryKey, KEYED_EVENT, KeySource};
pub use options::OpenOptions;
pub(crate) use records::state_event;
pub use records::{
    ApprovalBasis, ApprovalRow, DecisionWrite, EventRow, Filter, NewAction, NewEvent, NewRuleError,
    NewRun, StateChange,
};
pub use verify::{VerifyReport, check_checkpoints, verify_history};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error (its text is in the message, and it is
    /// not also a `source`, so an error chain does not print it three times).
    #[error("store error: {0}")]
    Db(sqlx::Error),
    /// Migrations could not be applied.
    #[error("store migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The URL names a backend this build does not support yet.
    #[error("unsupported store url {0:?}: use sqlite://PATH or postgres://...")]
    Unsupported(String),
    /// A stored value could not be decoded.
    #[error("corrupt store row: {0}")]
    Corrupt(String),
    /// A command that only reads was pointed at a store that does not exist.
    #[error(
        "history store {0} does not exist (check [store] url in the config); nothing was created"
    )]
    Missing(String),
    /// The store could not be reached or opened; names it (password removed).
    #[error("cannot open history store {store}: {message}")]
    Open {
        /// The store, as `display_name` gives it.
        store: String,
        /// What went wrong.
        message: String,
    },
    /// The history key could not be read, or does not fit the store.
    #[error("history key: {0}")]
    Key(String),
    /// A write was attempted through a store opened only for reading.
    #[error("the history store was opened read-only")]
    ReadOnly,
    /// A run of this scan of the tenant was recorded meanwhile (by another
    /// instance that held the tenant's lease after this one's expired):
    /// nothing was recorded.
    #[error(
        "a run of scan {scan_sha256} of tenant {tenant:?} is already recorded; nothing was recorded"
    )]
    AlreadyRecorded {
        /// The tenant.
        tenant: String,
        /// The scan's SHA-256.
        scan_sha256: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// Formats a time the way the store keeps it (UTC, milliseconds, sortable as text).
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The history store.
#[async_trait]
pub trait Store: Send + Sync {
    /// True when this exact scan (by hash) already produced a run for the tenant.
    async fn scan_processed(&self, tenant: &str, sha256: &str) -> Result<bool, StoreError>;
    /// Number of actions the tenant's previous run planned to carry out, if any.
    async fn previous_action_count(&self, tenant: &str) -> Result<Option<i64>, StoreError>;
    /// Appends one standalone event (scan rejected, rule set refused, ...).
    async fn record_event(&self, event: NewEvent) -> Result<(), StoreError>;
    /// Records a run, its actions and rule errors in one transaction.
    async fn record_run(
        &self,
        run: &NewRun,
        actions: &[NewAction],
        rule_errors: &[NewRuleError],
    ) -> Result<Vec<i64>, StoreError>;
    /// Records a scan run as `record_run` does, unless a scan run of the same
    /// tenant and scan is recorded already, checked in the same transaction
    /// (`StoreError::AlreadyRecorded`, nothing written): a scan is run once,
    /// however many instances reach it.
    async fn record_run_once(
        &self,
        run: &NewRun,
        actions: &[NewAction],
        rule_errors: &[NewRuleError],
    ) -> Result<Vec<i64>, StoreError>;
    /// Actions matching a filter, oldest first.
    async fn actions(&self, filter: &Filter) -> Result<Vec<crate::domain::Action>, StoreError>;
    /// How many actions of each state the tenant's runs of this scan (by
    /// hash) recorded: the console's "what was done with this scan", counted
    /// by the database.
    async fn scan_action_counts(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Vec<(crate::domain::ActionState, u64)>, StoreError>;
    /// One action.
    async fn action(&self, id: i64) -> Result<Option<crate::domain::Action>, StoreError>;
    /// A run's `scanned_at`: revoking sessions after it is the revoke done.
    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Who started a run (its `actor`): the requester of a person's request,
    /// who may not approve its actions.
    async fn run_actor(&self, run_id: &str) -> Result<Option<String>, StoreError>;
    /// For those of these actions that failed retryably before (execution
    /// outcomes that put them back to ready or approved): how many times, and
    /// when the last one was recorded, so that later runs retry with backoff.
    async fn retry_counts(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, (u32, DateTime<Utc>)>, StoreError>;
    /// The approvals recorded for an action.
    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError>;
    /// Marks pending actions past their expiry as expired; returns how many.
    async fn expire_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// The approvals of an action that the verified chain records (only these
    /// count towards four eyes), with how many approval rows it has in all.
    async fn approval_basis(&self, id: i64) -> Result<ApprovalBasis, StoreError>;
    /// Applies decisions in one transaction as compare-and-set: each action must
    /// still be pending with the same number of approval rows as when it was
    /// decided. All change, or none: `None` when another decision came first.
    async fn apply_decisions(
        &self,
        writes: Vec<DecisionWrite>,
    ) -> Result<Option<Vec<crate::domain::Action>>, StoreError>;
    /// History events matching a filter, in order.
    async fn events(&self, filter: &Filter) -> Result<Vec<EventRow>, StoreError>;
    /// Re-computes the hash chain and checks current state and approvals against history.
    async fn verify(&self) -> Result<VerifyReport, StoreError>;
    /// The hash of event `seq`, to compare with a checkpoint.
    async fn event_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError>;
    /// Atomically moves actions from `from` states to `to`, each with an event;
    /// returns the actions it moved (others were taken meanwhile).
    async fn claim(
        &self,
        ids: &[i64],
        from: &[crate::domain::ActionState],
        to: crate::domain::ActionState,
        actor: &str,
        detail: &str,
    ) -> Result<Vec<crate::domain::Action>, StoreError>;
    /// Appends events in one transaction (intents, snapshots, Graph calls).
    async fn append(&self, events: Vec<NewEvent>) -> Result<(), StoreError>;
    /// Applies state changes with their events in one transaction.
    async fn transition(&self, changes: Vec<StateChange>) -> Result<(), StoreError>;
    /// A value the executor keeps per tenant (Conditional Access policy ids).
    async fn tenant_state(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets such a value, recording the change as an event.
    async fn set_tenant_state(
        &self,
        tenant: &str,
        key: &str,
        value: &str,
        event: NewEvent,
    ) -> Result<(), StoreError>;
    /// Takes or renews the named lease for `holder` until `now + ttl`; false when
    /// another holder has it and it has not expired. A crashed holder's lease
    /// simply runs out.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;
    /// Gives a lease back early (only if `holder` has it).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// When the tenant's last scan run started, for catching up after downtime.
    async fn last_run_at(&self, tenant: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// The `scanned_at` of the scan the tenant's latest scan run processed, to
    /// notice when the newest scan available is older than that.
    async fn last_scanned_at(&self, tenant: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
}

/// Parses a time the store kept (see [`ts`]).
pub(crate) fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The store as messages name it: the SQLite path, or the PostgreSQL URL
/// without its password (nor the query, which may carry one too).
pub fn display_name(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return path.to_string();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let rest = rest.split('?').next().unwrap_or("");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{path}")
        }
        None => format!("{scheme}://{rest}"),
    }
}

/// Opens the store named by a URL (creating it if needed, unkeyed) and applies migrations.
pub async fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    open_with(&OpenOptions::new(url)).await
}

/// Opens the store as the options say and applies migrations.
pub async fn open_with(opts: &OpenOptions) -> Result<Box<dyn Store>, StoreError> {
    let url = opts.url.as_str();
    if url.starts_with("sqlite://") {
        let db = sqlite::SqliteBackend::open(opts).await?;
        Ok(Box::new(scripts::Chained::open(db, opts).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let db = postgres::PostgresBackend::open(opts).await?;
        Ok(Box::new(scripts::Chained::open(db, opts).await?))
    } else {
        Err(StoreError::Unsupported(url.to_string()))
    }
}
