//! One cycle for one tenant: config -> scan -> policy -> plan -> record.
//! `plan` runs it without a store (writes nothing); `run --once` records it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{Config, TenantConfig};
use crate::domain::{ActionState, WorkKind};
use crate::exceptions::{ExceptionError, Exceptions, ExceptionsSource};
use crate::plan::{self, Plan, Verdict};
use crate::policy::{PolicyError, RuleFailure, RuleSet};
use crate::scan::{self, ScanError, ScanRequest};
use crate::store::{Filter, NewAction, NewEvent, NewRuleError, NewRun, Store, StoreError};

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

/// Loads rules and exceptions as configured; an exception that cannot apply
/// (its file missing, its rule unknown) refuses the set.
pub fn load_rules(cfg: &Config) -> Result<(Arc<RuleSet>, Arc<Exceptions>), RunError> {
    let rules = RuleSet::load(&cfg.policies_dir, &cfg.rules)?;
    let exceptions = Exceptions::load_from(&ExceptionsSource::from_config(cfg))?;
    exceptions.check_rules(rules.rules.iter().map(|r| r.name.as_str()))?;
    Ok((Arc::new(rules), Arc::new(exceptions)))
}

/// Runs one cycle for the selected tenants, in config order.
pub async fn run(
    cfg: &Config,
    store: Option<&dyn Store>,
    opts: &RunOptions,
) -> Result<Vec<TenantOutcome>, RunError> {
    let tenants: Vec<&TenantConfig> = match &opts.tenant {
        Some(name) => vec![
            cfg.tenant(name)
                .ok_or_else(|| RunError::UnknownTenant(name.clone()))?,
        ],
        None => cfg.tenants.iter().collect(),
    };
    let (rules, exceptions) = match load_rules(cfg) {
        Ok(r) => r,
        Err(e) => {
            if let Some(store) = store {
                store
                    .record_event(NewEvent {
                        kind: "rule_set_refused".into(),
                        actor: opts.actor.clone(),
                        detail: e.to_string(),
                        ..NewEvent::default()
                    })
                    .await?;
            }
            return Err(e);
        }
    };
    run_loaded(cfg, store, opts, &tenants, &rules, &exceptions).await
}

/// Runs one cycle with rules already loaded (the daemon keeps them compiled).
pub async fn run_loaded(
    cfg: &Config,
    store: Option<&dyn Store>,
    opts: &RunOptions,
    tenants: &[&TenantConfig],
    rules: &Arc<RuleSet>,
    exceptions: &Exceptions,
) -> Result<Vec<TenantOutcome>, RunError> {
    if let Some(store) = store {
        store.expire_due(opts.now).await?;
    }
    let mut out = Vec::with_capacity(tenants.len());
    for t in tenants {
        out.push(run_tenant(cfg, store, t, rules, exceptions, opts).await?);
    }
    Ok(out)
}

async fn run_tenant(
    cfg: &Config,
    store: Option<&dyn Store>,
    tenant: &TenantConfig,
    rules: &Arc<RuleSet>,
    exceptions: &Exceptions,
    opts: &RunOptions,
) -> Result<TenantOutcome, RunError> {
    let loaded = match scan::load_for_tenant(cfg, tenant, &opts.scan, opts.now).await {
        Ok(l) => l,
        Err(ScanError::BadRequest(m)) => return Err(RunError::Request(m)),
        Err(error) => {
            tracing::warn!(tenant = %tenant.name, %error, "scan refused");
            if let Some(store) = store {
                store
                    .record_event(NewEvent {
                        tenant: Some(tenant.name.clone()),
                        kind: "scan_rejected".into(),
                        actor: opts.actor.clone(),
                        detail: error.to_string(),
                        ..NewEvent::default()
                    })
                    .await?;
            }
            return Ok(TenantOutcome::Rejected {
                tenant: tenant.name.clone(),
                error,
            });
        }
    };
    // Say so loudly when the newest scan is not the one processed: a newer file
    // was refused (dated in the future), or the newest is older than the scan
    // the last run processed.
    for error in &loaded.refused {
        tracing::warn!(tenant = %tenant.name, %error, used = %loaded.source_name, "newer scan refused; an older scan is used");
        if let Some(store) = store {
            store
                .record_event(NewEvent {
                    tenant: Some(tenant.name.clone()),
                    kind: "scan_rejected".into(),
                    actor: opts.actor.clone(),
                    detail: format!("{error} (scan used instead: {})", loaded.source_name),
                    ..NewEvent::default()
                })
                .await?;
        }
    }
    if let Some(store) = store
        && opts.scan.file.is_none()
        && opts.scan.scanned_at.is_none()
        && let Some(last) = store.last_scanned_at(&tenant.name).await?
        && loaded.scan.scanned_at < last
    {
        let detail = format!(
            "{}: the newest scan (dated {}) is older than the scan the last run processed (dated {})",
            loaded.source_name,
            loaded.scan.scanned_at.to_rfc3339(),
            last.to_rfc3339()
        );
        tracing::warn!(tenant = %tenant.name, "{detail}");
        store
            .record_event(NewEvent {
                tenant: Some(tenant.name.clone()),
                kind: "scan_older_than_processed".into(),
                actor: opts.actor.clone(),
                detail,
                ..NewEvent::default()
            })
            .await?;
    }
    if let Some(store) = store
        && !opts.force
        && store.scan_processed(&tenant.name, &loaded.sha256).await?
    {
        return Ok(TenantOutcome::AlreadyProcessed {
            tenant: tenant.name.clone(),
            scan_source: loaded.source_name,
        });
    }
    let scan = Arc::new(loaded.scan);
    let eval = {
        let rules = rules.clone();
        let scan = scan.clone();
        tokio::task::spawn_blocking(move || rules.evaluate(&scan, None))
            .await
            .map_err(|e| RunError::Join(e.to_string()))??
    };
    for f in &eval.failures {
        tracing::warn!(tenant = %tenant.name, rule = %f.rule, identity = %f.identity_id, error = %f.message, "rule failed");
    }
    let previous = match store {
        Some(s) => s.previous_action_count(&tenant.name).await?,
        None => None,
    };
    let mut plan = plan::build(
        cfg,
        tenant,
        &plan::Inputs {
            scan: &scan,
            rules,
            eval: &eval,
            exceptions,
            previous,
            now: opts.now,
        },
    );
    let run_id = uuid::Uuid::new_v4().to_string();
    let mut ids = Vec::new();
    if let Some(store) = store {
        carry_over(store, &tenant.name, &mut plan).await?;
        let expires = opts.now
            + chrono::Duration::from_std(cfg.approval_ttl.0)
                .unwrap_or_else(|_| chrono::Duration::hours(24));
        let new_run = NewRun {
            id: run_id.clone(),
            tenant: tenant.name.clone(),
            scan_source: loaded.source_name.clone(),
            scan_sha256: loaded.sha256.clone(),
            scanned_at: scan.scanned_at,
            rule_set_hash: rules.hash.clone(),
            mode: plan.mode.to_string(),
            downgrades: plan.downgrades.clone(),
            identities: scan.identities.len() as i64,
            findings: scan.findings.len() as i64,
            started_at: opts.now,
            actor: opts.actor.clone(),
            kind: "scan".into(),
        };
        let actions: Vec<NewAction> = plan
            .actions
            .iter()
            .map(|a| {
                let state = a.state();
                NewAction {
                    identity_id: a.identity_id.clone(),
                    identity_upn: a.identity_upn.clone(),
                    identity_name: a.identity_name.clone(),
                    kind: a.kind.into(),
                    targets: a.targets.clone(),
                    reasons: a.reasons.clone(),
                    mode: a.mode,
                    state,
                    state_reason: match &a.decision {
                        Verdict::Proceed => a.carried_over.map(|id| {
                            format!("still pending as action {id}: carried over, not queued again")
                        }),
                        Verdict::Refused(w) | Verdict::Excepted(w) => Some(w.clone()),
                    },
                    expires_at: (state == ActionState::Pending).then_some(expires),
                }
            })
            .collect();
        let errors: Vec<NewRuleError> = eval
            .failures
            .iter()
            .map(|f| NewRuleError {
                rule: f.rule.clone(),
                finding: f.finding.clone(),
                identity_id: f.identity_id.clone(),
                message: f.message.clone(),
            })
            .collect();
        ids = store.record_run(&new_run, &actions, &errors).await?;
    }
    Ok(TenantOutcome::Planned {
        tenant: tenant.name.clone(),
        run_id,
        scan_source: loaded.source_name,
        plan,
        ids,
        failures: eval.failures,
        rule_set_hash: rules.hash.clone(),
    })
}

/// Links each action that would be queued for approval again to the same action
/// (tenant, identity, kind, targets) still pending from an earlier scan, so that
/// hourly scans do not pile up copies for the approvers (and a webhook each).
async fn carry_over(store: &dyn Store, tenant: &str, plan: &mut Plan) -> Result<(), RunError> {
    if !plan
        .actions
        .iter()
        .any(|a| a.state() == ActionState::Pending)
    {
        return Ok(());
    }
    let pending = store
        .actions(&Filter {
            tenant: Some(tenant.to_string()),
            state: Some(ActionState::Pending.to_string()),
            ..Filter::default()
        })
        .await?;
    for a in plan
        .actions
        .iter_mut()
        .filter(|a| a.state() == ActionState::Pending)
    {
        let kind = WorkKind::Remedy(a.kind);
        a.carried_over = pending
            .iter()
            .find(|p| {
                p.identity_id.eq_ignore_ascii_case(&a.identity_id) && p.kind == kind && {
                    let mut t = p.targets.clone();
                    t.sort();
                    let mut want = a.targets.clone();
                    want.sort();
                    t == want
                }
            })
            .map(|p| p.id);
    }
    Ok(())
}
