//! The history store: one trait, one implementation per database.
//!
//! Runs and actions hold current state; the `events` table is the append-only,
//! hash-chained history of every decision and state change. The database itself
//! refuses updates and deletes of history rows.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::approval::{ApprovalError, ApprovalPolicy, Decision};

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
    /// An approval request was refused; nothing changed.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
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

/// A run about to be recorded.
#[derive(Debug, Clone, Serialize)]
pub struct NewRun {
    /// Run id (UUID).
    pub id: String,
    /// Tenant name.
    pub tenant: String,
    /// Scan file path or URL.
    pub scan_source: String,
    /// SHA-256 of the scan bytes.
    pub scan_sha256: String,
    /// The scan's `scanned_at`.
    pub scanned_at: DateTime<Utc>,
    /// Hash of the rule set used.
    pub rule_set_hash: String,
    /// The run's mode after downgrades.
    pub mode: String,
    /// Why the run was downgraded, if it was.
    pub downgrades: Vec<String>,
    /// Identities in the scan.
    pub identities: i64,
    /// Findings in the scan.
    pub findings: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Who started it (`system`, or the CLI user).
    pub actor: String,
    /// `scan` for a scan run, `undo` for an undo request.
    pub kind: String,
}

/// A planned action about to be recorded.
#[derive(Debug, Clone, Serialize)]
pub struct NewAction {
    /// Identity object id.
    pub identity_id: String,
    /// Identity UPN.
    pub identity_upn: String,
    /// Identity display name.
    pub identity_name: String,
    /// Action name.
    pub kind: String,
    /// Role assignment / group ids for removals.
    pub targets: Vec<String>,
    /// Every (rule, finding, reason) that asked for it.
    pub reasons: Vec<crate::plan::Reason>,
    /// Effective mode.
    pub mode: String,
    /// Initial state: planned, pending, ready, refused or skipped.
    pub state: String,
    /// Why refused or skipped.
    pub state_reason: Option<String>,
    /// When a pending approval expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A rule error to record with a run.
#[derive(Debug, Clone, Serialize)]
pub struct NewRuleError {
    /// Rule name.
    pub rule: String,
    /// Finding id.
    pub finding: String,
    /// Identity id.
    pub identity_id: String,
    /// The error.
    pub message: String,
}

/// A recorded action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ActionRow {
    /// Short numeric id used on the command line.
    pub id: i64,
    /// The run that planned it.
    pub run_id: String,
    /// Tenant name.
    pub tenant: String,
    /// Identity object id.
    pub identity_id: String,
    /// Identity UPN.
    pub identity_upn: String,
    /// Identity display name.
    pub identity_name: String,
    /// Action name.
    pub kind: String,
    /// JSON array of target ids.
    pub targets: String,
    /// JSON array of reasons.
    pub reasons: String,
    /// `,rule1,rule2,` for filtering.
    pub rules: String,
    /// Effective mode.
    pub mode: String,
    /// Current state.
    pub state: String,
    /// Why it is in that state, when relevant.
    pub state_reason: Option<String>,
    /// When recorded.
    pub created_at: String,
    /// When a pending approval expires.
    pub expires_at: Option<String>,
}

/// A recorded approval or rejection.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApprovalRow {
    /// The action.
    pub action_id: i64,
    /// Who.
    pub approver: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Their comment.
    pub comment: Option<String>,
    /// When.
    pub at: String,
    /// The interface it came through: `cli` or `api` (none before this was kept).
    pub interface: Option<String>,
    /// The operating-system user who ran the CLI (none through the API).
    pub os_user: Option<String>,
}

/// A history event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRow {
    /// Position in the chain.
    pub seq: i64,
    /// When.
    pub at: String,
    /// Tenant name.
    pub tenant: Option<String>,
    /// Run id.
    pub run_id: Option<String>,
    /// Action id.
    pub action_id: Option<i64>,
    /// Identity object id.
    pub identity_id: Option<String>,
    /// Action name.
    pub action_kind: Option<String>,
    /// Rule name (rule errors).
    pub rule: Option<String>,
    /// What happened.
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// The state after the event, for action events.
    pub state: Option<String>,
    /// Details: reasons, error text, counts.
    pub detail: String,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// An event before it is chained.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Tenant name.
    pub tenant: Option<String>,
    /// Run id.
    pub run_id: Option<String>,
    /// Action id.
    pub action_id: Option<i64>,
    /// Identity id.
    pub identity_id: Option<String>,
    /// Action name.
    pub action_kind: Option<String>,
    /// Rule name.
    pub rule: Option<String>,
    /// What happened.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// New state.
    pub state: Option<String>,
    /// Details.
    pub detail: String,
}

/// The first event's `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chained hash of an event: covers every column but the hash itself.
pub fn event_hash(seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    let canonical = serde_json::json!([
        seq,
        at,
        e.tenant,
        e.run_id,
        e.action_id,
        e.identity_id,
        e.action_kind,
        e.rule,
        e.kind,
        e.actor,
        e.state,
        e.detail,
        prev
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

impl EventRow {
    /// The event's content, to recompute its hash.
    pub fn content(&self) -> NewEvent {
        NewEvent {
            tenant: self.tenant.clone(),
            run_id: self.run_id.clone(),
            action_id: self.action_id,
            identity_id: self.identity_id.clone(),
            action_kind: self.action_kind.clone(),
            rule: self.rule.clone(),
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            state: self.state.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// Checks the hash chain and that each action's state is the last one history
/// recorded for it; the same check for every backend.
pub fn verify_history(events: &[EventRow], actions: &[(i64, String)]) -> VerifyReport {
    let mut problems = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 1;
    let mut last_state = std::collections::HashMap::new();
    for e in events {
        if e.seq != expect_seq {
            problems.push(format!(
                "event {}: expected event {expect_seq} here: events are missing",
                e.seq
            ));
        }
        expect_seq = e.seq + 1;
        if e.prev_hash != prev {
            problems.push(format!(
                "event {}: prev_hash does not match the previous event's hash",
                e.seq
            ));
        }
        if event_hash(e.seq, &e.at, &e.content(), &e.prev_hash) != e.hash {
            problems.push(format!(
                "event {}: content does not match its hash (edited)",
                e.seq
            ));
        }
        prev = e.hash.clone();
        if let (Some(a), Some(s)) = (e.action_id, &e.state) {
            last_state.insert(a, s.clone());
        }
    }
    for (id, state) in actions {
        match last_state.get(id) {
            Some(s) if s == state => {}
            Some(s) => problems.push(format!(
                "action {id}: state is {state} but history last recorded {s}"
            )),
            None => problems.push(format!("action {id}: has no history events")),
        }
    }
    VerifyReport {
        events: events.len() as i64,
        problems,
    }
}

/// The event recording a state change of an action.
pub(crate) fn state_event(
    a: &ActionRow,
    kind: &str,
    actor: &str,
    state: &str,
    detail: String,
) -> NewEvent {
    NewEvent {
        tenant: Some(a.tenant.clone()),
        run_id: Some(a.run_id.clone()),
        action_id: Some(a.id),
        identity_id: Some(a.identity_id.clone()),
        action_kind: Some(a.kind.clone()),
        rule: None,
        kind: kind.into(),
        actor: actor.into(),
        state: Some(state.into()),
        detail,
    }
}

/// The events a recorded run starts with: the run itself, its downgrades and
/// its rule errors.
pub(crate) fn run_events(
    run: &NewRun,
    actions: usize,
    actionable: i64,
    rule_errors: &[NewRuleError],
) -> Vec<NewEvent> {
    let run_event = |kind: &str, detail: String| NewEvent {
        tenant: Some(run.tenant.clone()),
        run_id: Some(run.id.clone()),
        kind: kind.into(),
        actor: run.actor.clone(),
        detail,
        ..NewEvent::default()
    };
    let detail = serde_json::json!({
        "scan": run.scan_source, "scan_sha256": run.scan_sha256,
        "scanned_at": ts(run.scanned_at), "rule_set_hash": run.rule_set_hash,
        "mode": run.mode, "identities": run.identities, "findings": run.findings,
        "actions": actions, "actionable": actionable,
    });
    let mut out = vec![run_event("run_recorded", detail.to_string())];
    out.extend(
        run.downgrades
            .iter()
            .map(|r| run_event("run_downgraded", r.clone())),
    );
    out.extend(rule_errors.iter().map(|e| NewEvent {
        identity_id: Some(e.identity_id.clone()),
        rule: Some(e.rule.clone()),
        ..run_event(
            "rule_error",
            serde_json::json!({"finding": e.finding, "error": e.message}).to_string(),
        )
    }));
    out
}

/// The event recording a planned action.
pub(crate) fn action_event(run: &NewRun, id: i64, a: &NewAction) -> NewEvent {
    let detail = serde_json::json!({
        "upn": a.identity_upn, "targets": a.targets, "reasons": a.reasons,
        "mode": a.mode, "why": a.state_reason, "expires_at": a.expires_at.map(ts),
    });
    NewEvent {
        tenant: Some(run.tenant.clone()),
        run_id: Some(run.id.clone()),
        action_id: Some(id),
        identity_id: Some(a.identity_id.clone()),
        action_kind: Some(a.kind.clone()),
        rule: None,
        kind: "action_recorded".into(),
        actor: run.actor.clone(),
        state: Some(a.state.clone()),
        detail: detail.to_string(),
    }
}

/// Filters for `history` and `approvals list`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Tenant name.
    pub tenant: Option<String>,
    /// Identity id or UPN.
    pub identity: Option<String>,
    /// Action name.
    pub action: Option<String>,
    /// State.
    pub state: Option<String>,
    /// Rule name.
    pub rule: Option<String>,
    /// Run id.
    pub run: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows (newest first when limited).
    pub limit: Option<i64>,
    /// Only events of this action (history only).
    pub action_id: Option<i64>,
}

/// What `audit verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: i64,
    /// Every problem found; empty when history is intact.
    pub problems: Vec<String>,
}

/// A request to approve or reject actions, all or nothing.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    /// The actions.
    pub ids: Vec<i64>,
    /// Approve or reject.
    pub decision: Decision,
    /// Who.
    pub by: String,
    /// Why.
    pub comment: Option<String>,
    /// Bulk approval of a run (single-identity actions are refused).
    pub bulk: bool,
    /// Now.
    pub now: DateTime<Utc>,
    /// Where the decision came from (interface, operating-system user).
    pub origin: crate::approval::Origin,
}

/// A state change of one action with the event that records it.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The action.
    pub action_id: i64,
    /// Its new state.
    pub state: String,
    /// Why, for people.
    pub reason: Option<String>,
    /// The history event (its `state` is set to `state`).
    pub event: NewEvent,
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
    /// Actions matching a filter, oldest first.
    async fn actions(&self, filter: &Filter) -> Result<Vec<ActionRow>, StoreError>;
    /// One action.
    async fn action(&self, id: i64) -> Result<Option<ActionRow>, StoreError>;
    /// The approvals recorded for an action.
    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError>;
    /// Marks pending actions past their expiry as expired; returns how many.
    async fn expire_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Approves or rejects actions atomically: all change, or none.
    async fn decide(
        &self,
        req: &DecisionRequest,
        policy: &ApprovalPolicy,
    ) -> Result<Vec<ActionRow>, StoreError>;
    /// History events matching a filter, in order.
    async fn events(&self, filter: &Filter) -> Result<Vec<EventRow>, StoreError>;
    /// Re-computes the hash chain and checks current state against history.
    async fn verify(&self) -> Result<VerifyReport, StoreError>;
    /// Atomically moves actions from `from` states to `to`, each with an event;
    /// returns the actions it moved (others were taken meanwhile).
    async fn claim(
        &self,
        ids: &[i64],
        from: &[&str],
        to: &str,
        actor: &str,
        detail: &str,
    ) -> Result<Vec<ActionRow>, StoreError>;
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
}

/// Opens the store named by a URL and applies migrations.
pub async fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Box::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::Unsupported(url.to_string()))
    }
}
