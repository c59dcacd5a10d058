//! Execution: carries out ready and approved actions through Microsoft Graph.
//!
//! For every action: claim it (`executing`), read live state, decide (already
//! done, refused by a live guardrail, or a write), commit the write's intent and
//! undo snapshot to history, send the writes (batched), then commit the outcome.
//! No transaction is held across a Graph call, and a write is never sent without
//! its intent row committed first.

mod ca;
mod live;
pub mod reconcile;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{Config, TenantConfig};
use crate::domain::{Action, ActionKind, ActionState, ExecReport, ExecResult, Outcome, WorkKind};
use crate::graph::{Answer, GraphClient, GraphError, GraphRequest, GraphResponse};
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

/// Maps a final Graph answer to an outcome, from status and error code only.
pub fn map_error(resp: &GraphResponse, what: &str) -> Outcome {
    let code = resp.error_code().unwrap_or("");
    let msg = resp.error_message();
    match resp.status {
        403 => Outcome::failed(format!(
            "{what}: forbidden ({code}); the app lacks the permission or directory role for this (acting on administrators needs the Privileged Authentication Administrator role): {msg}"
        )),
        404 => Outcome::failed(format!("{what}: not found ({code})")),
        429 | 500 | 502 | 503 | 504 => Outcome::retryable(format!(
            "{what}: Graph still unavailable or throttling after retries: {msg}"
        )),
        401 => Outcome::retryable(format!("{what}: authentication refused ({code})")),
        _ => Outcome::failed(format!("{what}: {msg}")),
    }
}

/// A record of one Graph call, for history.
pub(crate) fn call_record(req: &GraphRequest, resp: &Result<GraphResponse, GraphError>) -> Value {
    match resp {
        Ok(r) => json!({
            "request": req.describe(),
            "status": r.status,
            "code": r.error_code(),
            "attempts": r.attempts,
        }),
        Err(e) => json!({"request": req.describe(), "error": e.to_string()}),
    }
}

/// One action being executed.
pub(crate) struct Work {
    pub action: Action,
    /// The remediation; `None` for an undo (see `action.kind`).
    pub kind: Option<ActionKind>,
    pub targets: Vec<String>,
    /// Calls made so far, for history.
    pub calls: Vec<Value>,
    /// Writes to send, when live state says so.
    pub writes: Vec<GraphRequest>,
    /// What undo needs, committed with the intent.
    pub snapshot: Option<Value>,
    /// Set once decided.
    pub outcome: Option<Outcome>,
    /// Which execution attempt this is: 1 + the retryable failures before it.
    pub attempt: u32,
}

impl Work {
    fn new(action: Action) -> Work {
        let kind = action.remedy();
        let targets = action.targets.clone();
        Work {
            action,
            kind,
            targets,
            calls: Vec::new(),
            writes: Vec::new(),
            snapshot: None,
            outcome: None,
            attempt: 1,
        }
    }

    pub(crate) fn decide(&mut self, o: Outcome) {
        if self.outcome.is_none() {
            self.outcome = Some(o);
        }
    }
}

/// Executes actions of one tenant.
pub struct Executor<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) tenant: &'a TenantConfig,
    pub(crate) store: &'a dyn Store,
    pub(crate) graph: Arc<GraphClient>,
    pub(crate) actor: String,
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
        Ok(Executor {
            cfg,
            tenant,
            store,
            graph,
            actor: actor.to_string(),
        })
    }

    /// Feeds every Graph answer and retry wait to `o` (the daemon's metrics).
    pub fn observe(&self, o: crate::graph::CallObserver) {
        self.graph.observe(o);
    }

    pub(crate) fn event(&self, kind: &str, a: &Action, detail: Value) -> NewEvent {
        NewEvent {
            tenant: Some(self.tenant.name.clone()),
            run_id: Some(a.run_id.clone()),
            action_id: Some(a.id),
            identity_id: Some(a.identity_id.clone()),
            action_kind: Some(a.kind.to_string()),
            rule: None,
            kind: kind.into(),
            actor: self.actor.clone(),
            state: Some(ActionState::Executing.to_string()),
            detail: detail.to_string(),
        }
    }

    /// Attempts per action, and the wait before attempt `k + 1` after `k`
    /// retryable failures: `action_retry_secs` doubled each time, at most a day.
    fn retry_policy(&self, failures: u32) -> (u32, chrono::Duration) {
        let (n, base) = self
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
                .store
                .actions(&Filter {
                    tenant: Some(self.tenant.name.clone()),
                    state: Some(state.to_string()),
                    ..Filter::default()
                })
                .await?;
            ids.extend(rows.into_iter().map(|r| r.id));
        }
        ids.sort_unstable();
        let retries = self.store.retry_counts(&ids).await?;
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
            .store
            .claim(
                ids,
                &[ActionState::Ready, ActionState::Approved],
                ActionState::Executing,
                &self.actor,
                "execution started",
            )
            .await?;
        let mut work: Vec<Work> = claimed.into_iter().map(Work::new).collect();
        let claimed_ids: Vec<i64> = work.iter().map(|w| w.action.id).collect();
        let retries = self.store.retry_counts(&claimed_ids).await?;
        for w in &mut work {
            w.attempt = retries.get(&w.action.id).map_or(1, |(k, _)| k + 1);
        }
        self.decide_all(&mut work).await;
        // Actions decided without a write are recorded now; the others go out in
        // chunks of what Graph can take at once, each chunk's intents committed
        // just before it is sent and its outcomes right after, so that a crash
        // leaves at most one chunk to settle.
        let (mut rest, decided): (Vec<Work>, Vec<Work>) = work
            .into_iter()
            .partition(|w| w.outcome.is_none() && !w.writes.is_empty());
        let mut report = self.finish(decided).await?;
        let chunk = self.graph.requests_in_flight();
        while !rest.is_empty() {
            let mut take = 0;
            let mut requests = 0;
            while take < rest.len() && (take == 0 || requests + rest[take].writes.len() <= chunk) {
                requests += rest[take].writes.len();
                take += 1;
            }
            let later = rest.split_off(take);
            let mut part = rest;
            rest = later;
            self.send_writes(&mut part).await?;
            report.results.extend(self.finish(part).await?.results);
        }
        Ok(report)
    }

    /// Reads live state and decides every action (writes or outcomes).
    async fn decide_all(&self, work: &mut [Work]) {
        live::check_users(self, work).await;
        // Removals read live state ahead, in batches (one member list per group).
        let mut reads = live::prefetch_removals(self, work).await;
        for w in work.iter_mut() {
            if w.outcome.is_some() {
                continue;
            }
            match w.action.kind {
                WorkKind::Remedy(ActionKind::RemoveRoleAssignment) => {
                    live::plan_role_removal(self, w, &mut reads).await
                }
                WorkKind::Remedy(ActionKind::RemoveGroupMembership) => {
                    live::plan_group_removal(self, w, &reads).await
                }
                WorkKind::Undo => live::plan_undo(self, w).await,
                // Decided from the user's live state by check_users, or by the
                // Conditional Access step below.
                WorkKind::Remedy(
                    ActionKind::DisableUser
                    | ActionKind::RevokeSessions
                    | ActionKind::EnforceMfa
                    | ActionKind::EnforcePhishingResistantMfa,
                ) => {}
            }
        }
        ca::enforce(self, work).await;
    }

    /// Commits intents, sends the writes in batches, maps the answers.
    async fn send_writes(&self, work: &mut [Work]) -> Result<(), ExecError> {
        let intents: Vec<NewEvent> = work
            .iter()
            .filter(|w| w.outcome.is_none() && !w.writes.is_empty())
            .map(|w| {
                self.event(
                    "graph_write_intent",
                    &w.action,
                    json!({
                        "writes": w.writes.iter().map(|r| json!({"request": r.describe(), "body": r.body})).collect::<Vec<_>>(),
                        "snapshot": w.snapshot,
                    }),
                )
            })
            .collect();
        // The intent rows are committed before any write is sent.
        self.store.append(intents).await?;
        let mut index = Vec::new();
        let mut reqs = Vec::new();
        for (wi, w) in work.iter().enumerate() {
            if w.outcome.is_none() {
                for (ri, r) in w.writes.iter().enumerate() {
                    index.push((wi, ri));
                    reqs.push(r.clone());
                }
            }
        }
        let answers = self.graph.batch(reqs.clone()).await;
        let mut per_work: HashMap<usize, Vec<(GraphRequest, Answer)>> = HashMap::new();
        for ((wi, _), (req, ans)) in index.into_iter().zip(reqs.into_iter().zip(answers)) {
            per_work.entry(wi).or_default().push((req, ans));
        }
        for (wi, answers) in per_work {
            let w = &mut work[wi];
            let mut failure = None;
            for (req, ans) in &answers {
                w.calls.push(call_record(req, ans));
                match ans {
                    Ok(r) if r.ok() => {}
                    Ok(r) if r.status == 404 && live::gone_is_done(w) => {}
                    Ok(r) => failure = failure.or(Some(map_error(r, &req.describe()))),
                    Err(e) => {
                        failure =
                            failure.or(Some(Outcome::retryable(format!("{}: {e}", req.describe()))))
                    }
                }
            }
            w.decide(failure.unwrap_or_else(|| Outcome::Done(live::done_text(w))));
        }
        Ok(())
    }

    async fn finish(&self, work: Vec<Work>) -> Result<ExecReport, ExecError> {
        let mut report = ExecReport::default();
        let mut changes = Vec::with_capacity(work.len());
        let now = chrono::Utc::now();
        for w in work {
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
                // A retryable failure is tried again by later runs, with
                // backoff, until the attempts run out.
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
            report.results.push(ExecResult {
                id: w.action.id,
                state,
                reason: reason.clone(),
            });
            changes.push(StateChange {
                action_id: w.action.id,
                state,
                reason: Some(reason.clone()),
                event: self.event("execution_outcome", &w.action, detail),
            });
        }
        self.store.transition(changes).await?;
        Ok(report)
    }
}
