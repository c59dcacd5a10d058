//! What one cycle works with and what it gives: its options, its per-tenant
//! outcome (and the notices a recorded run sends), and why it could not run.

use chrono::{DateTime, Utc};

use crate::config::{Config, TenantConfig};
use crate::domain::ActionState;
use crate::exceptions::ExceptionError;
use crate::notify::notice::{Notice, NoticeAction};
use crate::plan::Plan;
use crate::policy::{PolicyError, RuleFailure};
use crate::scan::{ScanError, ScanRequest};
use crate::store::{Store, StoreError};

/// Why a cycle could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The rule set is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The exceptions file is invalid.
    #[error(transparent)]
    Exceptions(#[from] ExceptionError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such tenant in the config.
    #[error("no tenant named {0:?} in the config")]
    UnknownTenant(String),
    /// The command asked for a scan that no source has; nothing was recorded.
    #[error("{0}")]
    Request(String),
    /// The rule evaluation thread failed.
    #[error("rule evaluation stopped unexpectedly: {0}")]
    Join(String),
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only this tenant (all when `None`).
    pub tenant: Option<String>,
    /// Which scan.
    pub scan: ScanRequest,
    /// Process a scan again even if it was already processed.
    pub force: bool,
    /// Who started the run, for history.
    pub actor: String,
    /// The current time.
    pub now: DateTime<Utc>,
    /// One-shot commands only (`plan`, `run --once`), never the daemon: the
    /// scans planned from are not freed but left to the operating system at
    /// exit. Freeing a 100k-identity scan is hundreds of thousands of small
    /// `free` calls (about a tenth of `plan`'s CPU time) just before the
    /// process ends and its whole heap is reclaimed at once anyway.
    pub keep_scans_until_exit: bool,
}

/// What happened for one tenant.
#[derive(Debug)]
pub enum TenantOutcome {
    /// The scan was planned (and recorded when a store was given).
    Planned {
        /// Tenant name.
        tenant: String,
        /// Run id.
        run_id: String,
        /// The scan's source.
        scan_source: String,
        /// The plan.
        plan: Plan,
        /// Recorded action ids, in plan order (empty without a store).
        ids: Vec<i64>,
        /// Rule errors.
        failures: Vec<RuleFailure>,
        /// Rule-set hash.
        rule_set_hash: String,
    },
    /// This exact scan was processed before; nothing was done.
    AlreadyProcessed {
        /// Tenant name.
        tenant: String,
        /// The scan's source.
        scan_source: String,
    },
    /// The scan was refused (recorded in history when a store was given).
    Rejected {
        /// Tenant name.
        tenant: String,
        /// Why.
        error: ScanError,
    },
}

impl TenantOutcome {
    /// The notices a recorded run sends: its actions waiting for approval, and
    /// the guardrails that held it for approval.
    pub fn notices(&self) -> Vec<Notice> {
        let TenantOutcome::Planned {
            tenant,
            run_id,
            plan,
            ids,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let pending: Vec<NoticeAction> = plan
            .actions
            .iter()
            .zip(ids)
            .filter(|(a, _)| a.state() == ActionState::Pending)
            .map(|(a, id)| NoticeAction::new(*id, a.kind.as_str(), &a.identity_upn, &a.reasons))
            .collect();
        if !pending.is_empty() {
            out.push(Notice::ApprovalPending {
                tenant: tenant.clone(),
                run_id: run_id.clone(),
                actions: pending,
            });
        }
        if !plan.downgrades.is_empty() {
            out.push(Notice::RunDowngraded {
                tenant: tenant.clone(),
                run_id: run_id.clone(),
                reasons: plan.downgrades.clone(),
            });
        }
        out
    }
}

/// What one tenant's cycle works with.
#[derive(Clone, Copy)]
pub(super) struct TenantCycle<'a> {
    /// The configuration.
    pub cfg: &'a Config,
    /// Where the run is recorded (`None` plans without writing).
    pub store: Option<&'a dyn Store>,
    /// The tenant.
    pub tenant: &'a TenantConfig,
    /// What to run and how.
    pub opts: &'a RunOptions,
}
