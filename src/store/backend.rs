//! What each database provides: its SQL and its transaction, as a small set of
//! primitives. The transaction scripts (`scripts.rs`) are written once over it.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Action, ActionState};

use super::StoreError;
use super::records::{ApprovalRow, EventRow, Filter, NewAction, NewEvent, NewRun};

/// An event as it goes into the `events` table: linked into the chain already.
pub(crate) struct Linked<'a> {
    /// Its position.
    pub(crate) seq: i64,
    /// When (as the store keeps times).
    pub(crate) at: &'a str,
    /// Its content.
    pub(crate) event: &'a NewEvent,
    /// The previous event's hash.
    pub(crate) prev: &'a str,
    /// Its own hash.
    pub(crate) hash: &'a str,
}

/// The per-database primitives. A write transaction (`begin`) holds the chain's
/// write lock from its start, so what it reads of the chain is what it appends to.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// A write transaction; dropping it uncommitted rolls it back.
    type Tx: Send;

    /// Starts a write transaction holding the chain's lock.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;
    /// Commits it.
    async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError>;
    /// The last event's seq and hash (`None`: empty history).
    async fn chain_tail(&self, tx: &mut Self::Tx) -> Result<Option<(i64, String)>, StoreError>;
    /// The seq of the first event of this kind, inside the transaction.
    async fn first_seq_in(&self, tx: &mut Self::Tx, kind: &str) -> Result<Option<i64>, StoreError>;
    /// Inserts a linked event.
    async fn insert_event(&self, tx: &mut Self::Tx, e: Linked<'_>) -> Result<(), StoreError>;
    /// True when a scan run of this tenant and scan is recorded, inside the transaction.
    async fn scan_processed_in(
        &self,
        tx: &mut Self::Tx,
        tenant: &str,
        sha256: &str,
    ) -> Result<bool, StoreError>;
    /// Inserts a run row.
    async fn insert_run(
        &self,
        tx: &mut Self::Tx,
        run: &NewRun,
        actionable: i64,
    ) -> Result<(), StoreError>;
    /// Inserts an action row; returns its id.
    async fn insert_action(
        &self,
        tx: &mut Self::Tx,
        run: &NewRun,
        a: &NewAction,
        at: &str,
    ) -> Result<i64, StoreError>;
    /// Reads an action, locking its row until the transaction ends.
    async fn action_in(&self, tx: &mut Self::Tx, id: i64) -> Result<Option<Action>, StoreError>;
    /// Moves an action to `to` only if it is in one of `from` (compare-and-set);
    /// returns it as moved, `None` when it was not there or in another state.
    async fn move_action(
        &self,
        tx: &mut Self::Tx,
        id: i64,
        from: &[ActionState],
        to: ActionState,
        reason: Option<&str>,
    ) -> Result<Option<Action>, StoreError>;
    /// Sets an action's state and reason unconditionally.
    async fn set_state(
        &self,
        tx: &mut Self::Tx,
        id: i64,
        to: ActionState,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
    /// How many approval rows an action has.
    async fn approval_count_in(&self, tx: &mut Self::Tx, id: i64) -> Result<i64, StoreError>;
    /// Inserts an approval row.
    async fn insert_approval(&self, tx: &mut Self::Tx, ap: &ApprovalRow) -> Result<(), StoreError>;
    /// Pending actions whose expiry is at or before `at`, locked.
    async fn due_in(&self, tx: &mut Self::Tx, at: &str) -> Result<Vec<Action>, StoreError>;
    /// Sets a per-tenant value.
    async fn put_tenant_state(
        &self,
        tx: &mut Self::Tx,
        tenant: &str,
        key: &str,
        value: &str,
        at: &str,
    ) -> Result<(), StoreError>;

    /// Takes or renews a lease atomically (see `Store::try_lease`).
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: &str,
        until: &str,
    ) -> Result<bool, StoreError>;
    /// Gives a lease back (only if `holder` has it).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// The seq and detail of the first event of this kind.
    async fn first_event_of(&self, kind: &str) -> Result<Option<(i64, String)>, StoreError>;
    /// Every approval row of an action, oldest first.
    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError>;
    /// One event.
    async fn event_at(&self, seq: i64) -> Result<Option<EventRow>, StoreError>;
    /// See `Store::scan_processed`.
    async fn scan_processed(&self, tenant: &str, sha256: &str) -> Result<bool, StoreError>;
    /// See `Store::previous_action_count`.
    async fn previous_action_count(&self, tenant: &str) -> Result<Option<i64>, StoreError>;
    /// See `Store::actions`.
    async fn actions(&self, f: &Filter) -> Result<Vec<Action>, StoreError>;
    /// (state, count) of the actions of the tenant's runs of the scan with this hash.
    async fn action_counts(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Vec<(String, i64)>, StoreError>;
    /// See `Store::action`.
    async fn action(&self, id: i64) -> Result<Option<Action>, StoreError>;
    /// A run's `scanned_at` as stored.
    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<String>, StoreError>;
    /// See `Store::run_actor`.
    async fn run_actor(&self, run_id: &str) -> Result<Option<String>, StoreError>;
    /// (action, count, last `at`) of retryable execution outcomes.
    async fn retry_rows(&self, ids: &[i64]) -> Result<Vec<(i64, i64, String)>, StoreError>;
    /// See `Store::events`.
    async fn events(&self, f: &Filter) -> Result<Vec<EventRow>, StoreError>;
    /// Every event, (action id, state) and approval row, from one snapshot.
    async fn everything(
        &self,
    ) -> Result<(Vec<EventRow>, Vec<(i64, String)>, Vec<ApprovalRow>), StoreError>;
    /// See `Store::event_hash_at`.
    async fn event_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError>;
    /// See `Store::tenant_state`.
    async fn tenant_state(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError>;
    /// `started_at` of the tenant's last scan run, as stored.
    async fn last_run_at(&self, tenant: &str) -> Result<Option<String>, StoreError>;
    /// `scanned_at` of the tenant's latest scan run, as stored.
    async fn last_scanned_at(&self, tenant: &str) -> Result<Option<String>, StoreError>;
}

/// Retry rows as `Store::retry_counts` gives them.
pub(crate) fn retry_map(rows: Vec<(i64, i64, String)>) -> HashMap<i64, (u32, DateTime<Utc>)> {
    rows.into_iter()
        .filter_map(|(id, n, at)| {
            super::parse_ts(&at).map(|at| (id, (u32::try_from(n).unwrap_or(u32::MAX), at)))
        })
        .collect()
}
