//! Where scans come from: a directory (newest `scanned_at` wins) or an HTTP(S) URL,
//! and the checks that refuse foreign or stale scans.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Scan, ScanError, digest};
use crate::config::{Config, TenantConfig};

/// What the user asked for: the newest scan, a given file, or a given `scanned_at`.
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// Use this file instead of the tenant's source.
    pub file: Option<PathBuf>,
    /// Pick the scan with this `scanned_at` from the tenant's directory.
    pub scanned_at: Option<DateTime<Utc>>,
}

/// A scan that passed every check, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedScan {
    /// The parsed scan.
    pub scan: Scan,
    /// File path or URL.
    pub source_name: String,
    /// SHA-256 of the bytes, to recognise a scan already processed.
    pub sha256: String,
    /// Newer files of the scan directory that were refused (dated in the
    /// future), so that an older scan was used: each is reported.
    pub refused: Vec<ScanError>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    scanned_at: Option<String>,
}

/// The times a scan's date is judged by: now, and the latest date accepted.
struct Dates {
    now: DateTime<Utc>,
    /// `max_clock_skew`, allowed into the future.
    skew: Duration,
    /// `now` plus the skew.
    latest: DateTime<Utc>,
}

impl Dates {
    fn new(now: DateTime<Utc>, skew: Duration) -> Dates {
        let latest = chrono::Duration::from_std(skew)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Dates { now, skew, latest }
    }

    /// The refusal of a scan dated after `latest`.
    fn future(&self, source_name: String, scanned_at: DateTime<Utc>) -> ScanError {
        ScanError::FutureDated {
            source_name,
            scanned_at,
            now: self.now,
            skew: humantime::format_duration(self.skew).to_string(),
        }
    }
}

/// Loads the scan for a tenant as requested, refusing foreign and stale scans.
///
/// `now` is passed in so that age checks are testable.
pub async fn load_for_tenant(
    cfg: &Config,
    tenant: &TenantConfig,
    req: &ScanRequest,
    now: DateTime<Utc>,
) -> Result<LoadedScan, ScanError> {
    let dates = Dates::new(now, cfg.max_clock_skew.0);
    let (bytes, source_name, refused) =
        read_source(tenant, req, cfg.max_scan_bytes, &dates).await?;
    let sha256 = digest(&bytes);
    let scan = Scan::from_slice(&bytes, &source_name)?;
    drop(bytes);
    if !scan.tenant_id.0.eq_ignore_ascii_case(&tenant.tenant_id) {
        return Err(ScanError::WrongTenant {
            source_name,
            tenant: tenant.name.clone(),
            expected: tenant.tenant_id.clone(),
            found: scan.tenant_id.0.to_string(),
        });
    }
    if scan.scanned_at > dates.latest {
        return Err(dates.future(source_name, scan.scanned_at));
    }
    let max_age = tenant.max_scan_age.unwrap_or(cfg.max_scan_age).0;
    let age = now.signed_duration_since(scan.scanned_at);
    if age.to_std().is_ok_and(|a| a > max_age) {
        return Err(ScanError::TooOld {
            source_name,
            scanned_at: scan.scanned_at,
            max_age: humantime::format_duration(max_age).to_string(),
        });
    }
    Ok(LoadedScan {
        scan,
        source_name,
        sha256,
        refused,
    })
}

/// The requested scan's bytes and name (a `--scan` file, the newest file of the
/// tenant's directory, or its URL), with the newer directory files refused as
/// dated in the future.
async fn read_source(
    tenant: &TenantConfig,
    req: &ScanRequest,
    limit: u64,
    dates: &Dates,
) -> Result<(Vec<u8>, String, Vec<ScanError>), ScanError> {
    if let Some(file) = &req.file {
        return Ok((
            read_file(file, limit)?,
            file.display().to_string(),
            Vec::new(),
        ));
    }
    match (&tenant.source.dir, &tenant.source.url) {
        (Some(dir), _) => {
            let (file, skipped) = pick_in_dir(dir, req.scanned_at, dates.latest)?;
            let mut refused: Vec<ScanError> = skipped
                .into_iter()
                .map(|(at, p)| dates.future(p.display().to_string(), at))
                .collect();
            let Some(file) = file else {
                // Every candidate is dated in the future: refuse the newest.
                return Err(refused.swap_remove(0));
            };
            Ok((
                read_file(&file, limit)?,
                file.display().to_string(),
                refused,
            ))
        }
        (None, None) => Err(ScanError::NotFound(format!(
            "tenant {:?} has no scan source",
            tenant.name
        ))),
        (None, Some(url)) => {
            if req.scanned_at.is_some() {
                return Err(ScanError::BadRequest(format!(
                    "tenant {:?} reads its scan from a URL; --scanned-at needs a directory source (use --scan FILE)",
                    tenant.name
                )));
            }
            let bytes = fetch(url, tenant.source.token_file.as_deref(), limit).await?;
            Ok((bytes, url.clone(), Vec::new()))
        }
    }
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> ScanError {
    ScanError::Read {
        source_name: path.display().to_string(),
        message: e.to_string(),
    }
}

fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, ScanError> {
    let f = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let len = f.metadata().map_err(|e| read_err(path, e))?.len();
    if len > limit {
        return Err(ScanError::TooLarge {
            source_name: path.display().to_string(),
            size: len,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // take() guards against a file that grows while we read it.
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_err(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(ScanError::TooLarge {
            source_name: path.display().to_string(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// A scan file dated later than allowed, passed over when choosing.
type Skipped = (DateTime<Utc>, PathBuf);

/// Chooses the file with the newest (or the requested) `scanned_at` in a
/// directory, passing over files dated after `latest` (returned newest first).
/// `None` with a non-empty list: every candidate was dated in the future.
fn pick_in_dir(
    dir: &Path,
    wanted: Option<DateTime<Utc>>,
    latest: DateTime<Utc>,
) -> Result<(Option<PathBuf>, Vec<Skipped>), ScanError> {
    let entries = std::fs::read_dir(dir).map_err(|e| read_err(dir, e))?;
    let mut best: Option<(DateTime<Utc>, PathBuf)> = None;
    let mut skipped: Vec<Skipped> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| read_err(dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") || !path.is_file() {
            continue;
        }
        let f = std::fs::File::open(&path).map_err(|e| read_err(&path, e))?;
        let header: Header =
            serde_json::from_reader(std::io::BufReader::new(f)).map_err(|e| ScanError::Json {
                source_name: path.display().to_string(),
                line: e.line(),
                column: e.column(),
                json_path: ".".into(),
                message: format!(
                    "{} (a malformed file in the scan directory blocks choosing the newest scan)",
                    super::clip_echo(&crate::text::strip_serde_position(&e.to_string()))
                ),
            })?;
        let at = header
            .scanned_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| ScanError::Invalid {
                source_name: path.display().to_string(),
                json_path: "scanned_at".into(),
                message: "missing or not an RFC 3339 time".into(),
            })?;
        if wanted.is_some_and(|w| w != at) {
            continue;
        }
        if at > latest {
            skipped.push((at, path));
            continue;
        }
        if best.as_ref().is_none_or(|(b, _)| at > *b) {
            best = Some((at, path));
        }
    }
    skipped.sort_by(|a, b| b.cmp(a));
    if best.is_none() && !skipped.is_empty() {
        return Ok((None, skipped));
    }
    best.map(|(_, p)| (Some(p), skipped))
        .ok_or_else(|| match wanted {
            Some(w) => ScanError::BadRequest(format!(
                "no scan in {} has scanned_at {} (--scanned-at must match a scan's time exactly)",
                dir.display(),
                w.to_rfc3339()
            )),
            None => ScanError::NotFound(format!("no scan files (*.json) in {}", dir.display())),
        })
}

async fn fetch(url: &str, token_file: Option<&Path>, limit: u64) -> Result<Vec<u8>, ScanError> {
    let err = |m: String| ScanError::Read {
        source_name: url.to_string(),
        message: m,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut req = client.get(url);
    if let Some(tf) = token_file {
        let token = std::fs::read_to_string(tf)
            .map_err(|e| err(format!("cannot read token file {}: {e}", tf.display())))?;
        req = req.bearer_auth(token.trim());
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| err(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP status {}", resp.status())));
    }
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(ScanError::TooLarge {
            source_name: url.to_string(),
            size: len,
            limit,
        });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| err(e.without_url().to_string()))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > limit {
            return Err(ScanError::TooLarge {
                source_name: url.to_string(),
                size: bytes.len() as u64,
                limit,
            });
        }
    }
    Ok(bytes)
}
