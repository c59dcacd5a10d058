//! The `actions` row and its mapping to the domain's [`Action`]: rows stay
//! inside the store; everything above it sees typed actions.

use crate::domain::{Action, ActionState, Mode, Reason, WorkKind};

use super::{StoreError, parse_ts};

/// An `actions` row as the database holds it (JSON and CSV in text columns).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ActionRow {
    /// Short numeric id used on the command line.
    pub(crate) id: i64,
    /// The run that planned it.
    pub(crate) run_id: String,
    /// Tenant name.
    pub(crate) tenant: String,
    /// Identity object id.
    pub(crate) identity_id: String,
    /// Identity UPN.
    pub(crate) identity_upn: String,
    /// Identity display name.
    pub(crate) identity_name: String,
    /// Action name.
    pub(crate) kind: String,
    /// JSON array of target ids.
    pub(crate) targets: String,
    /// JSON array of reasons.
    pub(crate) reasons: String,
    /// `,rule1,rule2,` for filtering.
    pub(crate) rules: String,
    /// Effective mode.
    pub(crate) mode: String,
    /// Current state.
    pub(crate) state: String,
    /// Why it is in that state, when relevant.
    pub(crate) state_reason: Option<String>,
    /// When recorded.
    pub(crate) created_at: String,
    /// When a pending approval expires.
    pub(crate) expires_at: Option<String>,
}

impl ActionRow {
    /// The typed action; a value the domain does not know is a corrupt row.
    pub(crate) fn into_action(self) -> Result<Action, StoreError> {
        let bad =
            |what: &str, v: &str| StoreError::Corrupt(format!("action {}: {what} {v:?}", self.id));
        let kind = WorkKind::parse(&self.kind).ok_or_else(|| bad("unknown kind", &self.kind))?;
        let mode = Mode::parse(&self.mode).ok_or_else(|| bad("unknown mode", &self.mode))?;
        let state =
            ActionState::parse(&self.state).ok_or_else(|| bad("unknown state", &self.state))?;
        let targets: Vec<String> = serde_json::from_str(&self.targets).map_err(|e| {
            bad(
                &format!("targets are not a JSON list ({e}):"),
                &self.targets,
            )
        })?;
        let reasons: Vec<Reason> = serde_json::from_str(&self.reasons)
            .map_err(|e| bad(&format!("reasons are not valid ({e}):"), &self.reasons))?;
        let created_at =
            parse_ts(&self.created_at).ok_or_else(|| bad("bad time", &self.created_at))?;
        let expires_at = match &self.expires_at {
            Some(t) => Some(parse_ts(t).ok_or_else(|| bad("bad time", t))?),
            None => None,
        };
        let rules = self
            .rules
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Action {
            id: self.id,
            run_id: self.run_id,
            tenant: self.tenant,
            identity_id: self.identity_id,
            identity_upn: self.identity_upn,
            identity_name: self.identity_name,
            kind,
            targets,
            reasons,
            rules,
            mode,
            state,
            state_reason: self.state_reason,
            created_at,
            expires_at,
        })
    }
}

/// Maps rows to actions, failing on the first corrupt one.
pub(crate) fn into_actions(rows: Vec<ActionRow>) -> Result<Vec<Action>, StoreError> {
    rows.into_iter().map(ActionRow::into_action).collect()
}
