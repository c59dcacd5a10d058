//! Importers: another scanner's output (Maester, ScubaGear, Zero Trust
//! Assessment) converted into a scan v1 ([`Scan`]).
//!
//! Pure converters: they read the file (or the ZTA export folder), refuse a
//! file for another tenant, and never guess what the file does not say (an
//! unknown UPN, user type, enabled flag or sign-in stays absent; such
//! identities are listed in [`Imported::incomplete`] for the caller to enrich
//! from Graph). Every error names the file and the place (line:column and JSON
//! path, or the JSON path and the line of the markdown in it).

mod enrich;
mod links;
mod maester;
mod scubagear;
mod zta;

pub use enrich::enrich;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::posture::PostureSettings;
use super::{Guid, Identity, LastSignIn, Scan, Severity};
use crate::config::Protected;
use crate::text::{clip, is_guid, strip_serde_position};

/// Which scanner wrote the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Maester's results JSON (`TestResults-*.json`, `maester-results.json`).
    Maester,
    /// ScubaGear's `ScubaResults_*.json`.
    ScubaGear,
    /// A Zero Trust Assessment report folder (with `zt-export/`).
    Zta,
}

impl Format {
    /// Every format, in the order the command line lists them.
    pub const ALL: [Format; 3] = [Format::Maester, Format::ScubaGear, Format::Zta];

    /// The name on the command line (`--from maester|scubagear|zta`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Maester => "maester",
            Format::ScubaGear => "scubagear",
            Format::Zta => "zta",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown import format {:?}: expected maester, scubagear or zta",
                    clip(s, 80)
                )
            })
    }
}

/// What an import gives: the scan, and what the caller needs to enrich it.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The converted scan (valid scan v1: it loads with [`Scan::from_slice`]).
    pub scan: Scan,
    /// Ids of identities the file does not describe fully (UPN, user type,
    /// enabled or last sign-in unknown), in the order of `scan.identities`.
    pub incomplete: Vec<String>,
}

/// Why a file could not be imported; each names the file and the place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImportError {
    /// The file or folder could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The file or folder.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("{file}:{line}:{column}: at {json_path}: {message}")]
    Json {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// JSON path of the offending value, such as `Tests[3].Result`.
        json_path: String,
        /// What is wrong.
        message: String,
    },
    /// Well-formed JSON with a value that cannot be converted.
    #[error("{file}: at {place}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// JSON path, and the markdown line when the value is markdown.
        place: String,
        /// What is wrong.
        message: String,
    },
    /// The file is for another tenant than the one configured.
    #[error(
        "{file}: the file is for tenant {found}, but tenant {tenant:?} is configured as {expected}"
    )]
    WrongTenant {
        /// The file.
        file: String,
        /// Configured tenant name.
        tenant: String,
        /// Configured tenant id.
        expected: String,
        /// The file's tenant id.
        found: String,
    },
}

/// Longest value echoed in an error (one value of a hostile file can be huge).
const ECHO_LIMIT: usize = 200;

/// Converts `path` (a file, or for ZTA the report or export folder) into a scan
/// of tenant `tenant_id`, with the built-in checks' default settings for ZTA.
pub fn import(
    format: Format,
    path: &Path,
    tenant_id: &str,
    tenant_name: &str,
) -> Result<Imported, ImportError> {
    let settings = PostureSettings {
        stale_days: DEFAULT_STALE_DAYS,
        privileged_groups: Vec::new(),
        protected: Protected::default(),
        scanner: String::new(),
    };
    import_with(format, path, tenant_id, tenant_name, &settings)
}

/// Stale period the built-in checks use on a ZTA export when the caller gives none.
pub const DEFAULT_STALE_DAYS: u32 = 90;

/// As [`import`], with the built-in checks' settings (stale days, privileged
/// groups, protected identities) for a ZTA export; `settings.scanner` is
/// replaced by the import's own label.
pub fn import_with(
    format: Format,
    path: &Path,
    tenant_id: &str,
    tenant_name: &str,
    settings: &PostureSettings,
) -> Result<Imported, ImportError> {
    let want = Tenant {
        id: tenant_id,
        name: tenant_name,
    };
    let scan = match format {
        Format::Maester => maester::convert(&read(path)?, &file_name(path), &want)?,
        Format::ScubaGear => scubagear::convert(&read(path)?, &file_name(path), &want)?,
        Format::Zta => zta::convert(path, &want, settings)?,
    };
    let incomplete = scan
        .identities
        .iter()
        .filter(|i| is_incomplete(i))
        .map(|i| i.id.0.to_string())
        .collect();
    Ok(Imported { scan, incomplete })
}

/// The configured tenant a file must belong to.
pub(crate) struct Tenant<'a> {
    id: &'a str,
    name: &'a str,
}

impl Tenant<'_> {
    /// Refuses a file whose tenant id is not a GUID or not the configured one.
    fn check(&self, found: &str, file: &str, place: &str) -> Result<Guid, ImportError> {
        if !is_guid(found) {
            return Err(invalid(
                file,
                place,
                format!(
                    "tenant id {:?} is not a GUID (was the scanner connected to the tenant?)",
                    clip(found, ECHO_LIMIT)
                ),
            ));
        }
        if !found.eq_ignore_ascii_case(self.id) {
            return Err(ImportError::WrongTenant {
                file: file.to_string(),
                tenant: self.name.to_string(),
                expected: self.id.to_string(),
                found: found.to_string(),
            });
        }
        Ok(Guid::from(found.to_ascii_lowercase()))
    }

    /// The file's tenant name when it gives one, else the configured name.
    fn name_or(&self, found: Option<&str>) -> String {
        match found.map(str::trim) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => self.name.to_string(),
        }
    }
}

/// True when the scan leaves out the UPN, user type, enabled flag or last sign-in.
fn is_incomplete(i: &Identity) -> bool {
    i.user_principal_name.is_none()
        || i.user_type.is_none()
        || i.account_enabled.is_none()
        || i.last_sign_in == LastSignIn::Unknown
}

/// The path as errors name it.
fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The file's name alone, for the scan's `scanner` label.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| display(path), |n| n.to_string_lossy().into_owned())
}

fn read(path: &Path) -> Result<Vec<u8>, ImportError> {
    std::fs::read(path).map_err(|e| ImportError::Read {
        file: display(path),
        message: e.to_string(),
    })
}

/// Parses JSON (a leading UTF-8 byte order mark skipped, as PowerShell writes
/// one) into `T`, naming the file, line, column and JSON path on error.
fn parse<T: DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T, ImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ImportError::Json {
            file: file.to_string(),
            line: inner.line(),
            column: inner.column(),
            json_path: clip(&path, ECHO_LIMIT),
            message: clip(&strip_serde_position(&inner.to_string()), 400),
        }
    })?;
    de.end().map_err(|e| ImportError::Json {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        json_path: ".".into(),
        message: strip_serde_position(&e.to_string()),
    })?;
    Ok(value)
}

fn invalid(file: &str, place: &str, message: String) -> ImportError {
    ImportError::Invalid {
        file: file.to_string(),
        place: place.to_string(),
        message,
    }
}

/// An RFC 3339 time with an offset; a time without one is refused, never
/// read as UTC or local.
fn time(s: &str, file: &str, place: &str) -> Result<DateTime<Utc>, ImportError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            invalid(
                file,
                place,
                format!(
                    "{:?} is not an RFC 3339 time with an offset: {e}",
                    clip(s, ECHO_LIMIT)
                ),
            )
        })
}

/// A JSON object for `Identity::attributes`.
fn attributes(value: serde_json::Value) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(&value).ok()
}

/// One step less severe: an "investigate" result is a lead, not a failure.
fn one_step_lower(s: Severity) -> Severity {
    match s {
        Severity::Critical => Severity::High,
        Severity::High => Severity::Medium,
        Severity::Medium => Severity::Low,
        Severity::Low | Severity::Info => Severity::Info,
    }
}

/// A scanner's severity word (`Critical`, `High`, `Medium`, `Low`, `Info`, any
/// case) or, when empty or absent, `medium`; anything else is refused.
fn severity_word(word: Option<&str>, file: &str, place: &str) -> Result<Severity, ImportError> {
    let w = word.map(str::trim).unwrap_or("");
    if w.is_empty() {
        return Ok(Severity::Medium);
    }
    Severity::parse(&w.to_ascii_lowercase()).ok_or_else(|| {
        invalid(
            file,
            place,
            format!(
                "unknown severity {:?}: expected Critical, High, Medium, Low or Info",
                clip(w, ECHO_LIMIT)
            ),
        )
    })
}

/// Finding ids unique within one import: a repeated id gets `#2`, `#3`, ...
#[derive(Default)]
struct Ids {
    seen: BTreeMap<String, u32>,
}

impl Ids {
    fn unique(&mut self, id: &str) -> String {
        let n = self.seen.entry(id.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            id.to_string()
        } else {
            format!("{id}#{n}")
        }
    }
}

/// An identity the file names but does not describe: only what it says.
fn bare_identity(
    id: &str,
    display_name: &str,
    upn: Option<String>,
    attrs: serde_json::Value,
) -> Identity {
    Identity {
        id: Guid::from(id),
        user_principal_name: upn,
        display_name: display_name.to_string(),
        user_type: None,
        account_enabled: None,
        risk_score: None,
        last_sign_in: LastSignIn::Unknown,
        mfa_registered: None,
        roles: Vec::new(),
        groups: Vec::new(),
        attributes: attributes(attrs),
    }
}
