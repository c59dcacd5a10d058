//! History queries: the audit events and actions, filtered and paged, the
//! actions as CSV, and the audit chain's verification status.

use chrono::{DateTime, Utc};

use crate::domain::Action;
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

/// One page (1-based, at most `per_page` rows, newest first) of the actions
/// matching `filter` (its own `limit` and `offset` are replaced), and whether
/// there are more after it.
pub async fn actions_page(
    store: &dyn Store,
    filter: &Filter,
    page: usize,
    per_page: usize,
) -> Result<(Vec<Action>, bool), StoreError> {
    let per_page = per_page.max(1);
    let offset = page.max(1).saturating_sub(1).saturating_mul(per_page);
    let f = Filter {
        limit: Some(
            i64::try_from(per_page)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
        ),
        offset: Some(i64::try_from(offset).unwrap_or(i64::MAX)),
        ..filter.clone()
    };
    let mut rows = store.actions(&f).await?;
    rows.reverse();
    let more = rows.len() > per_page;
    rows.truncate(per_page);
    Ok((rows, more))
}

/// The columns of the actions CSV export, in order.
pub const ACTION_CSV_COLUMNS: [&str; 15] = [
    "id",
    "created_at",
    "tenant",
    "run_id",
    "identity_upn",
    "identity_id",
    "identity_name",
    "action",
    "targets",
    "rules",
    "mode",
    "state",
    "state_reason",
    "expires_at",
    "reasons",
];

/// An action's cells, in [`ACTION_CSV_COLUMNS`] order, defused for spreadsheets.
fn csv_fields(a: &Action) -> Vec<String> {
    let text = |s: &str| crate::text::csv_safe(s, true);
    let time = |t: Option<DateTime<Utc>>| t.map(crate::store::ts).unwrap_or_default();
    vec![
        a.id.to_string(),
        time(Some(a.created_at)),
        text(&a.tenant),
        text(&a.run_id),
        text(&a.identity_upn),
        text(&a.identity_id),
        text(&a.identity_name),
        a.kind.as_str().to_string(),
        text(&a.targets.join(" ")),
        text(&a.rules.join(",")),
        a.mode.as_str().to_string(),
        a.state.as_str().to_string(),
        a.state_reason.as_deref().map(text).unwrap_or_default(),
        time(a.expires_at),
        text(&serde_json::to_string(&a.reasons).unwrap_or_default()),
    ]
}

/// Actions the CSV export reads from the store at a time.
const EXPORT_CHUNK: usize = 1000;

/// Why the CSV export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output could not be written.
    #[error("cannot write the CSV export: {0}")]
    Write(#[from] csv::Error),
}

/// Writes every action matching `filter`, newest first, as CSV with a header
/// row (cells a spreadsheet would run are defused, as the CLI's CSV does).
/// Reads the store [`EXPORT_CHUNK`] rows at a time, so memory stays flat; actions
/// recorded after `now` are left out, so that paging does not repeat rows.
/// Returns how many actions were written.
pub async fn export_actions_csv<W: std::io::Write>(
    store: &dyn Store,
    filter: &Filter,
    now: DateTime<Utc>,
    out: W,
) -> Result<u64, ExportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(ACTION_CSV_COLUMNS)?;
    let until = Some(filter.until.map_or(now, |u| u.min(now)));
    let fixed = Filter {
        until,
        ..filter.clone()
    };
    let mut written = 0u64;
    let mut page = 1;
    loop {
        let (rows, more) = actions_page(store, &fixed, page, EXPORT_CHUNK).await?;
        for a in &rows {
            w.write_record(csv_fields(a))?;
            written += 1;
        }
        if !more {
            break;
        }
        page += 1;
    }
    w.flush().map_err(csv::Error::from)?;
    Ok(written)
}

/// The audit chain's verification, as the history page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStatus {
    /// True when history is intact.
    pub ok: bool,
    /// Events checked.
    pub events: u64,
    /// Every problem found.
    pub problems: Vec<String>,
    /// When it was checked.
    pub checked_at: DateTime<Utc>,
}

/// Re-computes the hash chain and checks approvals against it (`audit verify`).
pub async fn chain_status(
    store: &dyn Store,
    now: DateTime<Utc>,
) -> Result<ChainStatus, StoreError> {
    let report = store.verify().await?;
    Ok(ChainStatus {
        ok: report.problems.is_empty(),
        events: u64::try_from(report.events).unwrap_or(0),
        problems: report.problems,
        checked_at: now,
    })
}
