//! The scan use cases: scan a tenant through Graph (the built-in posture
//! scan), import another scanner's results, and list a tenant's scans. Each
//! writes a scan v1 file into the tenant's scan directory, prunes it to
//! `keep_scans`, and records the scan in history.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::collect::{self, CollectError, Reading};
use crate::config::{Config, TenantConfig};
use crate::graph::{GraphClient, GraphError};
use crate::scan::archive::{self, ScanEntry};
use crate::scan::import::{self, Format, ImportError};
use crate::scan::posture::{self, PostureSettings};
use crate::scan::{Scan, ScanError};
use crate::store::{NewEvent, Store, StoreError};

/// Why a scan could not be taken or written.
#[derive(Debug, thiserror::Error)]
pub enum ScanRunError {
    /// No such tenant in the config.
    #[error("no tenant named {0:?} in the config")]
    UnknownTenant(String),
    /// The tenant cannot be scanned as configured.
    #[error("tenant {tenant:?}: {why}")]
    NotConfigured {
        /// Tenant name.
        tenant: String,
        /// What is missing.
        why: String,
    },
    /// The Graph client could not be built (the credential).
    #[error("tenant {tenant:?}: {error}")]
    Graph {
        /// Tenant name.
        tenant: String,
        /// Why.
        error: GraphError,
    },
    /// The tenant could not be read.
    #[error("tenant {tenant:?}: {error}")]
    Collect {
        /// Tenant name.
        tenant: String,
        /// Why.
        error: CollectError,
    },
    /// The scan could not be written, or the directory not read.
    #[error(transparent)]
    Archive(#[from] ScanError),
    /// The file to import could not be read or converted.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a scan gave: its file, its content in figures, what it cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanReport {
    /// Tenant name.
    pub tenant: String,
    /// The file written.
    pub path: PathBuf,
    /// The scan's time.
    pub scanned_at: DateTime<Utc>,
    /// What wrote it.
    pub scanner: String,
    /// Identities in the scan.
    pub identities: usize,
    /// Each finding's id, title and number of affected identities.
    pub findings: Vec<(String, String, usize)>,
    /// Checks evaluated (built-in scan only).
    pub checks_run: Vec<String>,
    /// Checks not evaluated, with why.
    pub not_evaluated: Vec<(String, String)>,
    /// Graph requests made.
    pub requests: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Older scans deleted by `keep_scans`.
    pub pruned: Vec<PathBuf>,
    /// Items Graph returned that could not be understood.
    pub skipped: Vec<String>,
    /// Imports: identities the file did not describe fully, and how many of
    /// them the tenant's Graph filled in.
    pub incomplete: usize,
    /// How many incomplete identities were enriched from Graph.
    pub enriched: usize,
    /// Why enrichment from Graph did not happen, when it could not.
    pub enrichment: Option<String>,
}

/// The tenant, its scan directory and its Graph settings, or why it cannot be scanned.
fn scannable<'a>(
    cfg: &'a Config,
    name: &str,
) -> Result<(&'a TenantConfig, &'a Path), ScanRunError> {
    let tenant = cfg
        .tenant(name)
        .ok_or_else(|| ScanRunError::UnknownTenant(name.to_string()))?;
    let not = |why: &str| ScanRunError::NotConfigured {
        tenant: name.to_string(),
        why: why.to_string(),
    };
    let dir = tenant
        .source
        .dir
        .as_deref()
        .ok_or_else(|| not("scans are written into source.dir, and this tenant has none"))?;
    Ok((tenant, dir))
}

/// Reads the tenant through Graph: `collect` with the tenant's client.
async fn read(tenant: &TenantConfig) -> Result<Reading, ScanRunError> {
    let graph = tenant
        .graph
        .as_ref()
        .ok_or_else(|| ScanRunError::NotConfigured {
            tenant: tenant.name.clone(),
            why: "scanning reads the tenant through Graph, and this tenant has no [tenant.graph] section".into(),
        })?;
    let client =
        GraphClient::new(&tenant.tenant_id, graph).map_err(|error| ScanRunError::Graph {
            tenant: tenant.name.clone(),
            error,
        })?;
    collect::read_tenant(&client, &tenant.tenant_id, &tenant.name)
        .await
        .map_err(|error| ScanRunError::Collect {
            tenant: tenant.name.clone(),
            error,
        })
}

/// The checks' settings for a tenant.
pub(crate) fn posture_settings(cfg: &Config, tenant: &TenantConfig) -> PostureSettings {
    let g = tenant.source.graph.clone().unwrap_or_default();
    PostureSettings {
        stale_days: g.stale_days,
        privileged_groups: g.privileged_groups,
        protected: cfg.protected.clone(),
        scanner: format!("entra-remediator {} (graph)", env!("CARGO_PKG_VERSION")),
    }
}

/// `scan --tenant T`, and the first step of a cycle whose source has `graph`:
/// reads the tenant, runs the checks, writes the scan, prunes, records it.
/// A tenant whose users cannot be read gets no scan, and the failure is recorded.
pub async fn scan_tenant(
    cfg: &Config,
    store: Option<&dyn Store>,
    name: &str,
    actor: &str,
) -> Result<ScanReport, ScanRunError> {
    let (tenant, dir) = scannable(cfg, name)?;
    let reading = match read(tenant).await {
        Ok(r) => r,
        Err(e) => {
            record(
                store,
                tenant,
                actor,
                "scan_failed",
                json!({ "error": e.to_string() }).to_string(),
            )
            .await?;
            return Err(e);
        }
    };
    for s in &reading.skipped {
        tracing::warn!(tenant = %tenant.name, "scan skipped an item Graph returned: {s}");
    }
    let built = posture::build_scan(reading.data, &posture_settings(cfg, tenant));
    for s in &built.skipped {
        tracing::warn!(tenant = %tenant.name, "scan left out: {s}");
    }
    let mut report = store_scan(tenant, dir, &built.scan)?;
    report.checks_run = built.evaluated.iter().map(|c| c.to_string()).collect();
    report.requests = reading.requests;
    report.duration_ms = reading.duration.as_millis().try_into().unwrap_or(u64::MAX);
    report.skipped = reading.skipped;
    report.skipped.extend(built.skipped);
    record(
        store,
        tenant,
        actor,
        "scan_written",
        detail(&report, "graph"),
    )
    .await?;
    Ok(report)
}

/// Writes a scan into the tenant's directory and prunes it: the report without its costs.
pub(crate) fn store_scan(
    tenant: &TenantConfig,
    dir: &Path,
    scan: &Scan,
) -> Result<ScanReport, ScanRunError> {
    let path = archive::write(dir, &tenant.name, scan)?;
    let pruned = archive::prune(dir, &tenant.name, tenant.source.keep_scans())?;
    Ok(ScanReport {
        tenant: tenant.name.clone(),
        path,
        scanned_at: scan.scanned_at,
        scanner: scan.scanner.clone().unwrap_or_default(),
        identities: scan.identities.len(),
        findings: scan
            .findings
            .iter()
            .map(|f| (f.id.clone(), f.title.clone(), f.affected_identities.len()))
            .collect(),
        checks_run: Vec::new(),
        not_evaluated: scan
            .not_evaluated
            .iter()
            .map(|n| (n.check.clone(), n.reason.clone()))
            .collect(),
        requests: 0,
        duration_ms: 0,
        pruned,
        skipped: Vec::new(),
        incomplete: 0,
        enriched: 0,
        enrichment: None,
    })
}

/// The history detail of a written scan: what, how many, what it cost.
pub(crate) fn detail(r: &ScanReport, how: &str) -> String {
    json!({
        "how": how,
        "file": r.path.display().to_string(),
        "scanned_at": r.scanned_at.to_rfc3339(),
        "scanner": r.scanner,
        "identities": r.identities,
        "findings": r.findings.iter().map(|(id, _, n)| json!({"id": id, "affected": n})).collect::<Vec<_>>(),
        "checks_run": r.checks_run,
        "not_evaluated": r.not_evaluated.iter().map(|(c, why)| json!({"check": c, "reason": why})).collect::<Vec<_>>(),
        "requests": r.requests,
        "duration_ms": r.duration_ms,
        "pruned": r.pruned.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "skipped_items": r.skipped.len(),
        "incomplete_identities": r.incomplete,
        "enriched_identities": r.enriched,
        "enrichment": r.enrichment,
    })
    .to_string()
}

/// Records a scan event for the tenant, when there is a store.
pub(crate) async fn record(
    store: Option<&dyn Store>,
    tenant: &TenantConfig,
    actor: &str,
    kind: &str,
    detail: String,
) -> Result<(), StoreError> {
    if let Some(store) = store {
        store
            .record_event(NewEvent {
                tenant: Some(tenant.name.clone()),
                kind: kind.into(),
                actor: actor.to_string(),
                detail,
                ..NewEvent::default()
            })
            .await?;
    }
    Ok(())
}

/// `scan import --from F PATH --tenant T`: converts another scanner's file
/// (refused whole, naming the file and place, if any part cannot be read),
/// enriches the identities it does not describe fully from Graph when the
/// tenant has a `[tenant.graph]` section (otherwise they carry only what the
/// file says), writes, prunes and records it like a scan.
pub async fn import_scan(
    cfg: &Config,
    store: Option<&dyn Store>,
    name: &str,
    format: Format,
    path: &Path,
    actor: &str,
) -> Result<ScanReport, ScanRunError> {
    let (tenant, dir) = scannable(cfg, name)?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.is_file()
        && meta.len() > cfg.max_scan_bytes
    {
        return Err(ScanError::TooLarge {
            source_name: path.display().to_string(),
            size: meta.len(),
            limit: cfg.max_scan_bytes,
        }
        .into());
    }
    let settings = posture_settings(cfg, tenant);
    let imported = import::import_with(format, path, &tenant.tenant_id, &tenant.name, &settings)?;
    let mut scan = imported.scan;
    let (mut enriched, mut enrichment, mut requests) = (0, None, 0);
    if !imported.incomplete.is_empty() {
        if tenant.graph.is_none() {
            enrichment = Some("the tenant has no [tenant.graph] section: identities carry only what the file says".to_string());
        } else {
            match read(tenant).await {
                Ok(reading) => {
                    requests = reading.requests;
                    let from = posture::build_scan(reading.data, &settings);
                    enriched = import::enrich(&mut scan, &from.scan, &imported.incomplete);
                }
                Err(e) => {
                    enrichment = Some(format!("not enriched from Graph: {e}"));
                }
            }
        }
    }
    let mut report = store_scan(tenant, dir, &scan)?;
    report.requests = requests;
    report.incomplete = imported.incomplete.len();
    report.enriched = enriched;
    report.enrichment = enrichment;
    let how = format!("import:{format}");
    record(store, tenant, actor, "scan_written", detail(&report, &how)).await?;
    Ok(report)
}

/// `scans list --tenant T`: every scan in the tenant's directory, newest first.
pub fn list_scans(cfg: &Config, name: &str) -> Result<Vec<ScanEntry>, ScanRunError> {
    let (_, dir) = scannable(cfg, name)?;
    Ok(archive::list(dir)?)
}

/// The tenant's scans, newest first, as [`list_scans`] gives them, with each
/// file read only once while its size and modification time stay the same
/// (the console's scan pickers ask on every page).
pub fn list_scans_remembered(
    cfg: &Config,
    name: &str,
    memo: &ScanListMemo,
) -> Result<Vec<ScanEntry>, ScanRunError> {
    let (_, dir) = scannable(cfg, name)?;
    let mut seen = memo
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let listed = archive::list_with(dir, |path| {
        let stamp = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        match (seen.get(&path), stamp) {
            (Some((was, entry)), Some(now)) if *was == now => entry.clone(),
            (_, stamp) => {
                let entry = archive::summarise(path.clone());
                if let Some(now) = stamp {
                    seen.insert(path, (now, entry.clone()));
                }
                entry
            }
        }
    })?;
    // Forget files that are gone (pruned by keep_scans).
    seen.retain(|p, _| p.exists());
    Ok(listed)
}

/// A file's size and modification time: while both stay, its summary stands.
type Stamp = (u64, Option<std::time::SystemTime>);

/// Scan summaries already read, by file, with the size and modification time
/// they were read at.
#[derive(Debug, Default)]
pub struct ScanListMemo(
    std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, (Stamp, ScanEntry)>>,
);
