//! Crash recovery: actions left `executing` by a stopped process are settled by
//! reading live state, so nothing is executed twice and nothing is lost. Each
//! action's module tells whether its write landed.

use serde_json::{Value, json};

use super::{ExecError, Executor, undo::intent_snapshot};
use crate::actions::reads::{Ahead, Reads};
use crate::actions::{Landed, handler};
use crate::domain::{Action, ActionState, ExecReport, ExecResult, Snapshot, WorkKind};
use crate::store::{Filter, StateChange};

/// Actions settled per committed chunk: a stop during settling keeps every
/// chunk already committed, and each chunk's live state is read in batches.
pub const SETTLE_CHUNK: usize = 100;

/// The state and reason a verdict settles an action in.
fn settled(a: &Action, landed: Landed) -> (ActionState, String) {
    match landed {
        Landed::Applied(s) => (
            ActionState::Done,
            format!("reconciled after a restart: {s}"),
        ),
        Landed::NotApplied(s) => (
            a.retry_state(),
            format!("reconciled after a restart: {s}; it will be executed again"),
        ),
        Landed::Unknown(s) => (
            ActionState::Failed,
            // The intents of a pass are committed before any of its
            // writes is sent, so this one may or may not have been.
            format!(
                "interrupted after its intent was recorded, so its write may have reached Graph: {s}; not sent again"
            ),
        ),
    }
}

impl Executor<'_> {
    /// Settles this tenant's actions left `executing`, chunk by chunk: live
    /// state of a chunk is read ahead in batches (one member list per group, one
    /// read per Conditional Access policy), and its verdicts committed together.
    pub async fn reconcile(&self) -> Result<ExecReport, ExecError> {
        let stuck = self
            .cx
            .store
            .actions(&Filter {
                tenant: Some(self.cx.tenant.name.clone()),
                state: Some(ActionState::Executing.to_string()),
                ..Filter::default()
            })
            .await?;
        let mut report = ExecReport::default();
        for chunk in stuck.chunks(SETTLE_CHUNK) {
            let settled = self.reconcile_chunk(chunk).await?;
            report.results.extend(settled.results);
        }
        Ok(report)
    }

    async fn reconcile_chunk(&self, chunk: &[Action]) -> Result<ExecReport, ExecError> {
        // Each action's intent snapshot, if it got that far.
        let mut items = Vec::with_capacity(chunk.len());
        for a in chunk {
            let filter = Filter {
                action_id: Some(a.id),
                ..Filter::default()
            };
            let events = self.cx.store.events(&filter).await?;
            let snapshot = intent_snapshot(&events).map(|v| Snapshot::parse(&v));
            items.push((a, snapshot));
        }
        let reads = self.settle_reads(&items).await;
        let mut report = ExecReport::default();
        let mut changes = Vec::new();
        for (a, snapshot) in items {
            let mut calls = Vec::new();
            let landed = match snapshot {
                None => Landed::NotApplied("stopped before any write was sent".into()),
                Some(s) => self.landed(a, s, &mut calls, &reads).await,
            };
            let (state, reason) = settled(a, landed);
            report.results.push(ExecResult {
                id: a.id,
                state,
                reason: reason.clone(),
            });
            let event = self.event("reconciled", a, json!({"outcome": reason, "calls": calls}));
            changes.push(StateChange {
                action_id: a.id,
                state,
                reason: Some(reason),
                event,
            });
        }
        // Committed per chunk: a stop after this keeps these verdicts.
        self.cx.store.transition(changes).await?;
        Ok(report)
    }

    /// Reads ahead the live state a chunk's verdicts need: user and role
    /// assignment reads through `$batch`, each group's members once, each
    /// Conditional Access policy once.
    async fn settle_reads(&self, items: &[(&Action, Option<Result<Snapshot, String>>)]) -> Reads {
        let mut ahead = Ahead::default();
        for (a, snapshot) in items {
            if let (WorkKind::Remedy(k), Some(Ok(s))) = (a.kind, snapshot) {
                handler(k).settle_reads(&self.cx, a, s, &mut ahead).await;
            }
        }
        let mut reads = Reads::default();
        ahead.read(&self.cx, &mut reads).await;
        reads
    }

    /// Whether the write of the interrupted action `a` landed.
    async fn landed(
        &self,
        a: &Action,
        snapshot: Result<Snapshot, String>,
        calls: &mut Vec<Value>,
        reads: &Reads,
    ) -> Landed {
        match (a.kind, snapshot) {
            (WorkKind::Undo, _) => Landed::Unknown(
                "an interrupted undo is not repeated automatically; check and undo again".into(),
            ),
            (WorkKind::Remedy(_), Err(why)) => Landed::Unknown(why),
            (WorkKind::Remedy(k), Ok(s)) => handler(k).landed(&self.cx, a, &s, calls, reads).await,
        }
    }
}
