//! The records the store takes and gives: runs, actions, rule errors, events,
//! approvals, filters, state changes, and the events a write records.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ts;

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
    /// A person, any case: actions whose run they started (the run's actor) or
    /// that they approved or rejected; for events, the events of those actions.
    pub person: Option<String>,
    /// Skip this many of the newest rows (paging, newest first, with `limit`).
    pub offset: Option<i64>,
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

/// What an approval decision is based on: the approvals the verified chain
/// records, and how many approval rows the action has in all (the value the
/// compare-and-set checks).
#[derive(Debug, Clone, Default)]
pub struct ApprovalBasis {
    /// Approval rows recorded in the chain, oldest first.
    pub chained: Vec<ApprovalRow>,
    /// Every approval row of the action, chained or not.
    pub recorded: usize,
}

/// One decided action to apply: the store checks it is still pending with
/// `recorded` approval rows, then records `approval` and the event for it.
#[derive(Debug, Clone)]
pub struct DecisionWrite {
    /// The action as it was decided on.
    pub action: crate::domain::Action,
    /// Approval rows it had when decided (compare-and-set).
    pub recorded: usize,
    /// Its new state, or `None` when it stays pending for a second approver.
    pub new_state: Option<crate::domain::ActionState>,
    /// The state reason written with a new state.
    pub reason: String,
    /// The event recording the decision; the store sets its time to `approval.at`.
    pub event: NewEvent,
    /// The approval row (its `event_seq` is set by the store).
    pub approval: ApprovalRow,
}
