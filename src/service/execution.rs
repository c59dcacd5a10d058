//! Settle, then execute: the one pass over a tenant that the daemon (on its
//! timer, after each run, on an API approval) and the `execute` command make.
//! Actions a stopped process left `executing` are settled from live state
//! first, then ready and approved actions are executed.

use crate::config::{Config, TenantConfig};
use crate::domain::{ActionState, ExecReport};
use crate::execute::{ExecError, Executor};
use crate::graph::CallObserver;
use crate::notify::notice::{Notice, NoticeAction};
use crate::store::{Filter, Store, StoreError};

/// What a pass does when settling fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSettleError {
    /// Stop: execute nothing (the command line reports the error).
    Stop,
    /// Execute ready and approved actions anyway (the daemon logs the error).
    Execute,
}

/// What a pass over one tenant did.
#[derive(Debug)]
pub enum Pass {
    /// No action was ready, approved or in flight.
    Idle,
    /// Actions wait, but none can be executed: no Graph section, or its
    /// credential cannot be read.
    Unavailable {
        /// How many actions wait (ready, approved or in flight).
        waiting: usize,
        /// Why they cannot be executed.
        error: ExecError,
    },
    /// Actions were settled and executed.
    Ran {
        /// The actions left in flight, settled.
        settled: Result<ExecReport, ExecError>,
        /// The ready and approved actions, executed; `None` when settling
        /// failed and the pass stopped.
        executed: Option<Result<ExecReport, ExecError>>,
    },
}

/// How many of the tenant's actions are ready, approved or in flight.
async fn waiting(store: &dyn Store, tenant: &str) -> Result<usize, StoreError> {
    let mut waiting = 0;
    for state in [
        ActionState::Ready,
        ActionState::Approved,
        ActionState::Executing,
    ] {
        waiting += store
            .actions(&Filter {
                tenant: Some(tenant.to_string()),
                state: Some(state.to_string()),
                ..Filter::default()
            })
            .await?
            .len();
    }
    Ok(waiting)
}

/// Settles the tenant's actions left in flight, then executes its ready and
/// approved ones, as `actor`; `observe` is told of every Graph call. Only
/// counting the waiting actions is an error here; the steps' own errors are
/// in the [`Pass`].
pub async fn settle_and_execute(
    cfg: &Config,
    tenant: &TenantConfig,
    store: &dyn Store,
    actor: &str,
    observe: Option<CallObserver>,
    on_settle_error: OnSettleError,
) -> Result<Pass, StoreError> {
    let waiting = waiting(store, &tenant.name).await?;
    if waiting == 0 {
        return Ok(Pass::Idle);
    }
    let ex = match Executor::new(cfg, tenant, store, actor) {
        Ok(ex) => ex,
        Err(error) => return Ok(Pass::Unavailable { waiting, error }),
    };
    if let Some(o) = observe {
        ex.observe(o);
    }
    let settled = ex.reconcile().await;
    if settled.is_err() && on_settle_error == OnSettleError::Stop {
        return Ok(Pass::Ran {
            settled,
            executed: None,
        });
    }
    let executed = Some(ex.run_pending().await);
    Ok(Pass::Ran { settled, executed })
}

/// The `action_failed` notice for the actions of `report` that failed, named
/// with their kind and UPN as the store has them; `None` when none failed.
pub async fn failed_notice(store: &dyn Store, tenant: &str, report: &ExecReport) -> Option<Notice> {
    let mut failed = Vec::new();
    for r in report
        .results
        .iter()
        .filter(|r| r.state == ActionState::Failed)
    {
        let mut n = NoticeAction {
            id: r.id,
            kind: String::new(),
            upn: String::new(),
            reason: r.reason.clone(),
        };
        if let Ok(Some(a)) = store.action(r.id).await {
            n.kind = a.kind.to_string();
            n.upn = a.identity_upn;
        }
        failed.push(n);
    }
    (!failed.is_empty()).then(|| Notice::ActionFailed {
        tenant: tenant.to_string(),
        actions: failed,
    })
}
