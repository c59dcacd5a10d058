//! A loaded scan with the indexes the console's pages read (who a finding
//! affects, an identity's findings, look-up by id or UPN, the risk ranking),
//! and a small cache so that a 100,000-identity scan is parsed once, not on
//! every page.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::config::{Config, TenantConfig};
use crate::scan::posture::is_highly_privileged;
use crate::scan::{
    AssignmentType, Identity, LoadedScan, ScanError, ScanRequest, Severity, load_for_tenant,
};

/// How the console ranks identities, shown on the dashboard beside the top 10.
pub const RANKING: &str = "Riskiest first: by the scanner's risk score (none counts lowest), \
then the number of active highly privileged role assignments, then the findings weighted by \
severity (critical 8, high 4, medium 2, low 1, info 0), then enabled accounts without MFA \
registered; ties by UPN.";

/// A scan that passed the same checks as a run, with its indexes.
#[derive(Debug)]
pub struct ScanView {
    /// The configured tenant name (the one runs are recorded under).
    pub tenant: String,
    /// The scan, where it came from and its hash.
    pub loaded: LoadedScan,
    /// Finding id -> indices of the identities it affects (ascending, distinct).
    pub by_finding: HashMap<String, Vec<u32>>,
    /// Identity index -> indices of its findings (ascending).
    pub findings_of: Vec<Vec<u32>>,
    /// Object id and UPN, both lowercase -> identity index.
    pub by_id: HashMap<String, u32>,
    /// Identity indices, riskiest first (see [`RANKING`]).
    pub ranked: Vec<u32>,
    /// Identity index -> its position in `ranked`, to sort by risk in O(1).
    pub rank_of: Vec<u32>,
}

/// The weight of a finding's severity in the ranking (see [`RANKING`]).
fn severity_weight(s: Severity) -> u32 {
    match s {
        Severity::Critical => 8,
        Severity::High => 4,
        Severity::Medium => 2,
        Severity::Low => 1,
        Severity::Info => 0,
    }
}

/// The number of active assignments of highly privileged roles an identity holds.
pub fn privileged_roles(ident: &Identity) -> usize {
    ident
        .roles
        .iter()
        .filter(|r| {
            r.assignment_type == AssignmentType::Active
                && is_highly_privileged(&r.role_definition_id.0)
        })
        .count()
}

/// An index as `u32` (scans are limited far below 4 billion entries by `max_scan_bytes`).
fn ix(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl ScanView {
    /// Builds the indexes of a loaded scan (CPU work: call it off the async threads
    /// for big scans).
    pub fn new(tenant: &str, loaded: LoadedScan) -> ScanView {
        let scan = &loaded.scan;
        let n = scan.identities.len();
        let mut by_id: HashMap<String, u32> = HashMap::with_capacity(n * 2);
        for (i, ident) in scan.identities.iter().enumerate() {
            by_id.insert(ident.id.0.to_ascii_lowercase(), ix(i));
        }
        for (i, ident) in scan.identities.iter().enumerate() {
            if let Some(upn) = &ident.user_principal_name {
                // An object id always wins over a UPN that happens to equal one.
                by_id.entry(upn.to_lowercase()).or_insert(ix(i));
            }
        }
        let mut by_finding = HashMap::with_capacity(scan.findings.len());
        let mut findings_of: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (fi, f) in scan.findings.iter().enumerate() {
            let mut who: Vec<u32> = f
                .affected_identities
                .iter()
                .filter_map(|g| by_id.get(&g.0.to_ascii_lowercase()).copied())
                .collect();
            who.sort_unstable();
            who.dedup();
            for &i in &who {
                if let Some(list) = findings_of.get_mut(i as usize) {
                    list.push(ix(fi));
                }
            }
            by_finding.insert(f.id.clone(), who);
        }
        let ranked = rank(&scan.identities, &scan.findings, &findings_of);
        let mut rank_of = vec![0u32; n];
        for (pos, &i) in ranked.iter().enumerate() {
            if let Some(r) = rank_of.get_mut(i as usize) {
                *r = ix(pos);
            }
        }
        ScanView {
            tenant: tenant.to_string(),
            loaded,
            by_finding,
            findings_of,
            by_id,
            ranked,
            rank_of,
        }
    }

    /// The identity at an index.
    pub fn identity(&self, i: u32) -> Option<&Identity> {
        self.loaded.scan.identities.get(i as usize)
    }

    /// The index of the identity with this object id or UPN (any case).
    pub fn find(&self, id_or_upn: &str) -> Option<u32> {
        self.by_id.get(&id_or_upn.trim().to_lowercase()).copied()
    }
}

/// Identity indices in [`RANKING`] order.
fn rank(
    identities: &[Identity],
    findings: &[crate::scan::Finding],
    findings_of: &[Vec<u32>],
) -> Vec<u32> {
    // (risk, privileged, weighted findings, enabled without MFA): larger is riskier.
    let keys: Vec<(i16, usize, u32, bool)> = identities
        .iter()
        .zip(findings_of)
        .map(|(ident, fs)| {
            let weight = fs
                .iter()
                .filter_map(|&f| findings.get(f as usize))
                .map(|f| severity_weight(f.severity))
                .sum();
            (
                ident.risk_score.map_or(-1, i16::from),
                privileged_roles(ident),
                weight,
                ident.is_enabled() && ident.mfa_registered == Some(false),
            )
        })
        .collect();
    let mut order: Vec<u32> = (0..identities.len()).map(ix).collect();
    order.sort_by(|&a, &b| {
        let (ka, kb) = (&keys[a as usize], &keys[b as usize]);
        kb.cmp(ka).then_with(|| {
            let la = identities[a as usize]
                .label()
                .bytes()
                .map(|c| c.to_ascii_lowercase());
            let lb = identities[b as usize]
                .label()
                .bytes()
                .map(|c| c.to_ascii_lowercase());
            la.cmp(lb).then(a.cmp(&b))
        })
    });
    order
}

/// What a cached view is for: the tenant, the scan asked for, and the state of
/// its source (so that a new or changed scan file is a new key).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    tenant: String,
    scanned_at: Option<DateTime<Utc>>,
    source: u64,
}

/// One cached view, loaded at most once even when asked for concurrently.
type Slot = Arc<OnceCell<Arc<ScanView>>>;

/// The most recently used scan views, loaded at most once each.
#[derive(Debug)]
pub struct ScanCache {
    capacity: usize,
    /// Least recently used first.
    slots: Mutex<Vec<(Key, Slot)>>,
    /// The scan pickers' summaries, each file read once.
    listing: Arc<super::scan::ScanListMemo>,
}

impl ScanCache {
    /// A cache keeping the `capacity` most recently used views (at least one).
    pub fn new(capacity: usize) -> Self {
        ScanCache {
            capacity: capacity.max(1),
            listing: Arc::default(),
            slots: Mutex::new(Vec::new()),
        }
    }

    /// The tenant's scans for a picker, newest first; each file is read once
    /// while unchanged (off the async threads when one must be read).
    pub async fn list(
        &self,
        cfg: &Arc<Config>,
        tenant: &str,
    ) -> Result<Vec<crate::scan::archive::ScanEntry>, super::scan::ScanRunError> {
        let (cfg, name, memo) = (cfg.clone(), tenant.to_string(), self.listing.clone());
        tokio::task::spawn_blocking(move || super::scan::list_scans_remembered(&cfg, &name, &memo))
            .await
            .map_err(|e| {
                super::scan::ScanRunError::Archive(ScanError::Read {
                    source_name: format!("the scans of tenant {tenant:?}"),
                    message: format!("listing them stopped: {e}"),
                })
            })?
    }

    /// The view of the tenant's scan with this `scanned_at` (newest when None),
    /// loaded at most once, with the same checks as a run (tenant id, age,
    /// dated in the future). A new or changed file in the scan directory is
    /// noticed on the next call; a URL source is fetched again after a minute.
    pub async fn get(
        &self,
        cfg: &Config,
        tenant: &str,
        scanned_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Arc<ScanView>, ScanError> {
        let t = cfg.tenant(tenant).ok_or_else(|| {
            ScanError::NotFound(format!("no tenant named {tenant:?} in the config"))
        })?;
        let key = Key {
            tenant: tenant.to_string(),
            scanned_at,
            source: source_state(t, now)?,
        };
        let slot = self.slot(&key);
        let loaded = slot
            .get_or_try_init(|| load(cfg.clone(), t.clone(), scanned_at, now))
            .await;
        match loaded {
            Ok(view) => {
                self.trim();
                check_age(cfg, t, view, now)?;
                Ok(Arc::clone(view))
            }
            Err(e) => {
                self.forget_failed(&key);
                Err(e)
            }
        }
    }

    /// The slot for a key, made the most recently used (created if new; the
    /// cache is trimmed to capacity once a load succeeds, so that a failing
    /// load pushes out nothing).
    fn slot(&self, key: &Key) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match slots.iter().position(|(k, _)| k == key) {
            Some(pos) => slots.remove(pos).1,
            None => Arc::new(OnceCell::new()),
        };
        slots.push((key.clone(), Arc::clone(&slot)));
        slot
    }

    /// Drops the least recently used views beyond capacity.
    fn trim(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let excess = slots.len().saturating_sub(self.capacity);
        slots.drain(..excess);
    }

    /// Drops a slot whose load failed, so that it does not push out a good view.
    fn forget_failed(&self, key: &Key) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|(k, s)| k != key || s.initialized());
    }

    /// How many views are cached (loaded or loading).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loads and indexes the scan on a blocking thread (parsing 100,000 identities
/// takes hundreds of milliseconds, which must not stall the async threads).
async fn load(
    cfg: Config,
    tenant: TenantConfig,
    scanned_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Arc<ScanView>, ScanError> {
    let handle = tokio::runtime::Handle::current();
    let name = tenant.name.clone();
    tokio::task::spawn_blocking(move || {
        let req = ScanRequest {
            file: None,
            scanned_at,
        };
        let loaded = handle.block_on(load_for_tenant(&cfg, &tenant, &req, now))?;
        Ok(Arc::new(ScanView::new(&tenant.name, loaded)))
    })
    .await
    .map_err(|e| ScanError::Read {
        source_name: format!("tenant {name:?}'s scan"),
        message: format!("loading stopped: {e}"),
    })?
}

/// A cached view is refused once it is older than the tenant's `max_scan_age`,
/// as a run would refuse it.
fn check_age(
    cfg: &Config,
    t: &TenantConfig,
    view: &ScanView,
    now: DateTime<Utc>,
) -> Result<(), ScanError> {
    let max_age = t.max_scan_age.unwrap_or(cfg.max_scan_age).0;
    let scanned_at = view.loaded.scan.scanned_at;
    if now
        .signed_duration_since(scanned_at)
        .to_std()
        .is_ok_and(|a| a > max_age)
    {
        return Err(ScanError::TooOld {
            source_name: view.loaded.source_name.clone(),
            scanned_at,
            max_age: humantime::format_duration(max_age).to_string(),
        });
    }
    Ok(())
}

/// A fingerprint of the tenant's scan source: for a directory, the name, size
/// and modification time of every `*.json` file (cheap: no file is read); for
/// a URL, the URL and the current minute.
fn source_state(t: &TenantConfig, now: DateTime<Utc>) -> Result<u64, ScanError> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.tenant_id.hash(&mut h);
    if let Some(dir) = &t.source.dir {
        let err = |e: std::io::Error| ScanError::Read {
            source_name: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let path = entry.map_err(err)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            files.push((path, meta.len(), meta.modified().ok()));
        }
        files.sort();
        dir.hash(&mut h);
        files.hash(&mut h);
    } else if let Some(url) = &t.source.url {
        url.hash(&mut h);
        now.timestamp().div_euclid(60).hash(&mut h);
    }
    Ok(h.finish())
}
