//! The transaction scripts, written once for every database: each write opens
//! a transaction holding the chain's lock, changes rows, appends its events to
//! the hash chain and commits. Times come from the injected clock.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Action, ActionState, Clock};

use super::backend::{Backend, Linked, retry_map};
use super::chain::Chain;
use super::checkpoint::CheckpointSink;
use super::key::{HistoryKey, KEYED_EVENT, keyed_event, marker_of};
use super::options::{OpenOptions, resolve_key};
use super::records::{
    ApprovalBasis, ApprovalRow, DecisionWrite, EventRow, Filter, NewAction, NewEvent, NewRuleError,
    NewRun, StateChange, action_event, run_events, state_event,
};
use super::verify::{VerifyReport, approval_in_chain, verify_history};
use super::{Store, StoreError, parse_ts, ts};

/// A store: a database backend plus the hash chain it appends to.
pub(crate) struct Chained<B: Backend> {
    db: B,
    /// The key new events are chained with (`None`: unkeyed).
    key: Option<HistoryKey>,
    /// The seq of the `history_keyed` event, when the chain is keyed.
    keyed_from: Option<i64>,
    read_only: bool,
    sink: CheckpointSink,
    clock: Arc<dyn Clock>,
}

/// An open write transaction with the chain's tail.
struct Write<T> {
    tx: T,
    chain: Chain,
}

impl<B: Backend> Chained<B> {
    /// Settles the history key over an opened database (starting to key the
    /// chain when a key is configured and the store is not keyed yet).
    pub(crate) async fn open(db: B, opts: &OpenOptions) -> Result<Chained<B>, StoreError> {
        let marker = marker_of(db.first_event_of(KEYED_EVENT).await?);
        let key = resolve_key(opts, marker.as_ref())?;
        let mut store = Chained {
            db,
            keyed_from: marker.as_ref().map(|(s, _)| *s),
            key,
            read_only: opts.read_only,
            sink: opts.sink(),
            clock: opts.clock.clone(),
        };
        if let Some(k) = store.key.clone()
            && store.keyed_from.is_none()
            && !store.read_only
        {
            store.keyed_from = Some(store.start_keying(&k).await?);
        }
        Ok(store)
    }

    /// Appends one `history_keyed` event, itself keyed, unless another process
    /// did so meanwhile; returns its seq.
    async fn start_keying(&self, k: &HistoryKey) -> Result<i64, StoreError> {
        let mut w = self.begin().await?;
        let seq = match self.db.first_seq_in(&mut w.tx, KEYED_EVENT).await? {
            Some(seq) => seq,
            None => {
                let previous = w.chain.seq;
                let at = ts(self.clock.now());
                self.append_in(&mut w, &at, &keyed_event(k, previous))
                    .await?;
                w.chain.seq
            }
        };
        self.commit(w).await?;
        Ok(seq)
    }

    /// Starts a write transaction and reads the chain's tail under its lock.
    async fn begin(&self) -> Result<Write<B::Tx>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut tx = self.db.begin().await?;
        let last = self.db.chain_tail(&mut tx).await?;
        Ok(Write {
            tx,
            chain: Chain::new(last, self.key.as_ref()),
        })
    }

    /// Commits, then writes a checkpoint if one is due.
    async fn commit(&self, w: Write<B::Tx>) -> Result<(), StoreError> {
        self.db.commit(w.tx).await?;
        self.sink.after_commit(&w.chain);
        Ok(())
    }

    /// Records a run, its actions and rule errors in one transaction; with
    /// `once`, only when no scan run of the tenant's scan is recorded yet.
    async fn record(
        &self,
        run: &NewRun,
        actions: &[NewAction],
        rule_errors: &[NewRuleError],
        once: bool,
    ) -> Result<Vec<i64>, StoreError> {
        let at = ts(run.started_at);
        let actionable = actionable(actions);
        let mut w = self.begin().await?;
        if once
            && self
                .db
                .scan_processed_in(&mut w.tx, &run.tenant, &run.scan_sha256)
                .await?
        {
            return Err(StoreError::AlreadyRecorded {
                tenant: run.tenant.clone(),
                scan_sha256: run.scan_sha256.clone(),
            });
        }
        self.db.insert_run(&mut w.tx, run, actionable).await?;
        for ev in run_events(run, actions.len(), actionable, rule_errors) {
            self.append_in(&mut w, &at, &ev).await?;
        }
        let mut ids = Vec::with_capacity(actions.len());
        for a in actions {
            let id = self.db.insert_action(&mut w.tx, run, a, &at).await?;
            self.append_in(&mut w, &at, &action_event(run, id, a))
                .await?;
            ids.push(id);
        }
        self.commit(w).await?;
        Ok(ids)
    }

    /// Links an event into the chain and inserts it.
    async fn append_in(
        &self,
        w: &mut Write<B::Tx>,
        at: &str,
        e: &NewEvent,
    ) -> Result<(), StoreError> {
        let (seq, prev, hash) = w.chain.link(at, e);
        let linked = Linked {
            seq,
            at,
            event: e,
            prev: &prev,
            hash: &hash,
        };
        self.db.insert_event(&mut w.tx, linked).await
    }

    /// Applies one decision in a transaction; false when its compare-and-set failed.
    async fn apply_one(
        &self,
        w: &mut Write<B::Tx>,
        d: &DecisionWrite,
    ) -> Result<Option<Action>, StoreError> {
        let id = d.action.id;
        if self.db.approval_count_in(&mut w.tx, id).await? != d.recorded as i64 {
            return Ok(None);
        }
        let pending = [ActionState::Pending];
        let now = match d.new_state {
            Some(to) => {
                self.db
                    .move_action(&mut w.tx, id, &pending, to, Some(&d.reason))
                    .await?
            }
            None => self
                .db
                .action_in(&mut w.tx, id)
                .await?
                .filter(|a| a.state == ActionState::Pending),
        };
        let Some(now) = now else { return Ok(None) };
        let at = d.approval.at.clone();
        self.append_in(w, &at, &d.event).await?;
        // The approval names the event just appended: that event records it.
        let approval = ApprovalRow {
            event_seq: Some(w.chain.seq),
            ..d.approval.clone()
        };
        self.db.insert_approval(&mut w.tx, &approval).await?;
        Ok(Some(now))
    }
}

/// Actions a run asks for: carried-over ones are still asked for (pending under
/// an earlier run), or the next run's circuit breaker would misfire.
fn actionable(actions: &[NewAction]) -> i64 {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a.state,
                ActionState::Pending | ActionState::Ready | ActionState::CarriedOver
            )
        })
        .count() as i64
}

#[async_trait]
impl<B: Backend> Store for Chained<B> {
    #[tracing::instrument(skip_all)]
    async fn scan_processed(&self, tenant: &str, sha256: &str) -> Result<bool, StoreError> {
        self.db.scan_processed(tenant, sha256).await
    }

    #[tracing::instrument(skip_all)]
    async fn previous_action_count(&self, tenant: &str) -> Result<Option<i64>, StoreError> {
        self.db.previous_action_count(tenant).await
    }

    #[tracing::instrument(skip_all)]
    async fn record_event(&self, event: NewEvent) -> Result<(), StoreError> {
        let mut w = self.begin().await?;
        let at = ts(self.clock.now());
        self.append_in(&mut w, &at, &event).await?;
        self.commit(w).await
    }

    #[tracing::instrument(skip_all, fields(run = %run.id, actions = actions.len()))]
    async fn record_run(
        &self,
        run: &NewRun,
        actions: &[NewAction],
        rule_errors: &[NewRuleError],
    ) -> Result<Vec<i64>, StoreError> {
        self.record(run, actions, rule_errors, false).await
    }

    #[tracing::instrument(skip_all, fields(run = %run.id, actions = actions.len()))]
    async fn record_run_once(
        &self,
        run: &NewRun,
        actions: &[NewAction],
        rule_errors: &[NewRuleError],
    ) -> Result<Vec<i64>, StoreError> {
        self.record(run, actions, rule_errors, true).await
    }

    #[tracing::instrument(skip_all)]
    async fn actions(&self, f: &Filter) -> Result<Vec<Action>, StoreError> {
        self.db.actions(f).await
    }

    #[tracing::instrument(skip_all)]
    async fn scan_action_counts(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Vec<(ActionState, u64)>, StoreError> {
        self.db
            .action_counts(tenant, sha256)
            .await?
            .into_iter()
            .map(|(state, n)| {
                let s = ActionState::parse(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown action state {state:?}"))
                })?;
                Ok((s, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn action(&self, id: i64) -> Result<Option<Action>, StoreError> {
        self.db.action(id).await
    }

    #[tracing::instrument(skip_all)]
    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at = self.db.run_scanned_at(run_id).await?;
        Ok(at.as_deref().and_then(parse_ts))
    }

    #[tracing::instrument(skip_all)]
    async fn run_actor(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        self.db.run_actor(run_id).await
    }

    #[tracing::instrument(skip_all, fields(ids = ids.len()))]
    async fn retry_counts(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, (u32, DateTime<Utc>)>, StoreError> {
        Ok(retry_map(self.db.retry_rows(ids).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        self.db.approvals(id).await
    }

    #[tracing::instrument(skip_all)]
    async fn expire_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let at = ts(now);
        let mut w = self.begin().await?;
        let due = self.db.due_in(&mut w.tx, &at).await?;
        for a in &due {
            let why = "approval window passed without a decision";
            self.db
                .set_state(&mut w.tx, a.id, ActionState::Expired, Some(why))
                .await?;
            let detail = format!(
                "pending since {}; expired at {} without a decision",
                ts(a.created_at),
                a.expires_at.map_or_else(|| "?".to_string(), ts)
            );
            let ev = state_event(a, "state_changed", "system", ActionState::Expired, detail);
            self.append_in(&mut w, &at, &ev).await?;
        }
        self.commit(w).await?;
        Ok(due.len() as u64)
    }

    #[tracing::instrument(skip_all)]
    async fn approval_basis(&self, id: i64) -> Result<ApprovalBasis, StoreError> {
        let rows = self.db.approvals(id).await?;
        let recorded = rows.len();
        let mut chained = Vec::with_capacity(rows.len());
        for ap in rows {
            let ev = match ap.event_seq {
                Some(seq) => self.db.event_at(seq).await?,
                None => None,
            };
            if approval_in_chain(&ap, ev.as_ref(), self.key.as_ref(), self.keyed_from) {
                chained.push(ap);
            } else {
                tracing::warn!(
                    action = id,
                    approver = %ap.approver,
                    "an approval row is not recorded in the history chain; it does not count"
                );
            }
        }
        Ok(ApprovalBasis { chained, recorded })
    }

    #[tracing::instrument(skip_all, fields(writes = writes.len()))]
    async fn apply_decisions(
        &self,
        writes: Vec<DecisionWrite>,
    ) -> Result<Option<Vec<Action>>, StoreError> {
        let mut w = self.begin().await?;
        let mut out = Vec::with_capacity(writes.len());
        for d in &writes {
            match self.apply_one(&mut w, d).await? {
                Some(a) => out.push(a),
                // Dropping the transaction rolls every change back.
                None => return Ok(None),
            }
        }
        self.commit(w).await?;
        Ok(Some(out))
    }

    #[tracing::instrument(skip_all)]
    async fn events(&self, f: &Filter) -> Result<Vec<EventRow>, StoreError> {
        self.db.events(f).await
    }

    #[tracing::instrument(skip_all)]
    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let (events, actions, approvals) = self.db.everything().await?;
        Ok(verify_history(
            &events,
            &actions,
            &approvals,
            self.key.as_ref(),
            self.clock.now(),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn event_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        self.db.event_hash_at(seq).await
    }

    #[tracing::instrument(skip_all, fields(ids = ids.len(), to))]
    async fn claim(
        &self,
        ids: &[i64],
        from: &[ActionState],
        to: ActionState,
        actor: &str,
        detail: &str,
    ) -> Result<Vec<Action>, StoreError> {
        let mut w = self.begin().await?;
        // Taken with the chain lock, so times follow the chain's order.
        let at = ts(self.clock.now());
        let mut out = Vec::new();
        for &id in ids {
            // Moves the row only if it is still in an allowed state.
            let Some(a) = self.db.move_action(&mut w.tx, id, from, to, None).await? else {
                continue;
            };
            let ev = state_event(&a, "state_changed", actor, to, detail.to_string());
            self.append_in(&mut w, &at, &ev).await?;
            out.push(a);
        }
        self.commit(w).await?;
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn append(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut w = self.begin().await?;
        let at = ts(self.clock.now());
        for e in &events {
            self.append_in(&mut w, &at, e).await?;
        }
        self.commit(w).await
    }

    #[tracing::instrument(skip_all, fields(changes = changes.len()))]
    async fn transition(&self, changes: Vec<StateChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut w = self.begin().await?;
        let at = ts(self.clock.now());
        for c in changes {
            self.db
                .set_state(&mut w.tx, c.action_id, c.state, c.reason.as_deref())
                .await?;
            let mut e = c.event;
            e.action_id = Some(c.action_id);
            e.state = Some(c.state.to_string());
            self.append_in(&mut w, &at, &e).await?;
        }
        self.commit(w).await
    }

    #[tracing::instrument(skip_all)]
    async fn tenant_state(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.db.tenant_state(tenant, key).await
    }

    #[tracing::instrument(skip_all)]
    async fn set_tenant_state(
        &self,
        tenant: &str,
        key: &str,
        value: &str,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        let mut w = self.begin().await?;
        let at = ts(self.clock.now());
        self.db
            .put_tenant_state(&mut w.tx, tenant, key, value, &at)
            .await?;
        self.append_in(&mut w, &at, &event).await?;
        self.commit(w).await
    }

    #[tracing::instrument(skip_all, fields(name, holder))]
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let now = self.clock.now();
        let until =
            now + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::seconds(60));
        self.db.try_lease(name, holder, &ts(now), &ts(until)).await
    }

    #[tracing::instrument(skip_all)]
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.db.release_lease(name, holder).await
    }

    #[tracing::instrument(skip_all)]
    async fn last_run_at(&self, tenant: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at = self.db.last_run_at(tenant).await?;
        Ok(at.as_deref().and_then(parse_ts))
    }

    async fn last_scanned_at(&self, tenant: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at = self.db.last_scanned_at(tenant).await?;
        Ok(at.as_deref().and_then(parse_ts))
    }
}
