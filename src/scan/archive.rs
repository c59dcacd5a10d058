//! A tenant's scan directory as an archive: scans written atomically under a
//! name carrying their `scanned_at`, the oldest ones pruned past `keep_scans`,
//! and every scan listable by its timestamp (pick a tenant, then a scan).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Scan, ScanError};

/// The timestamp format in written scans' names (UTC, milliseconds).
const NAME_TIME: &str = "%Y%m%dT%H%M%S%.3fZ";

/// `TENANT-scan-TIME.json`: the name a written scan gets.
pub fn file_name(tenant: &str, scanned_at: DateTime<Utc>) -> String {
    format!("{tenant}-scan-{}.json", scanned_at.format(NAME_TIME))
}

/// The `scanned_at` in the name of a scan this tenant's archive wrote, if it is one.
fn written_at(tenant: &str, name: &str) -> Option<DateTime<Utc>> {
    let time = name
        .strip_prefix(tenant)?
        .strip_prefix("-scan-")?
        .strip_suffix(".json")?;
    NaiveDateTime::parse_from_str(time, NAME_TIME)
        .ok()
        .map(|t| t.and_utc())
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ScanError {
    ScanError::Read {
        source_name: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `scan` into `dir` (created if missing) atomically: a temporary file
/// in the same directory, flushed to disk, then renamed, so that a reader
/// never sees half a scan. Refuses to overwrite a scan of the same time.
pub fn write(dir: &Path, tenant: &str, scan: &Scan) -> Result<PathBuf, ScanError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let path = dir.join(file_name(tenant, scan.scanned_at));
    if path.exists() {
        return Err(io_err(&path, "a scan with this time exists already"));
    }
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name(tenant, scan.scanned_at),
        std::process::id()
    ));
    let written = (|| {
        // Streamed: a 100k-identity scan is never held twice in memory.
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut out, scan)?;
        out.flush()?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&path, e));
    }
    Ok(path)
}

/// Deletes the scans this tenant's archive wrote beyond the newest `keep`
/// (files of other names are never touched); returns the deleted paths.
pub fn prune(dir: &Path, tenant: &str, keep: u32) -> Result<Vec<PathBuf>, ScanError> {
    let mut ours: Vec<(DateTime<Utc>, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        let at = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| written_at(tenant, n));
        if let Some(at) = at {
            ours.push((at, path));
        }
    }
    ours.sort_by_key(|o| std::cmp::Reverse(o.0));
    let mut deleted = Vec::new();
    for (_, path) in ours.into_iter().skip(keep as usize) {
        std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        deleted.push(path);
    }
    Ok(deleted)
}

/// One scan file of a directory, summarised for choosing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanEntry {
    /// The scan's `scanned_at`, when the file could be read.
    pub scanned_at: Option<DateTime<Utc>>,
    /// The file.
    pub path: PathBuf,
    /// The scan's `scanner`, if it says.
    pub scanner: Option<String>,
    /// Number of identities.
    pub identities: usize,
    /// Number of findings.
    pub findings: usize,
    /// Number of checks not evaluated.
    pub not_evaluated: usize,
    /// Why the file could not be read as a scan, if so.
    pub error: Option<String>,
}

/// The parts of a scan a listing shows, read without keeping identities.
#[derive(Deserialize)]
struct Summary {
    scanned_at: String,
    #[serde(default)]
    scanner: Option<String>,
    #[serde(default)]
    identities: Vec<IgnoredAny>,
    #[serde(default)]
    findings: Vec<IgnoredAny>,
    #[serde(default)]
    not_evaluated: Vec<IgnoredAny>,
}

/// Every `*.json` file of `dir`, newest `scanned_at` first (unreadable files last, with why).
pub fn list(dir: &Path) -> Result<Vec<ScanEntry>, ScanError> {
    list_with(dir, summarise)
}

/// Like [`list`], with each file summarised by `summary` (which may remember
/// files it has read: reading one means parsing all of it).
pub fn list_with(
    dir: &Path,
    mut summary: impl FnMut(PathBuf) -> ScanEntry,
) -> Result<Vec<ScanEntry>, ScanError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") || !path.is_file() {
            continue;
        }
        out.push(summary(path));
    }
    out.sort_by(|a, b| {
        b.scanned_at
            .cmp(&a.scanned_at)
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(out)
}

/// Reads one scan file's summary (the whole file is parsed to count its parts).
pub fn summarise(path: PathBuf) -> ScanEntry {
    let mut entry = ScanEntry {
        scanned_at: None,
        path,
        scanner: None,
        identities: 0,
        findings: 0,
        not_evaluated: 0,
        error: None,
    };
    let read = std::fs::File::open(&entry.path)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            serde_json::from_reader::<_, Summary>(std::io::BufReader::new(f))
                .map_err(|e| e.to_string())
        });
    match read {
        Ok(s) => {
            entry.scanned_at = DateTime::parse_from_rfc3339(&s.scanned_at)
                .ok()
                .map(|t| t.with_timezone(&Utc));
            if entry.scanned_at.is_none() {
                entry.error = Some(format!(
                    "scanned_at {:?} is not an RFC 3339 time",
                    s.scanned_at
                ));
            }
            entry.scanner = s.scanner;
            entry.identities = s.identities.len();
            entry.findings = s.findings.len();
            entry.not_evaluated = s.not_evaluated.len();
        }
        Err(e) => entry.error = Some(crate::text::clip(&e, 200)),
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_at(t: &str) -> Scan {
        Scan::from_slice(
            format!(
                r#"{{"schema_version":1,"tenant_id":"11111111-2222-3333-4444-555555555555","tenant_name":"t","scanned_at":"{t}","identities":[],"findings":[]}}"#
            )
            .as_bytes(),
            "x",
        )
        .unwrap()
    }

    #[test]
    fn written_scans_are_named_by_time_listed_newest_first_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hand-made.json"), b"{ not json").unwrap();
        let times = [
            "2026-11-01T00:00:00Z",
            "2026-11-03T00:00:00.5Z",
            "2026-11-02T00:00:00Z",
        ];
        for t in times {
            write(dir.path(), "contoso", &scan_at(t)).unwrap();
        }
        assert!(
            dir.path()
                .join("contoso-scan-20261103T000000.500Z.json")
                .is_file()
        );
        let same = write(dir.path(), "contoso", &scan_at(times[0])).unwrap_err();
        assert!(same.to_string().contains("exists already"), "{same}");
        let listed = list(dir.path()).unwrap();
        let at: Vec<_> = listed
            .iter()
            .map(|e| e.scanned_at.map(|t| t.to_rfc3339()))
            .collect();
        assert_eq!(
            at,
            [
                Some("2026-11-03T00:00:00.500+00:00".to_string()),
                Some("2026-11-02T00:00:00+00:00".to_string()),
                Some("2026-11-01T00:00:00+00:00".to_string()),
                None
            ]
        );
        assert!(listed[3].error.is_some());
        let deleted = prune(dir.path(), "contoso", 2).unwrap();
        assert_eq!(
            deleted,
            [dir.path().join("contoso-scan-20261101T000000.000Z.json")]
        );
        // The hand-made file and the two newest stay; other tenants' names are not ours.
        assert_eq!(list(dir.path()).unwrap().len(), 3);
        assert!(prune(dir.path(), "contos", 1).unwrap().is_empty());
        // Nothing temporary is left behind.
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp"))
        );
    }
}
