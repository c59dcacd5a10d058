//! One tick of a tenant (run a cycle, then settle and execute), a prompt
//! execution pass, and the expiry of overdue approvals: each calls a use case
//! of the service layer and logs, counts and notifies what it did.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::shared::{Leased, Shared, give_back_memory, read, sd};
use crate::config::Config;
use crate::domain::ExecReport;
use crate::metrics::RunOutcome;
use crate::scan::ScanRequest;
use crate::service::cycle::{RunOptions, TenantOutcome};
use crate::service::execution::{self, OnSettleError, Pass};

impl Shared {
    /// One scheduled (or requested) cycle for a tenant: scan, plan, record,
    /// execute. When another instance holds the tenant's lease, tries again
    /// until the lease is given back or expires (its holder died), unless a run
    /// of the tenant started meanwhile: a tick is not lost to a busy or dead peer.
    pub(super) async fn tick(self: Arc<Self>, tenant: String, force: bool, why: &str) {
        let fired = Utc::now();
        let mut again = false;
        loop {
            let Some(slot) = self.slot().await else {
                return;
            };
            match self.enter(&tenant, true) {
                Ok(()) => {}
                // An execution pass is short: the run waits for it.
                Err(false) => {
                    drop(slot);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(true) => {
                    if !again {
                        self.skipped(&tenant, why).await;
                    }
                    return;
                }
            }
            let leased = self.clone().cycle(&tenant, force, why).await;
            self.leave(&tenant);
            drop(slot);
            if leased != Leased::Held || !self.retry_held(&tenant, fired, again).await {
                return;
            }
            again = true;
        }
    }

    /// A place among the runs and passes in progress here; none once stopping.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            p = self.slots.clone().acquire_owned() => p.ok().filter(|_| !self.stopping.is_cancelled()),
            () = self.stopping.cancelled() => None,
        }
    }

    async fn skipped(&self, tenant: &str, why: &str) {
        tracing::warn!(%tenant, "previous run still going; this tick is skipped");
        self.metrics
            .run_finished(tenant, RunOutcome::Skipped, Utc::now());
        self.record(self.event(
            "tick_skipped",
            Some(tenant),
            json!({"why": "the previous run of this tenant is still going", "trigger": why}),
        ))
        .await;
    }

    /// After the lease was found held: waits a third of the lease time (the
    /// holder renews at that pace, so a dead holder's lease has expired within
    /// three waits), then says whether to try again: not when stopping, nor
    /// when a run of the tenant started since the tick fired (the holder's).
    async fn retry_held(&self, tenant: &str, fired: DateTime<Utc>, again: bool) -> bool {
        if !again {
            tracing::info!(%tenant, "trying again until the lease is given back or expires");
        }
        let ttl = Duration::from_secs(read(&self.config).daemon.lease_secs);
        tokio::select! {
            () = tokio::time::sleep(ttl / 3) => {}
            () = self.stopping.cancelled() => return false,
        }
        match self.store.last_run_at(tenant).await {
            Ok(Some(last)) => last < fired,
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "cannot read the last run time");
                true
            }
        }
    }

    async fn cycle(self: Arc<Self>, tenant: &str, force: bool, why: &str) -> Leased {
        let me = self.clone();
        self.with_lease(tenant, || async move {
            let cfg = read(&me.config);
            let Some(tc) = cfg.tenant(tenant) else {
                return;
            };
            let rules = read(&me.rules);
            let opts = RunOptions {
                tenant: Some(tenant.to_string()),
                scan: ScanRequest::default(),
                force,
                actor: me.actor(),
                now: Utc::now(),
                keep_scans_until_exit: false,
            };
            tracing::info!(%tenant, trigger = why, "run starting");
            let store = Some(me.store.as_ref());
            let outcome = crate::service::run::run_loaded(
                &cfg,
                store,
                &opts,
                &[tc],
                &rules.set,
                &rules.exceptions,
            )
            .await;
            match outcome {
                Ok(outcomes) => {
                    for o in &outcomes {
                        me.after_run(o);
                    }
                }
                Err(e) => {
                    tracing::error!(%tenant, error = %e, "run failed");
                    me.metrics
                        .run_finished(tenant, RunOutcome::Failed, Utc::now());
                }
            }
            me.execute_now(&cfg, tenant).await;
            give_back_memory();
            sd(&[sd_notify::NotifyState::Status(&format!(
                "last run: tenant {tenant} at {}",
                Utc::now().to_rfc3339()
            ))]);
        })
        .await
    }

    fn after_run(&self, o: &TenantOutcome) {
        match o {
            TenantOutcome::Planned {
                tenant,
                plan,
                failures,
                ..
            } => {
                self.metrics
                    .run_finished(tenant, RunOutcome::Ok, Utc::now());
                self.metrics.rule_errors(failures.len() as u64);
                for a in &plan.actions {
                    self.metrics.actions(a.kind.as_str(), a.state().as_str(), 1);
                }
                let notifier = read(&self.notifier);
                for notice in o.notices() {
                    notifier.notify(notice);
                }
            }
            TenantOutcome::Rejected { tenant, error } => {
                tracing::warn!(%tenant, %error, "scan refused");
                self.metrics
                    .run_finished(tenant, RunOutcome::Rejected, Utc::now());
            }
            TenantOutcome::AlreadyProcessed { tenant, .. } => {
                tracing::info!(%tenant, "newest scan already processed");
            }
        }
    }

    /// Settles in-flight actions and executes ready and approved ones.
    async fn execute_now(&self, cfg: &Config, tenant: &str) {
        let Some(tc) = cfg.tenant(tenant) else {
            return;
        };
        if tc.graph.is_none() {
            return;
        }
        let metrics = self.metrics.clone();
        let observe: crate::graph::CallObserver = Arc::new(move |status, wait| match status {
            Some(s) => metrics.graph_call(s),
            None => metrics.throttle_wait(wait),
        });
        let actor = self.actor();
        let store = self.store.as_ref();
        let pass = execution::settle_and_execute(
            cfg,
            tc,
            store,
            &actor,
            Some(observe),
            OnSettleError::Execute,
        )
        .await;
        let (settled, executed) = match pass {
            // Counting what waits failed: nothing is tried until the next pass.
            Err(_) | Ok(Pass::Idle) => return,
            Ok(Pass::Unavailable { error, .. }) => {
                tracing::error!(%tenant, error = %error, "cannot execute");
                return;
            }
            Ok(Pass::Ran { settled, executed }) => (settled, executed),
        };
        let mut report = ExecReport::default();
        match settled {
            Ok(r) => report.results.extend(r.results),
            Err(e) => tracing::error!(%tenant, error = %e, "cannot settle in-flight actions"),
        }
        match executed {
            Some(Ok(r)) => report.results.extend(r.results),
            Some(Err(e)) => tracing::error!(%tenant, error = %e, "execution stopped"),
            None => {}
        }
        self.executed(tenant, &report).await;
    }

    /// Logs, counts and notifies what an execution pass did.
    async fn executed(&self, tenant: &str, report: &ExecReport) {
        for r in &report.results {
            tracing::info!(%tenant, action = r.id, state = %r.state, why = %r.reason, "action executed");
        }
        for r in &report.results {
            self.metrics.actions("executed", r.state.as_str(), 1);
        }
        if let Some(notice) = execution::failed_notice(self.store.as_ref(), tenant, report).await {
            read(&self.notifier).notify(notice);
        }
    }

    /// Sends the webhook notice of a person's recorded request: its actions
    /// waiting for approval, as a rule run's are announced.
    pub(super) async fn notify_recorded(self: Arc<Self>, tenant: &str, run_id: &str) {
        match crate::service::remediate::pending_notice(self.store.as_ref(), tenant, run_id).await {
            Ok(Some(notice)) => read(&self.notifier).notify(notice),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%tenant, run = %run_id, error = %e, "the pending actions of a recorded request could not be read for the webhooks")
            }
        }
    }

    /// Executes approved actions of a tenant promptly (API approvals, interval).
    pub(super) async fn execute_tenant(self: Arc<Self>, tenant: String) {
        let Some(_slot) = self.slot().await else {
            return;
        };
        if self.enter(&tenant, false).is_err() {
            return;
        }
        let me = self.clone();
        let t = tenant.clone();
        self.with_lease(&tenant, || async move {
            let cfg = read(&me.config);
            me.execute_now(&cfg, &t).await;
        })
        .await;
        self.leave(&tenant);
    }

    /// The execution timer: overdue approvals expire (so that reads, by the API
    /// or the CLI, need no write transaction to see them), then every tenant
    /// gets an execution pass, unless the previous round is still going (with
    /// many tenants, rounds would otherwise pile up behind each other).
    pub(super) async fn on_execution_timer(self: &Arc<Self>) {
        match crate::service::actions::expire_overdue(self.store.as_ref(), Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "pending approvals expired"),
            Err(e) => tracing::warn!(error = %e, "expiring overdue approvals failed"),
        }
        if self.exec_round.swap(true, Ordering::SeqCst) {
            tracing::debug!("the previous execution round is still going");
            return;
        }
        let cfg = read(&self.config);
        let passes: Vec<_> = cfg
            .tenants
            .iter()
            .map(|t| {
                self.tracker
                    .spawn(self.clone().execute_tenant(t.name.clone()))
            })
            .collect();
        let me = self.clone();
        self.tracker.spawn(async move {
            for p in passes {
                let _ = p.await;
            }
            me.exec_round.store(false, Ordering::SeqCst);
        });
    }
}
