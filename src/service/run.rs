//! One cycle for one tenant: config -> scan -> policy -> plan -> record, as two
//! use cases: plan a run ([`super::plan_run`]) and record it
//! ([`super::record_run`]). `plan` runs it without a store (writes nothing);
//! `run --once` and the daemon record it.

use std::sync::Arc;

use crate::config::{Config, TenantConfig};
use crate::exceptions::{Exceptions, ExceptionsSource};
use crate::policy::RuleSet;
use crate::scan::ScanError;
use crate::store::{NewEvent, Store, StoreError};

use super::cycle::{RunError, RunOptions, TenantCycle, TenantOutcome};
use super::plan_run::{self, ScanLoad};
use super::record_run;
use super::scan::ScanRunError;

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
        super::actions::expire_overdue(store, opts.now).await?;
    }
    let mut out = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let cycle = TenantCycle {
            cfg,
            store,
            tenant,
            opts,
        };
        out.push(run_tenant(&cycle, rules, exceptions).await?);
    }
    Ok(out)
}

/// A recorded run of a tenant whose source has `graph` scans the tenant first
/// and plans from that scan (unless the command chose a scan); a scan that
/// failed (recorded as `scan_failed`) is the run's rejected scan.
async fn scan_first(cycle: &TenantCycle<'_>) -> Result<Option<ScanError>, RunError> {
    let (Some(store), Some(_)) = (cycle.store, &cycle.tenant.source.graph) else {
        return Ok(None);
    };
    if cycle.opts.scan.file.is_some() || cycle.opts.scan.scanned_at.is_some() {
        return Ok(None);
    }
    match super::scan::scan_tenant(
        cycle.cfg,
        Some(store),
        &cycle.tenant.name,
        &cycle.opts.actor,
    )
    .await
    {
        Ok(_) => Ok(None),
        Err(ScanRunError::Store(e)) => Err(RunError::Store(e)),
        Err(e) => Ok(Some(ScanError::Read {
            source_name: format!("the Graph scan of tenant {:?}", cycle.tenant.name),
            message: e.to_string(),
        })),
    }
}

async fn run_tenant(
    cycle: &TenantCycle<'_>,
    rules: &Arc<RuleSet>,
    exceptions: &Exceptions,
) -> Result<TenantOutcome, RunError> {
    let tenant = cycle.tenant.name.clone();
    if let Some(error) = scan_first(cycle).await? {
        return Ok(TenantOutcome::Rejected { tenant, error });
    }
    let loaded = match plan_run::load_scan(cycle).await? {
        ScanLoad::Loaded(l) => l,
        ScanLoad::Rejected(error) => return Ok(TenantOutcome::Rejected { tenant, error }),
    };
    if let Some(store) = cycle.store
        && !cycle.opts.force
        && store.scan_processed(&tenant, &loaded.sha256).await?
    {
        return Ok(TenantOutcome::AlreadyProcessed {
            tenant,
            scan_source: loaded.source_name,
        });
    }
    let mut planned = plan_run::plan(cycle, rules, exceptions, loaded).await?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let ids = match cycle.store {
        Some(store) => match record_run::record(store, cycle, rules, &mut planned, &run_id).await {
            Ok(ids) => ids,
            // Another instance recorded this scan after the check above.
            Err(RunError::Store(StoreError::AlreadyRecorded { .. })) => {
                return Ok(TenantOutcome::AlreadyProcessed {
                    tenant,
                    scan_source: planned.source_name,
                });
            }
            Err(e) => return Err(e),
        },
        None => Vec::new(),
    };
    Ok(TenantOutcome::Planned {
        tenant,
        run_id,
        scan_source: planned.source_name,
        plan: planned.plan,
        ids,
        failures: planned.eval.failures,
        rule_set_hash: rules.hash.clone(),
    })
}
