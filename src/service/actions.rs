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
