//! A recorded action: what is to be done, to whom, why, under which mode, and
//! where it stands. The store maps its rows to this type at its edge.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ActionKind, ActionState, Mode, Reason};

/// What an action does: one of the six remediations, or the undo of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkKind {
    /// A remediation action.
    Remedy(ActionKind),
    /// The undo of an earlier, done action (its id is the one target).
    Undo,
}

impl WorkKind {
    /// The name kept in the store and shown in history.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Remedy(k) => k.as_str(),
            WorkKind::Undo => "undo",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<WorkKind> {
        match s {
            "undo" => Some(WorkKind::Undo),
            _ => ActionKind::parse(s).map(WorkKind::Remedy),
        }
    }

    /// The remediation, when this is one.
    pub fn remedy(self) -> Option<ActionKind> {
        match self {
            WorkKind::Remedy(k) => Some(k),
            WorkKind::Undo => None,
        }
    }

    /// A single-identity remediation (role or group removal): approved on its
    /// own, never in bulk.
    pub fn is_single_identity(self) -> bool {
        self.remedy().is_some_and(|k| !k.is_bulk())
    }
}

impl From<ActionKind> for WorkKind {
    fn from(k: ActionKind) -> Self {
        WorkKind::Remedy(k)
    }
}

impl std::fmt::Display for WorkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WorkKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::str::FromStr for WorkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        WorkKind::parse(s).ok_or_else(|| format!("unknown action {s:?}"))
    }
}

impl PartialEq<&str> for WorkKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One recorded action, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// Short numeric id used on the command line and in the API.
    pub id: i64,
    /// The run that planned it.
    pub run_id: String,
    /// Tenant name.
    pub tenant: String,
    /// Identity object id.
    pub identity_id: String,
    /// Identity UPN (as the scan had it).
    pub identity_upn: String,
    /// Identity display name.
    pub identity_name: String,
    /// What it does.
    pub kind: WorkKind,
    /// Role assignment / group ids for removals; the undone action's id for an undo.
    pub targets: Vec<String>,
    /// Every (rule, finding, reason) that asked for it.
    pub reasons: Vec<Reason>,
    /// The rules that asked for it.
    pub rules: Vec<String>,
    /// Its effective mode.
    pub mode: Mode,
    /// Where it stands.
    pub state: ActionState,
    /// Why it is in that state, when relevant.
    pub state_reason: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When a pending approval expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Action {
    /// The remediation, or `None` for an undo.
    pub fn remedy(&self) -> Option<ActionKind> {
        self.kind.remedy()
    }

    /// The state it returns to when a retryable failure is to be tried again.
    pub fn retry_state(&self) -> ActionState {
        if self.mode == Mode::Enforce {
            ActionState::Ready
        } else {
            ActionState::Approved
        }
    }

    /// Whether a pending approval has run out at `now`.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// The state a new action starts in under `mode` when nothing refused it.
pub fn initial_state(mode: Mode) -> ActionState {
    match mode {
        Mode::DryRun => ActionState::Planned,
        Mode::Approval => ActionState::Pending,
        Mode::Enforce => ActionState::Ready,
    }
}
