//! Showing one action with its approvals and history.

use chrono::{DateTime, Utc};

use crate::domain::Action;
use crate::store::{ApprovalRow, EventRow, Store, StoreError};

/// One action with everything recorded about it.
#[derive(Debug, Clone)]
pub struct ActionDetail {
    /// The action as it stands now.
    pub action: Action,
    /// Its approvals and rejections, oldest first.
    pub approvals: Vec<ApprovalRow>,
    /// Its history events.
    pub history: Vec<EventRow>,
}

/// The action `id` with its approvals and history (an overdue approval is
/// expired first); `None` when there is no such action.
pub async fn show(
    store: &dyn Store,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Option<ActionDetail>, StoreError> {
    let Some(action) = super::actions::get(store, id, now).await? else {
        return Ok(None);
    };
    Ok(Some(ActionDetail {
        action,
        approvals: store.approvals(id).await?,
        history: super::history::of_action(store, id).await?,
    }))
}
