//! History queries: the audit events, filtered.

use crate::store::{EventRow, Filter, Store, StoreError};

/// The history events matching `filter`.
pub async fn events(store: &dyn Store, filter: &Filter) -> Result<Vec<EventRow>, StoreError> {
    store.events(filter).await
}

/// The history of one action.
pub async fn of_action(store: &dyn Store, id: i64) -> Result<Vec<EventRow>, StoreError> {
    events(
        store,
        &Filter {
            action_id: Some(id),
            ..Filter::default()
        },
    )
    .await
}
