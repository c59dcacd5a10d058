//! Plan a run: load the tenant's scan (reporting every scan refused or older
//! than the one processed before), evaluate the rules on it and build the plan.
//! Writes only history events about the scan, and only when a store is given.

use std::sync::Arc;

use crate::config::TenantConfig;
use crate::exceptions::Exceptions;
use crate::plan::{self, Plan};
use crate::policy::{Evaluation, RuleSet};
use crate::scan::{self, LoadedScan, Scan, ScanError};
use crate::store::{NewEvent, Store};

use super::cycle::{RunError, RunOptions, TenantCycle};

/// The scan a run uses, or why there is none.
pub(super) enum ScanLoad {
    /// The scan to plan from.
    Loaded(LoadedScan),
    /// The scan was refused (already recorded in history when a store was given).
    Rejected(ScanError),
}

/// A plan with what it was built from.
pub(super) struct Planned {
    /// The scan planned from.
    pub scan: Arc<Scan>,
    /// Its file path or URL.
    pub source_name: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// What the rules proposed and where they failed.
    pub eval: Evaluation,
    /// The plan.
    pub plan: Plan,
}

fn scan_event(tenant: &TenantConfig, opts: &RunOptions, kind: &str, detail: String) -> NewEvent {
    NewEvent {
        tenant: Some(tenant.name.clone()),
        kind: kind.into(),
        actor: opts.actor.clone(),
        detail,
        ..NewEvent::default()
    }
}

async fn record(store: Option<&dyn Store>, event: NewEvent) -> Result<(), RunError> {
    if let Some(store) = store {
        store.record_event(event).await?;
    }
    Ok(())
}

/// Loads the tenant's scan as requested. A refused scan is a `Rejected`
/// outcome; a bad request (a scan no source has) is an error.
pub(super) async fn load_scan(cycle: &TenantCycle<'_>) -> Result<ScanLoad, RunError> {
    let TenantCycle {
        cfg,
        store,
        tenant,
        opts,
    } = *cycle;
    let loaded = match scan::load_for_tenant(cfg, tenant, &opts.scan, opts.now).await {
        Ok(l) => l,
        Err(ScanError::BadRequest(m)) => return Err(RunError::Request(m)),
        Err(error) => {
            tracing::warn!(tenant = %tenant.name, %error, "scan refused");
            let event = scan_event(tenant, opts, "scan_rejected", error.to_string());
            record(store, event).await?;
            return Ok(ScanLoad::Rejected(error));
        }
    };
    // Say so loudly when the newest scan is not the one processed: a newer file
    // was refused (dated in the future), or the newest is older than the scan
    // the last run processed.
    for error in &loaded.refused {
        tracing::warn!(tenant = %tenant.name, %error, used = %loaded.source_name, "newer scan refused; an older scan is used");
        let detail = format!("{error} (scan used instead: {})", loaded.source_name);
        record(store, scan_event(tenant, opts, "scan_rejected", detail)).await?;
    }
    if let Some(store) = store {
        warn_if_older(store, tenant, &loaded, opts).await?;
    }
    Ok(ScanLoad::Loaded(loaded))
}

/// Records `scan_older_than_processed` when the newest scan (none was named)
/// is older than the scan the tenant's last run processed.
async fn warn_if_older(
    store: &dyn Store,
    tenant: &TenantConfig,
    loaded: &LoadedScan,
    opts: &RunOptions,
) -> Result<(), RunError> {
    if opts.scan.file.is_some() || opts.scan.scanned_at.is_some() {
        return Ok(());
    }
    let Some(last) = store.last_scanned_at(&tenant.name).await? else {
        return Ok(());
    };
    if loaded.scan.scanned_at >= last {
        return Ok(());
    }
    let detail = format!(
        "{}: the newest scan (dated {}) is older than the scan the last run processed (dated {})",
        loaded.source_name,
        loaded.scan.scanned_at.to_rfc3339(),
        last.to_rfc3339()
    );
    tracing::warn!(tenant = %tenant.name, "{detail}");
    let event = scan_event(tenant, opts, "scan_older_than_processed", detail);
    store.record_event(event).await?;
    Ok(())
}

/// Evaluates the rules on the scan (off the async threads) and builds the plan;
/// with a store, the circuit breaker compares with the tenant's previous run.
pub(super) async fn plan(
    cycle: &TenantCycle<'_>,
    rules: &Arc<RuleSet>,
    exceptions: &Exceptions,
    loaded: LoadedScan,
) -> Result<Planned, RunError> {
    let TenantCycle {
        cfg,
        store,
        tenant,
        opts,
    } = *cycle;
    let scan = Arc::new(loaded.scan);
    if opts.keep_scans_until_exit {
        // A reference that is never dropped: the scan outlives the run (see
        // `RunOptions::keep_scans_until_exit`). A one-shot command plans each tenant once.
        std::mem::forget(scan.clone());
    }
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
    let plan = plan::build(
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
    Ok(Planned {
        scan,
        source_name: loaded.source_name,
        sha256: loaded.sha256,
        eval,
        plan,
    })
}
