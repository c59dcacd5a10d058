//! Deciding a whole run: which of its pending actions an approval or a
//! rejection in bulk covers. Single-identity actions (role and group removals)
//! are never approved in bulk; they are skipped and must be approved on their own.

use chrono::{DateTime, Utc};

use crate::approval::Decision;
use crate::domain::{Action, ActionState};
use crate::store::{Filter, Store, StoreError};

/// The pending actions of a run a bulk decision covers, and those it skips.
#[derive(Debug, Clone)]
pub struct RunSelection {
    /// The actions to decide.
    pub ids: Vec<i64>,
    /// Pending single-identity actions left out of a bulk approval.
    pub skipped: Vec<Action>,
}

/// Why a run cannot be decided in bulk.
#[derive(Debug, thiserror::Error)]
pub enum RunDecisionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run recorded no actions (or does not exist).
    #[error("run {0} does not exist or recorded no actions")]
    UnknownRun(String),
    /// No pending action of the run can be decided in bulk.
    #[error(
        "run {run} has no pending actions that can be decided in bulk ({skipped} single-identity action(s) must be approved on their own)"
    )]
    NothingToDecide {
        /// The run.
        run: String,
        /// How many single-identity actions were skipped.
        skipped: usize,
    },
}

/// Expires overdue approvals, then selects the run's pending actions that
/// `decision` covers in bulk: all of them for a rejection, all but the
/// single-identity ones for an approval.
pub async fn select(
    store: &dyn Store,
    run: &str,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<RunSelection, RunDecisionError> {
    super::actions::expire_overdue(store, now).await?;
    let all = store
        .actions(&Filter {
            run: Some(run.to_string()),
            ..Filter::default()
        })
        .await?;
    if all.is_empty() {
        return Err(RunDecisionError::UnknownRun(run.to_string()));
    }
    let (skipped, decided): (Vec<Action>, Vec<Action>) = all
        .into_iter()
        .filter(|a| a.state == ActionState::Pending)
        .partition(|a| decision == Decision::Approve && a.kind.is_single_identity());
    if decided.is_empty() {
        return Err(RunDecisionError::NothingToDecide {
            run: run.to_string(),
            skipped: skipped.len(),
        });
    }
    Ok(RunSelection {
        ids: decided.iter().map(|a| a.id).collect(),
        skipped,
    })
}
