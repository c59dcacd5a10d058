//! The history store: one trait, one implementation per database.
//!
//! Runs and actions hold current state; the `events` table is the append-only,
//! hash-chained history of every decision and state change. The database itself
//! refuses updates and deletes of history rows. With a history key configured the
//! chain is an HMAC-SHA-256 chain from a `history_keyed` event on, every approval
//! row names the event that records it, and checkpoints (head seq, hash, count)
//! go to the log and an optional file, so a rewrite of the whole store can be
//! found by comparing with one.

mod postgres;
mod rows;
mod sqlite;

pub(crate) use rows::{ActionRow, into_actions};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use sqlite::events_sql as sqlite_events_sql;

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
    /// What it does.
    pub kind: crate::domain::WorkKind,
    /// Role assignment / group ids for removals.
    pub targets: Vec<String>,
    /// Every (rule, finding, reason) that asked for it.
    pub reasons: Vec<crate::domain::Reason>,
    /// Effective mode.
    pub mode: crate::domain::Mode,
    /// Initial state (one for which `is_initial` holds).
    pub state: crate::domain::ActionState,
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
    /// The history event that records this decision (`seq`): an approval row
    /// without one, or whose event does not match it, is not in the chain.
    pub event_seq: Option<i64>,
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

/// The chained hash of an unkeyed event: covers every column but the hash itself.
pub fn event_hash(seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    hex::encode(Sha256::digest(canonical(seq, at, e, prev).as_bytes()))
}

/// The chained HMAC of a keyed event: the same content as `event_hash`.
pub fn keyed_event_hash(key: &HistoryKey, seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    hex::encode(key.mac(canonical(seq, at, e, prev).as_bytes()))
}

/// The hash of an event keyed or not.
fn chain_hash(key: Option<&HistoryKey>, seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    match key {
        Some(k) => keyed_event_hash(k, seq, at, e, prev),
        None => event_hash(seq, at, e, prev),
    }
}

/// The kind of the event from which on the chain is keyed.
pub const KEYED_EVENT: &str = "history_keyed";

/// The secret that keys the history chain (HMAC-SHA-256). It lives in a file or
/// a systemd credential, never in the database, so write access to the store
/// alone is not enough to recompute the chain.
#[derive(Clone)]
pub struct HistoryKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for HistoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HistoryKey({})", self.id())
    }
}

/// Where the history key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A file holding the key (created with mode 0600 by a writing command when
    /// missing and the store is not keyed yet).
    File(std::path::PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

impl HistoryKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// A key from its bytes (leading and trailing white space removed).
    pub fn from_bytes(bytes: &[u8]) -> Result<HistoryKey, StoreError> {
        let text = bytes.trim_ascii();
        if text.len() < Self::MIN_LEN {
            return Err(StoreError::Key(format!(
                "the key has {} byte(s); at least {} are needed",
                text.len(),
                Self::MIN_LEN
            )));
        }
        Ok(HistoryKey { key: text.to_vec() })
    }

    /// A short public name of the key (an HMAC of a fixed text), recorded in the
    /// `history_keyed` event so a wrong key is told apart from an edit.
    pub fn id(&self) -> String {
        hex::encode(&self.mac(b"entra-remediator history key id")[..8])
    }

    /// HMAC-SHA-256 (RFC 2104) of `msg`, by the RustCrypto `hmac` crate.
    pub fn mac(&self, msg: &[u8]) -> Vec<u8> {
        use hmac::{KeyInit, Mac};
        // HMAC takes a key of any length, so this cannot fail.
        match hmac::Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mut m) => {
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Reads the key from its source; `None` when a key file does not exist.
    pub fn load(src: &KeySource) -> Result<Option<HistoryKey>, StoreError> {
        let path = match src {
            KeySource::File(p) => p.clone(),
            KeySource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    StoreError::Key(format!(
                        "history_key_credential {name:?} is set but CREDENTIALS_DIRECTORY is not (LoadCredential= in the systemd unit)"
                    ))
                })?;
                std::path::Path::new(&dir).join(name)
            }
        };
        match std::fs::read(&path) {
            Ok(b) => HistoryKey::from_bytes(&b)
                .map(Some)
                .map_err(|e| StoreError::Key(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match src {
                KeySource::File(_) => Ok(None),
                KeySource::Credential(_) => Err(StoreError::Key(format!(
                    "credential {} does not exist",
                    path.display()
                ))),
            },
            Err(e) => Err(StoreError::Key(format!("{}: {e}", path.display()))),
        }
    }

    /// Creates a new random key file (mode 0600; never overwrites one).
    pub fn generate(path: &std::path::Path) -> Result<HistoryKey, StoreError> {
        use std::io::Write;
        let bytes: [u8; 32] = rand::random();
        let text = hex::encode(bytes);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()).map(|()| f));
        let f = f
            .as_mut()
            .map_err(|e| StoreError::Key(format!("cannot create {}: {e}", path.display())))?;
        f.sync_all()
            .map_err(|e| StoreError::Key(format!("cannot write {}: {e}", path.display())))?;
        tracing::warn!(
            path = %path.display(),
            "created a new history key; keep a copy apart from the store: without it the history cannot be verified"
        );
        HistoryKey::from_bytes(text.as_bytes())
    }
}

/// The canonical text an event's hash covers.
fn canonical(seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    serde_json::json!([
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
    ])
    .to_string()
}

/// The tail of the hash chain while a transaction appends to it.
pub(crate) struct Chain {
    /// The last event's seq (0 for none).
    pub(crate) seq: i64,
    /// The last event's hash.
    pub(crate) hash: String,
    /// The seq when the transaction started, to know when to write a checkpoint.
    start: i64,
    key: Option<HistoryKey>,
}

impl Chain {
    /// The chain after its last event (`None` for an empty history).
    pub(crate) fn new(last: Option<(i64, String)>, key: Option<&HistoryKey>) -> Chain {
        let (seq, hash) = last.unwrap_or_else(|| (0, GENESIS.to_string()));
        Chain {
            seq,
            hash,
            start: seq,
            key: key.cloned(),
        }
    }

    /// Links the next event: returns its seq, prev_hash and hash.
    pub(crate) fn link(&mut self, at: &str, e: &NewEvent) -> (i64, String, String) {
        let seq = self.seq + 1;
        let prev = std::mem::take(&mut self.hash);
        let hash = chain_hash(self.key.as_ref(), seq, at, e, &prev);
        self.seq = seq;
        self.hash = hash.clone();
        (seq, prev, hash)
    }
}

/// A point of the chain worth keeping apart from the store: a rewrite of the
/// whole store cannot reproduce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The head event's seq.
    pub seq: i64,
    /// The head event's hash.
    pub hash: String,
    /// Events in the history at that point.
    pub events: i64,
    /// When it was taken.
    #[serde(default)]
    pub at: String,
}

impl Checkpoint {
    /// Reads checkpoints, one JSON object a line, naming the file and line of a bad one.
    pub fn read_file(path: &std::path::Path) -> Result<Vec<Checkpoint>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read checkpoint file {}: {e}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l.trim()).map_err(|e| {
                    format!(
                        "{}:{}: not a checkpoint ({{\"seq\":N,\"hash\":\"...\",\"events\":N}}): {e}",
                        path.display(),
                        i + 1
                    )
                })
            })
            .collect()
    }
}

/// Where and how often checkpoints are written.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointSink {
    every: i64,
    file: Option<std::path::PathBuf>,
}

impl CheckpointSink {
    /// Logs (and appends to the file) a checkpoint when a committed transaction
    /// took the chain past a multiple of `every`. The transaction is committed
    /// already: a checkpoint that cannot be written is a warning.
    pub(crate) fn after_commit(&self, chain: &Chain) {
        if self.every <= 0 || chain.seq / self.every == chain.start / self.every {
            return;
        }
        let cp = Checkpoint {
            seq: chain.seq,
            hash: chain.hash.clone(),
            events: chain.seq,
            at: ts(Utc::now()),
        };
        tracing::info!(
            checkpoint_seq = cp.seq,
            checkpoint_hash = %cp.hash,
            checkpoint_events = cp.events,
            "history checkpoint"
        );
        if let Some(path) = &self.file {
            use std::io::Write;
            let line = serde_json::to_string(&cp).unwrap_or_default();
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "cannot write the history checkpoint: {e}");
            }
        }
    }
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

/// The seq of the first `history_keyed` event and the key id it names.
fn keyed_from(events: &[EventRow]) -> Option<(i64, String)> {
    marker_of(
        events
            .iter()
            .find(|e| e.kind == KEYED_EVENT)
            .map(|e| (e.seq, e.detail.clone())),
    )
}

/// The problem with an approval row as the chain records it, if any: its event
/// must exist, be about the same action, by the same approver, at the same time,
/// with the same decision, comment, interface and operating-system user.
pub(crate) fn approval_problem(ap: &ApprovalRow, ev: Option<&EventRow>) -> Option<String> {
    let who = format!(
        "approval row ({} of action {} by {:?})",
        ap.decision, ap.action_id, ap.approver
    );
    let Some(seq) = ap.event_seq else {
        return Some(format!(
            "{who}: names no history event: it is not in the hash chain (inserted behind the store's back)"
        ));
    };
    let Some(ev) = ev else {
        return Some(format!("{who}: its event {seq} does not exist"));
    };
    // The decision's detail starts with the JSON object the store wrote.
    let detail: Option<serde_json::Value> = serde_json::Deserializer::from_str(&ev.detail)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok);
    let matches = ev.action_id == Some(ap.action_id)
        && ev.actor == ap.approver
        && ev.at == ap.at
        && matches!(ev.kind.as_str(), "state_changed" | "approval_recorded")
        && detail.as_ref().is_some_and(|d| {
            d["decision"].as_str() == Some(ap.decision.as_str())
                && d["comment"].as_str() == ap.comment.as_deref()
                && d["interface"].as_str() == ap.interface.as_deref()
                && d["os_user"].as_str() == ap.os_user.as_deref()
        });
    (!matches).then(|| format!("{who}: does not match its event {seq}"))
}

/// Checks the hash chain (keyed from the `history_keyed` event on), that every
/// approval row is recorded in it, and that each action's state is the last one
/// history recorded for it; the same check for every backend.
pub fn verify_history(
    events: &[EventRow],
    actions: &[(i64, String)],
    approvals: &[ApprovalRow],
    key: Option<&HistoryKey>,
) -> VerifyReport {
    let mut problems = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 1;
    let mut last_state = std::collections::HashMap::new();
    let keyed = keyed_from(events);
    match (&keyed, key) {
        (Some((seq, _)), None) => problems.push(format!(
            "the history is keyed from event {seq} on but no key is configured, or its key file is missing ([store] history_key_file or history_key_credential): those events cannot be checked"
        )),
        (Some((seq, id)), Some(k)) if *id != k.id() => problems.push(format!(
            "the history is keyed from event {seq} on with key id {id}, but the configured key has id {}: wrong key, or the chain was rewritten",
            k.id()
        )),
        (None, Some(_)) if !events.is_empty() => problems.push(
            "a history key is configured but no event is keyed: this store was never written with the key, or its chain was recomputed without it (a writing command such as `run` starts keying an existing store)".to_string(),
        ),
        _ => {}
    }
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
        let is_keyed = keyed.as_ref().is_some_and(|(k, _)| e.seq >= *k);
        let expected = match (is_keyed, key) {
            (false, _) => Some(event_hash(e.seq, &e.at, &e.content(), &e.prev_hash)),
            (true, Some(k)) => Some(keyed_event_hash(
                k,
                e.seq,
                &e.at,
                &e.content(),
                &e.prev_hash,
            )),
            (true, None) => None,
        };
        if expected.is_some_and(|h| h != e.hash) {
            problems.push(format!(
                "event {}: content does not match its {} (edited)",
                e.seq,
                if is_keyed { "HMAC" } else { "hash" }
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
    let by_seq: std::collections::HashMap<i64, &EventRow> =
        events.iter().map(|e| (e.seq, e)).collect();
    let mut used = std::collections::HashSet::new();
    for ap in approvals {
        let ev = ap.event_seq.and_then(|s| by_seq.get(&s).copied());
        if let Some(p) = approval_problem(ap, ev) {
            problems.push(p);
        } else if let Some(seq) = ap.event_seq
            && !used.insert(seq)
        {
            problems.push(format!(
                "approval row ({} of action {} by {:?}): event {seq} already records another approval row (duplicated)",
                ap.decision, ap.action_id, ap.approver
            ));
        }
    }
    VerifyReport {
        events: events.len() as i64,
        approvals: approvals.len() as i64,
        keyed_from: keyed.map(|(s, _)| s),
        head: events.last().map(|e| Checkpoint {
            seq: e.seq,
            hash: e.hash.clone(),
            events: events.len() as i64,
            at: ts(Utc::now()),
        }),
        problems,
    }
}

/// Compares the history with checkpoints kept apart from it: each checkpoint's
/// event must still be there with the same hash, and the history no shorter.
pub async fn check_checkpoints(
    store: &dyn Store,
    report: &VerifyReport,
    checkpoints: &[Checkpoint],
) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    for cp in checkpoints {
        let what = format!("checkpoint (event {}, taken {})", cp.seq, cp.at);
        match store.event_hash_at(cp.seq).await? {
            None => problems.push(format!(
                "{what}: the history has no event {} (truncated or rewritten)",
                cp.seq
            )),
            Some(h) if h != cp.hash => problems.push(format!(
                "{what}: event {} has hash {h}, the checkpoint says {} (rewritten)",
                cp.seq, cp.hash
            )),
            Some(_) if report.events < cp.events => problems.push(format!(
                "{what}: the history has {} events, the checkpoint {} (truncated)",
                report.events, cp.events
            )),
            Some(_) => {}
        }
    }
    Ok(problems)
}

/// The event recording a state change of an action.
pub(crate) fn state_event(
    a: &crate::domain::Action,
    kind: &str,
    actor: &str,
    state: crate::domain::ActionState,
    detail: String,
) -> NewEvent {
    NewEvent {
        tenant: Some(a.tenant.clone()),
        run_id: Some(a.run_id.clone()),
        action_id: Some(a.id),
        identity_id: Some(a.identity_id.clone()),
        action_kind: Some(a.kind.to_string()),
        rule: None,
        kind: kind.into(),
        actor: actor.into(),
        state: Some(state.to_string()),
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
        action_kind: Some(a.kind.to_string()),
        rule: None,
        kind: "action_recorded".into(),
        actor: run.actor.clone(),
        state: Some(a.state.to_string()),
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
    /// Approval rows checked against the chain.
    pub approvals: i64,
    /// The seq of the `history_keyed` event, when the chain is keyed.
    pub keyed_from: Option<i64>,
    /// The head of the chain, to keep as a checkpoint.
    pub head: Option<Checkpoint>,
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
    pub state: crate::domain::ActionState,
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
    async fn actions(&self, filter: &Filter) -> Result<Vec<crate::domain::Action>, StoreError>;
    /// One action.
    async fn action(&self, id: i64) -> Result<Option<crate::domain::Action>, StoreError>;
    /// A run's `scanned_at`: revoking sessions after it is the revoke done.
    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
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
    /// Approves or rejects actions atomically: all change, or none.
    async fn decide(
        &self,
        req: &DecisionRequest,
        policy: &ApprovalPolicy,
    ) -> Result<Vec<crate::domain::Action>, StoreError>;
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

/// How to open the store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// Where the history key comes from; `None` leaves the chain unkeyed.
    pub key: Option<KeySource>,
    /// Create the store (and a missing key file) when it does not exist; when
    /// false, a missing store is an error and nothing is created.
    pub create: bool,
    /// Never write (history, audit verify); writing is an error.
    pub read_only: bool,
    /// How long to wait for a PostgreSQL server.
    pub connect_timeout: std::time::Duration,
    /// Write a checkpoint each time the chain passes a multiple of this many events.
    pub checkpoint_every: i64,
    /// Also append checkpoints to this file.
    pub checkpoint_file: Option<std::path::PathBuf>,
}

impl OpenOptions {
    /// Creating, unkeyed, with the default timeout and checkpoint interval.
    pub fn new(url: &str) -> OpenOptions {
        OpenOptions {
            url: url.to_string(),
            key: None,
            create: true,
            read_only: false,
            connect_timeout: std::time::Duration::from_secs(5),
            checkpoint_every: 1000,
            checkpoint_file: None,
        }
    }

    /// The options the `[store]` section asks for (creating, writable).
    pub fn from_config(c: &crate::config::StoreConfig) -> OpenOptions {
        OpenOptions {
            url: c.url.clone(),
            key: match (&c.history_key_file, &c.history_key_credential) {
                (Some(f), _) => Some(KeySource::File(f.clone())),
                (None, Some(n)) => Some(KeySource::Credential(n.clone())),
                (None, None) => None,
            },
            create: true,
            read_only: false,
            connect_timeout: c.connect_timeout.0,
            checkpoint_every: i64::try_from(c.checkpoint_every).unwrap_or(i64::MAX),
            checkpoint_file: c.checkpoint_file.clone(),
        }
    }

    /// Opens an existing store only.
    pub fn existing(mut self) -> OpenOptions {
        self.create = false;
        self
    }

    /// Opens an existing store only, for reading.
    pub fn read_only(mut self) -> OpenOptions {
        self.create = false;
        self.read_only = true;
        self
    }

    pub(crate) fn sink(&self) -> CheckpointSink {
        CheckpointSink {
            every: self.checkpoint_every,
            file: self.checkpoint_file.clone(),
        }
    }
}

/// The key a store appends with, decided at open: loads (or, for a writer on a
/// store not keyed yet, creates) the key and checks it against the store's
/// `history_keyed` event. `marker` is that event's seq and key id.
pub(crate) fn resolve_key(
    opts: &OpenOptions,
    marker: Option<&(i64, String)>,
) -> Result<Option<HistoryKey>, StoreError> {
    let store = display_name(&opts.url);
    let key = match &opts.key {
        None => None,
        // A reader does without a key it cannot load: `audit verify` then says
        // that the keyed part cannot be checked.
        Some(src) => match HistoryKey::load(src)
            .or_else(|e| if opts.read_only { Ok(None) } else { Err(e) })?
        {
            Some(k) => Some(k),
            None => match (src, marker, opts.create && !opts.read_only) {
                (KeySource::File(p), None, true) => Some(HistoryKey::generate(p)?),
                (KeySource::File(p), _, _) => {
                    if opts.read_only {
                        None
                    } else {
                        return Err(StoreError::Key(format!(
                            "key file {} does not exist{}",
                            p.display(),
                            if marker.is_some() {
                                format!(" and history store {store} is keyed: restore the key file")
                            } else {
                                " (a writing command such as `run` or the daemon creates it)".into()
                            }
                        )));
                    }
                }
                (KeySource::Credential(_), _, _) => None,
            },
        },
    };
    if opts.read_only {
        return Ok(key);
    }
    match (marker, &key) {
        (Some((seq, _)), None) => Err(StoreError::Key(format!(
            "history store {store} is keyed from event {seq} on: configure its key ([store] history_key_file or history_key_credential); unkeyed events would break the chain"
        ))),
        (Some((seq, id)), Some(k)) if *id != k.id() => Err(StoreError::Key(format!(
            "history store {store} is keyed (from event {seq} on) with key id {id}, but the configured key has id {}",
            k.id()
        ))),
        _ => Ok(key),
    }
}

/// The event that starts keying a chain: the key's id, never the key.
pub(crate) fn keyed_event(key: &HistoryKey, previous: i64) -> NewEvent {
    NewEvent {
        kind: KEYED_EVENT.into(),
        actor: "system".into(),
        detail: serde_json::json!({
            "key_id": key.id(),
            "unkeyed_events_before": previous,
            "note": "this event and every later one carry an HMAC-SHA-256 under the history key",
        })
        .to_string(),
        ..NewEvent::default()
    }
}

/// Parses a `history_keyed` event's seq and detail into (seq, key id).
pub(crate) fn marker_of(row: Option<(i64, String)>) -> Option<(i64, String)> {
    row.map(|(seq, detail)| {
        let id = serde_json::from_str::<serde_json::Value>(&detail)
            .ok()
            .and_then(|v| v["key_id"].as_str().map(str::to_string))
            .unwrap_or_default();
        (seq, id)
    })
}

/// True when an approval row is recorded in the chain as it should be: its event
/// matches it and the event's own hash (HMAC from `keyed_from` on) is right.
/// Only such approvals count towards four eyes.
pub(crate) fn approval_in_chain(
    ap: &ApprovalRow,
    ev: Option<&EventRow>,
    key: Option<&HistoryKey>,
    keyed_from: Option<i64>,
) -> bool {
    if approval_problem(ap, ev).is_some() {
        return false;
    }
    let Some(ev) = ev else { return false };
    let keyed = keyed_from.is_some_and(|k| ev.seq >= k);
    let expected = match (keyed, key) {
        (false, _) => event_hash(ev.seq, &ev.at, &ev.content(), &ev.prev_hash),
        (true, Some(k)) => keyed_event_hash(k, ev.seq, &ev.at, &ev.content(), &ev.prev_hash),
        (true, None) => return false,
    };
    expected == ev.hash
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
        Ok(Box::new(SqliteStore::open_with(opts).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PostgresStore::open_with(opts).await?))
    } else {
        Err(StoreError::Unsupported(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (a short key is padded like ours).
    #[test]
    fn hmac_matches_rfc_4231() {
        let k = HistoryKey {
            key: b"Jefe".to_vec(),
        };
        assert_eq!(
            hex::encode(k.mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let k = HistoryKey {
            key: vec![0xaa; 131],
        };
        assert_eq!(
            hex::encode(k.mac(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
