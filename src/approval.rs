//! Approval rules, as plain data in and out: who may approve, four eyes, expiry,
//! and which actions can never be approved in bulk.

use chrono::{DateTime, Utc};

use crate::action::ActionKind;
use crate::config::ApprovalConfig;
use crate::store::{ActionRow, ApprovalRow};

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the action be executed.
    Approve,
    /// Never execute the action.
    Reject,
}

impl Decision {
    /// The word stored in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// Who may decide, and which actions need two approvers.
#[derive(Debug, Clone, Default)]
pub struct ApprovalPolicy {
    /// Allowed approvers; empty means anyone.
    pub approvers: Vec<String>,
    /// Actions needing two distinct approvers.
    pub four_eyes: Vec<ActionKind>,
}

impl From<&ApprovalConfig> for ApprovalPolicy {
    fn from(c: &ApprovalConfig) -> Self {
        Self {
            approvers: c.approvers.clone(),
            four_eyes: c.four_eyes.clone(),
        }
    }
}

/// Why an approval request was refused. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// No such action.
    #[error("action {0} does not exist")]
    UnknownId(i64),
    /// Not waiting for approval.
    #[error("action {id} is {state}, not pending: it cannot be approved or rejected")]
    NotPending {
        /// The action.
        id: i64,
        /// Its state.
        state: String,
    },
    /// Approver name missing.
    #[error("--by must name who approves")]
    NoName,
    /// Not in the approvers list.
    #[error("{0:?} is not in approvals.approvers and may not approve or reject")]
    NotAllowed(String),
    /// Already approved by this person.
    #[error(
        "action {id} was already approved by {by:?}; a second approval must come from someone else"
    )]
    SameApprover {
        /// The action.
        id: i64,
        /// The approver.
        by: String,
    },
    /// A single-identity action in a bulk request.
    #[error("action {id} ({kind}) is a single-identity action and must be approved on its own")]
    NotBulk {
        /// The action.
        id: i64,
        /// Its kind.
        kind: String,
    },
    /// No ids given.
    #[error("no actions to decide on")]
    Empty,
}

/// What a valid decision does to one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state, or `None` when it stays pending for a second approver.
    pub new_state: Option<&'static str>,
}

/// Checks that `by` may decide at all.
pub fn check_approver(policy: &ApprovalPolicy, by: &str) -> Result<(), ApprovalError> {
    if by.trim().is_empty() {
        return Err(ApprovalError::NoName);
    }
    if !policy.approvers.is_empty() && !policy.approvers.iter().any(|a| a == by) {
        return Err(ApprovalError::NotAllowed(by.to_string()));
    }
    Ok(())
}

/// Decides what approving or rejecting one action does, or why it is refused.
/// `several` is true when the request names more than one action.
pub fn transition(
    action: &ActionRow,
    prior: &[ApprovalRow],
    decision: Decision,
    by: &str,
    several: bool,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
) -> Result<Transition, ApprovalError> {
    if action.state != "pending" {
        return Err(ApprovalError::NotPending {
            id: action.id,
            state: action.state.clone(),
        });
    }
    if let Some(exp) = &action.expires_at
        && DateTime::parse_from_rfc3339(exp).is_ok_and(|e| e <= now)
    {
        return Err(ApprovalError::NotPending {
            id: action.id,
            state: "expired".into(),
        });
    }
    let kind = ActionKind::parse(&action.kind);
    if decision == Decision::Approve && several && kind.is_some_and(|k| !k.is_bulk()) {
        return Err(ApprovalError::NotBulk {
            id: action.id,
            kind: action.kind.clone(),
        });
    }
    if decision == Decision::Reject {
        return Ok(Transition {
            new_state: Some("rejected"),
        });
    }
    let approvers: std::collections::BTreeSet<&str> = prior
        .iter()
        .filter(|a| a.decision == "approve")
        .map(|a| a.approver.as_str())
        .collect();
    if approvers.contains(by) {
        return Err(ApprovalError::SameApprover {
            id: action.id,
            by: by.to_string(),
        });
    }
    let needed = if kind.is_some_and(|k| policy.four_eyes.contains(&k)) {
        2
    } else {
        1
    };
    Ok(Transition {
        new_state: (approvers.len() + 1 >= needed).then_some("approved"),
    })
}
