//! Approving and rejecting actions: the approval rules (`approval::transition`)
//! decide, and the store applies all of a request's changes in one transaction
//! as compare-and-set. When another decision won the race, the request is
//! decided again on what the store holds now.

use chrono::{DateTime, Utc};

use crate::approval::{self, ApprovalError, ApprovalPolicy, Decision, Origin};
use crate::domain::{Action, ActionState};
use crate::store::{ApprovalRow, DecisionWrite, Store, StoreError, state_event, ts};

/// How often a request is decided again after losing a race before giving up.
const ATTEMPTS: usize = 16;

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
    pub origin: Origin,
}

/// Why a decision was not made; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The approval rules refused it.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other decisions on the same actions kept coming first.
    #[error("the actions kept changing while the decision was made; nothing changed, try again")]
    Contended,
}

/// Approves or rejects actions atomically: all change, or none. Returns the
/// actions as they are after the decision.
pub async fn decide(
    store: &dyn Store,
    req: &DecisionRequest,
    policy: &ApprovalPolicy,
) -> Result<Vec<Action>, DecideError> {
    approval::check_approver(policy, &req.by)?;
    if req.ids.is_empty() {
        return Err(ApprovalError::Empty.into());
    }
    // The same id twice is one decision.
    let mut ids = req.ids.clone();
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    for _ in 0..ATTEMPTS {
        let writes = plan(store, req, policy, &ids).await?;
        if let Some(done) = store.apply_decisions(writes).await? {
            return Ok(done);
        }
        tracing::info!(ids = ?ids, "another decision came first; deciding again");
    }
    Err(DecideError::Contended)
}

/// Decides every action on what the store holds now: all are valid, or the
/// first refusal is returned.
async fn plan(
    store: &dyn Store,
    req: &DecisionRequest,
    policy: &ApprovalPolicy,
    ids: &[i64],
) -> Result<Vec<DecisionWrite>, DecideError> {
    let several = req.bulk || ids.len() > 1;
    let mut writes = Vec::with_capacity(ids.len());
    for &id in ids {
        // Approvals first, then the action: a decision committed in between
        // shows in the action's state (not pending), never as approvals of an
        // action that still looks pending; one after both fails the
        // compare-and-set.
        let basis = store.approval_basis(id).await?;
        let action = store
            .action(id)
            .await?
            .ok_or(ApprovalError::UnknownId(id))?;
        let requester = requester(store, &action).await?;
        let t = approval::transition(
            &action,
            &basis.chained,
            req.decision,
            &req.by,
            requester.as_deref(),
            &req.origin,
            several,
            policy,
            req.now,
        )?;
        writes.push(write(req, action, basis.recorded, t.new_state));
    }
    Ok(writes)
}

/// Who asked for the action: the actor of its run when a person requested it
/// (its rules include `manual`, see `service::remediate`); rule actions have none.
async fn requester(store: &dyn Store, action: &Action) -> Result<Option<String>, StoreError> {
    if !action.rules.iter().any(|r| r == super::remediate::RULE) {
        return Ok(None);
    }
    store.run_actor(&action.run_id).await
}

/// The rows and event that record one decided action.
fn write(
    req: &DecisionRequest,
    action: Action,
    recorded: usize,
    new_state: Option<ActionState>,
) -> DecisionWrite {
    let mut detail = serde_json::json!({
        "decision": req.decision.as_str(), "comment": req.comment, "bulk": req.bulk,
    });
    req.origin.describe(&mut detail);
    let event = match new_state {
        Some(state) => state_event(&action, "state_changed", &req.by, state, detail.to_string()),
        None => state_event(
            &action,
            "approval_recorded",
            &req.by,
            ActionState::Pending,
            format!("{detail}; a second approver is required (four eyes)"),
        ),
    };
    let approval = ApprovalRow {
        action_id: action.id,
        approver: req.by.clone(),
        decision: req.decision.as_str().to_string(),
        comment: req.comment.clone(),
        at: ts(req.now),
        event_seq: None,
        interface: req.origin.interface_column().map(str::to_string),
        os_user: req.origin.os_user.clone(),
    };
    DecisionWrite {
        action,
        recorded,
        new_state,
        reason: format!("{} by {}", req.decision.as_str(), req.by),
        event,
        approval,
    }
}
