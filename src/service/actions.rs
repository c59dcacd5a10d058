//! Reading actions as they stand now: an approval whose window has passed is
//! expired (a write) before anyone sees it as pending.

use chrono::{DateTime, Utc};

use crate::domain::{Action, ActionState};
use crate::store::{Filter, Store, StoreError};

/// Expires every pending approval whose window has passed; returns how many.
/// The one place that asks the store to expire approvals for a reader or a decider.
pub async fn expire_overdue(store: &dyn Store, now: DateTime<Utc>) -> Result<u64, StoreError> {
    store.expire_due(now).await
}

/// A pending action whose approval window has passed but that is not marked
/// expired yet.
pub fn overdue(a: &Action, now: DateTime<Utc>) -> bool {
    a.state == ActionState::Pending && a.is_overdue(now)
}

/// The actions matching `filter`; when one of them is overdue, approvals are
/// expired first, so a read never lists an expired approval as pending.
pub async fn list(
    store: &dyn Store,
    filter: &Filter,
    now: DateTime<Utc>,
) -> Result<Vec<Action>, StoreError> {
    let rows = store.actions(filter).await?;
    if rows.iter().any(|a| overdue(a, now)) {
        expire_overdue(store, now).await?;
        return store.actions(filter).await;
    }
    Ok(rows)
}

/// The actions waiting for approval, of one tenant and run when given.
pub async fn pending(
    store: &dyn Store,
    tenant: Option<String>,
    run: Option<String>,
    now: DateTime<Utc>,
) -> Result<Vec<Action>, StoreError> {
    let filter = Filter {
        tenant,
        run,
        state: Some(ActionState::Pending.to_string()),
        ..Filter::default()
    };
    list(store, &filter, now).await
}

/// One action; when it is overdue, approvals are expired first.
pub async fn get(
    store: &dyn Store,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Option<Action>, StoreError> {
    match store.action(id).await? {
        Some(a) if overdue(&a, now) => {
            expire_overdue(store, now).await?;
            store.action(id).await
        }
        found => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionKind, Mode, WorkKind};

    #[test]
    fn only_a_pending_action_past_its_expiry_is_overdue() {
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::hours(10);
        let mut a = Action {
            id: 1,
            run_id: "r1".into(),
            tenant: "contoso".into(),
            identity_id: "u1".into(),
            identity_upn: "a@contoso.test".into(),
            identity_name: "A".into(),
            kind: WorkKind::Remedy(ActionKind::DisableUser),
            targets: Vec::new(),
            reasons: Vec::new(),
            rules: Vec::new(),
            mode: Mode::Approval,
            state: ActionState::Pending,
            state_reason: None,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            expires_at: Some(now),
        };
        assert!(overdue(&a, now), "due at exactly its expiry");
        assert!(!overdue(&a, now - chrono::Duration::seconds(1)));
        a.state = ActionState::Approved;
        assert!(!overdue(&a, now));
        a.state = ActionState::Pending;
        a.expires_at = None;
        assert!(!overdue(&a, now));
    }
}
