//! Execution: carries out ready and approved actions through Microsoft Graph.
//!
//! For every action: claim it (`executing`), read live state, decide (already
//! done, refused by a live guardrail, or a write), commit the write's intent and
//! undo snapshot to history, send the writes (batched), then commit the outcome.
//! No transaction is held across a Graph call, and a write is never sent without
//! its intent row committed first. What each action decides and writes lives in
//! its own module under [`crate::actions`]; this is the orchestration.

mod live;
pub mod reconcile;
mod undo;

use std::collections::{HashMap, VecDeque};

use serde_json::{Value, json};

use crate::actions::context::{Ctx, Work, call_record, map_error};
use crate::actions::handler;
use crate::actions::reads::{Ahead, Reads};
use crate::config::{Config, TenantConfig};
use crate::domain::{Action, ActionKind, ActionState, ExecReport, ExecResult, Outcome, WorkKind};
use crate::graph::{Answer, GraphClient, GraphError, GraphRequest};
use crate::store::{Filter, NewEvent, StateChange, Store, StoreError};

/// Why execution could not run at all (per-action problems are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Graph client could not be built (credential unreadable).
    #[error("tenant {tenant}: {source}")]
    Graph {
        /// Tenant name.
        tenant: String,
        /// The cause.
        source: GraphError,
    },
    /// The tenant has no Graph configuration.
    #[error("tenant {0}: no [tenant.graph] section, so actions cannot be executed")]
    NotConfigured(String),
}

/// Whether a 404 on a write of `w` means the goal is already reached.
fn gone_is_done(w: &Work) -> bool {
    match w.action.kind {
        WorkKind::Remedy(k) => handler(k).gone_is_done(),
        WorkKind::Undo => false,
    }
}

/// What a successful action did, for history.
fn done_text(w: &Work) -> String {
    match w.action.kind {
        WorkKind::Remedy(k) => handler(k).done_text(&w.action),
        WorkKind::Undo => format!(
            "undo of action {} done",
            w.action.targets.first().map_or("?", String::as_str)
        ),
    }
}

/// The outcome of one action's writes, from their answers.
fn outcome_of(w: &mut Work, answers: &[(GraphRequest, Answer)]) -> Outcome {
    let mut failure = None;
    for (req, ans) in answers {
        w.calls.push(call_record(req, ans));
        match ans {
            Ok(r) if r.ok() => {}
            Ok(r) if r.status == 404 && gone_is_done(w) => {}
            Ok(r) => failure = failure.or(Some(map_error(r, &req.describe()))),
            Err(e) => {
                failure = failure.or(Some(Outcome::retryable(format!("{}: {e}", req.describe()))))
            }
        }
    }
    failure.unwrap_or_else(|| Outcome::Done(done_text(w)))
}

/// Chunks of writes in flight at once: the next chunk's intents are committed
/// and its writes start while the previous chunk's last answers are awaited.
const CHUNKS_IN_FLIGHT: usize = 2;

/// The writes of one chunk being sent; the sending stops if this is dropped
/// (its intents stay committed, its actions `executing`, for `reconcile`).
struct Flight {
    part: Vec<Work>,
    /// Which action of `part` each request is a write of.
    index: Vec<usize>,
    reqs: Vec<GraphRequest>,
    sending: tokio::task::JoinHandle<Vec<Answer>>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.sending.abort();
    }
}

/// Takes from the front of `rest` the actions whose writes make up about
/// `chunk` requests (at least one action).
fn take_chunk(rest: &mut Vec<Work>, chunk: usize) -> Vec<Work> {
    let mut take = 0;
    let mut requests = 0;
    while take < rest.len() && (take == 0 || requests + rest[take].writes.len() <= chunk) {
        requests += rest[take].writes.len();
        take += 1;
    }
    let later = rest.split_off(take);
    std::mem::replace(rest, later)
}

/// Executes actions of one tenant.
pub struct Executor<'a> {
    cx: Ctx<'a>,
}

impl<'a> Executor<'a> {
    /// Prepares execution for a tenant (reads its credential).
    pub fn new(
        cfg: &'a Config,
        tenant: &'a TenantConfig,
        store: &'a dyn Store,
        actor: &str,
    ) -> Result<Executor<'a>, ExecError> {
        let g = tenant
            .graph
            .as_ref()
            .ok_or_else(|| ExecError::NotConfigured(tenant.name.clone()))?;
        let graph = GraphClient::new(&tenant.tenant_id, g).map_err(|source| ExecError::Graph {
            tenant: tenant.name.clone(),
            source,
        })?;
        let cx = Ctx {
            cfg,
            tenant,
            store,
            graph,
            actor: actor.to_string(),
        };
        Ok(Executor { cx })
    }

    /// Feeds every Graph answer and retry wait to `o` (the daemon's metrics).
    pub fn observe(&self, o: crate::graph::CallObserver) {
        self.cx.graph.observe(o);
    }

    /// Attempts per action, and the wait before attempt `k + 1` after `k`
    /// retryable failures: `action_retry_secs` doubled each time, at most a day.
    fn retry_policy(&self, failures: u32) -> (u32, chrono::Duration) {
        let (n, base) = self
            .cx
            .tenant
            .graph
            .as_ref()
            .map_or((5, 300), |g| (g.action_attempts, g.action_retry_secs));
        let factor = 1u64 << failures.saturating_sub(1).min(20);
        let secs = base.saturating_mul(factor).min(86_400);
        (
            n,
            chrono::Duration::seconds(i64::try_from(secs).unwrap_or(86_400)),
        )
    }

    /// Executes every ready or approved action of the tenant, except those
    /// waiting out the backoff after a retryable failure.
    pub async fn run_pending(&self) -> Result<ExecReport, ExecError> {
        let mut ids = Vec::new();
        for state in [ActionState::Ready, ActionState::Approved] {
            let rows = self
                .cx
                .store
                .actions(&Filter {
                    tenant: Some(self.cx.tenant.name.clone()),
                    state: Some(state.to_string()),
                    ..Filter::default()
                })
                .await?;
            ids.extend(rows.into_iter().map(|r| r.id));
        }
        ids.sort_unstable();
        let retries = self.cx.store.retry_counts(&ids).await?;
        let now = chrono::Utc::now();
        ids.retain(|id| {
            retries
                .get(id)
                .is_none_or(|(k, last)| now >= *last + self.retry_policy(*k).1)
        });
        self.execute(&ids).await
    }

    /// Executes the given actions (those not ready or approved are left alone).
    pub async fn execute(&self, ids: &[i64]) -> Result<ExecReport, ExecError> {
        if ids.is_empty() {
            return Ok(ExecReport::default());
        }
        let claimed = self
            .cx
            .store
            .claim(
                ids,
                &[ActionState::Ready, ActionState::Approved],
                ActionState::Executing,
                &self.cx.actor,
                "execution started",
            )
            .await?;
        let mut work: Vec<Work> = claimed.into_iter().map(Work::new).collect();
        let claimed_ids: Vec<i64> = work.iter().map(|w| w.action.id).collect();
        let retries = self.cx.store.retry_counts(&claimed_ids).await?;
        for w in &mut work {
            w.attempt = retries.get(&w.action.id).map_or(1, |(k, _)| k + 1);
        }
        self.decide_all(&mut work).await;
        // Actions decided without a write are recorded now; the others go out in
        // chunks sized to what the Graph client sends at once, at most
        // `CHUNKS_IN_FLIGHT` of them in flight: each chunk's intents are
        // committed before any of its writes is sent (while the chunk before
        // is still answered), and its outcomes once all its answers are in, so
        // a crash leaves at most the chunks in flight to settle.
        let (mut rest, decided): (Vec<Work>, Vec<Work>) = work
            .into_iter()
            .partition(|w| w.outcome.is_none() && !w.writes.is_empty());
        let mut report = self.finish(decided).await?;
        let mut flying: VecDeque<Flight> = VecDeque::new();
        let mut landed: Option<Vec<Work>> = None;
        loop {
            while flying.len() < CHUNKS_IN_FLIGHT && !rest.is_empty() {
                let part = take_chunk(&mut rest, self.cx.graph.chunk_requests());
                flying.push_back(self.launch(part).await?);
            }
            if let Some(part) = landed.take() {
                report.results.extend(self.finish(part).await?.results);
            }
            let Some(flight) = flying.pop_front() else {
                break;
            };
            landed = Some(self.land(flight).await);
        }
        Ok(report)
    }

    /// Reads live state and decides every action (writes or outcomes): the
    /// users first (protection), then each kind by its own module, reading
    /// ahead in batches what they need; undos last.
    async fn decide_all(&self, work: &mut [Work]) {
        let cx = &self.cx;
        let mut reads = Reads::default();
        live::check_users(cx, work, &mut reads).await;
        let mut ahead = Ahead::default();
        for w in work.iter().filter(|w| w.outcome.is_none()) {
            if let Some(k) = w.action.remedy() {
                handler(k).plan_reads(w, &mut ahead);
            }
        }
        ahead.read(cx, &mut reads).await;
        for k in ActionKind::ALL {
            let idx: Vec<usize> = (0..work.len())
                .filter(|&i| work[i].outcome.is_none() && work[i].action.remedy() == Some(k))
                .collect();
            if !idx.is_empty() {
                handler(k).decide(cx, work, &idx, &mut reads).await;
            }
        }
        for w in work.iter_mut() {
            if w.outcome.is_none() && w.action.kind == WorkKind::Undo {
                undo::plan_undo(cx, w).await;
            }
        }
    }

    /// The intent of one action's writes, committed before they are sent.
    fn intent(&self, w: &Work) -> NewEvent {
        let writes: Vec<Value> = w
            .writes
            .iter()
            .map(|r| json!({"request": r.describe(), "body": r.body}))
            .collect();
        let detail = json!({"writes": writes, "snapshot": w.snapshot});
        self.cx.event("graph_write_intent", &w.action, detail)
    }

    /// Commits the intents of `part`'s writes, then starts sending them
    /// (batched) without waiting for the answers.
    async fn launch(&self, part: Vec<Work>) -> Result<Flight, ExecError> {
        let intents: Vec<NewEvent> = part
            .iter()
            .filter(|w| w.outcome.is_none() && !w.writes.is_empty())
            .map(|w| self.intent(w))
            .collect();
        // The intent rows are committed before any write is sent.
        self.cx.store.append(intents).await?;
        let mut index = Vec::new();
        let mut reqs = Vec::new();
        for (wi, w) in part.iter().enumerate() {
            if w.outcome.is_none() {
                for r in &w.writes {
                    index.push(wi);
                    reqs.push(r.clone());
                }
            }
        }
        let (graph, sent) = (self.cx.graph.clone(), reqs.clone());
        let sending = tokio::spawn(async move { graph.batch(sent).await });
        Ok(Flight {
            part,
            index,
            reqs,
            sending,
        })
    }

    /// Waits for a chunk's answers and decides each of its actions from them.
    async fn land(&self, mut flight: Flight) -> Vec<Work> {
        let answers = match (&mut flight.sending).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("sending a chunk of writes failed: {e}");
                Vec::new()
            }
        };
        let mut answers = answers.into_iter();
        let mut per_work: HashMap<usize, Vec<(GraphRequest, Answer)>> = HashMap::new();
        let (index, reqs) = (
            std::mem::take(&mut flight.index),
            std::mem::take(&mut flight.reqs),
        );
        for (wi, req) in index.into_iter().zip(reqs) {
            let ans = answers
                .next()
                .unwrap_or_else(|| Err(GraphError::Transport("batch task failed".into())));
            per_work.entry(wi).or_default().push((req, ans));
        }
        let mut part = std::mem::take(&mut flight.part);
        for (wi, answers) in per_work {
            let w = &mut part[wi];
            let outcome = outcome_of(w, &answers);
            w.decide(outcome);
        }
        part
    }

    /// The state, reason and detail recorded for one decided action: a
    /// retryable failure goes back to wait, with backoff, until the attempts
    /// run out.
    fn settle(&self, w: &Work, now: chrono::DateTime<chrono::Utc>) -> (ActionState, String, Value) {
        let outcome = w
            .outcome
            .clone()
            .unwrap_or_else(|| Outcome::retryable("no decision was reached"));
        let mut state = outcome.state();
        let mut reason = outcome.reason();
        let mut detail = json!({"outcome": reason, "calls": w.calls});
        if let Outcome::Failed {
            why,
            retryable: true,
        } = &outcome
        {
            let (n, wait) = self.retry_policy(w.attempt);
            if w.attempt < n {
                let not_before = crate::store::ts(now + wait);
                state = w.action.retry_state();
                reason = format!(
                    "attempt {} of {n} failed (retryable): {why}; next attempt not before {not_before}",
                    w.attempt
                );
                detail["not_before"] = json!(not_before);
            } else {
                reason = format!("failed for good after attempt {} of {n}: {why}", w.attempt);
            }
            detail["outcome"] = json!(reason);
            detail["attempt"] = json!(w.attempt);
            detail["max_attempts"] = json!(n);
        }
        (state, reason, detail)
    }

    async fn finish(&self, work: Vec<Work>) -> Result<ExecReport, ExecError> {
        let mut report = ExecReport::default();
        let mut changes = Vec::with_capacity(work.len());
        let now = chrono::Utc::now();
        for w in work {
            let (state, reason, detail) = self.settle(&w, now);
            report.results.push(ExecResult {
                id: w.action.id,
                state,
                reason: reason.clone(),
            });
            changes.push(StateChange {
                action_id: w.action.id,
                state,
                reason: Some(reason),
                event: self.event("execution_outcome", &w.action, detail),
            });
        }
        self.cx.store.transition(changes).await?;
        Ok(report)
    }

    fn event(&self, kind: &str, a: &Action, detail: Value) -> NewEvent {
        self.cx.event(kind, a, detail)
    }
}
