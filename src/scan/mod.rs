//! Scan results: the typed, strict loader for the version 1 input contract
//! (`schemas/scan-v1.schema.json`, `docs/scan-format.md`).
//!
//! Loading rejects everything the schema rejects, plus what a schema cannot say:
//! duplicate ids and findings naming identities that are not in the file. Errors
//! name the file and the line/column or JSON path at fault.

pub mod archive;
mod error;
pub mod import;
mod intern;
pub mod posture;
mod source;

use crate::text::is_guid;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

pub use error::ScanError;
pub use source::{LoadedScan, ScanRequest, load_for_tenant};

pub use posture::build_scan;

/// The template id of the Global Administrator role.
pub const GLOBAL_ADMIN_TEMPLATE: &str = "62e90394-69f5-4237-9190-012177145e10";

/// A string that must be a GUID (tenant ids, object ids, role template ids),
/// shared: a scan repeats the same ids many times (see `intern`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub Arc<str>);

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Guid {
    /// The GUID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Guid {
    fn from(s: &str) -> Guid {
        Guid(Arc::from(s))
    }
}

impl From<String> for Guid {
    fn from(s: String) -> Guid {
        Guid(Arc::from(s))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = intern::shared_str(d)?;
        if is_guid(&s) {
            Ok(Guid(s))
        } else {
            Err(serde::de::Error::custom(format!("{s:?} is not a GUID")))
        }
    }
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
}

fn rfc3339_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}"))),
    }
}

fn version_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 1 {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "unsupported schema_version {v}: this build reads version 1"
        )))
    }
}

fn risk<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    let v = u64::deserialize(d)?;
    if v <= 100 {
        Ok(Some(v as u8))
    } else {
        Err(serde::de::Error::custom(format!(
            "risk_score {v} is outside 0..=100"
        )))
    }
}

fn json_object<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<serde_json::value::RawValue>>, D::Error> {
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    if raw.get().trim_start().starts_with('{') {
        Ok(Some(raw))
    } else {
        Err(serde::de::Error::custom("attributes must be a JSON object"))
    }
}

fn non_empty_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    non_empty(d).map(Some)
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        Err(serde::de::Error::custom("must not be empty"))
    } else {
        Ok(s)
    }
}

/// One scan of one tenant, as the scanner reported it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scan {
    /// Always 1 for this contract.
    #[serde(deserialize_with = "version_one")]
    pub schema_version: u32,
    /// The Entra tenant id.
    pub tenant_id: Guid,
    /// The tenant's display name.
    #[serde(deserialize_with = "non_empty")]
    pub tenant_name: String,
    /// When the scanner took this picture of the tenant.
    #[serde(deserialize_with = "rfc3339")]
    pub scanned_at: DateTime<Utc>,
    /// Every identity the findings refer to.
    pub identities: Vec<Identity>,
    /// The posture findings.
    pub findings: Vec<Finding>,
    /// What wrote the scan (`entra-remediator 0.1.0`, `maester`, ...), if said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// Checks the scanner could not evaluate (licence, permission), with why:
    /// such a check is neither clean nor failed, and must never read as clean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_evaluated: Vec<NotEvaluated>,
}

/// A check the scanner could not evaluate, and why (a missing licence or permission).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotEvaluated {
    /// The finding id the check would have reported under.
    #[serde(deserialize_with = "non_empty")]
    pub check: String,
    /// The check's title.
    pub title: String,
    /// Why it was not evaluated, for people.
    #[serde(deserialize_with = "non_empty")]
    pub reason: String,
}

/// When an identity last signed in: a time, never, or not known to the scanner
/// (the key left out), which must never read as "never".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastSignIn {
    /// The scanner could not know (no licence, no permission, an import without it).
    #[default]
    Unknown,
    /// The account has never signed in (`null`).
    Never,
    /// The last sign-in.
    At(DateTime<Utc>),
}

impl LastSignIn {
    /// The time, when there is one.
    pub fn time(self) -> Option<DateTime<Utc>> {
        match self {
            LastSignIn::At(t) => Some(t),
            LastSignIn::Unknown | LastSignIn::Never => None,
        }
    }

    /// True when the key was left out.
    pub fn is_unknown(&self) -> bool {
        *self == LastSignIn::Unknown
    }
}

impl Serialize for LastSignIn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Skipped by `skip_serializing_if`; null would say "never".
            LastSignIn::Unknown | LastSignIn::Never => s.serialize_none(),
            LastSignIn::At(t) => {
                s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
        }
    }
}

impl<'de> Deserialize<'de> for LastSignIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match rfc3339_or_null(d)? {
            None => LastSignIn::Never,
            Some(t) => LastSignIn::At(t),
        })
    }
}

/// Member or guest, as Entra's `userType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum UserType {
    /// A member of the tenant.
    Member,
    /// An invited external user.
    Guest,
}

/// One user in the scan.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Entra object id.
    pub id: Guid,
    /// UPN; absent when the scanner does not know it.
    #[serde(
        default,
        deserialize_with = "non_empty_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_principal_name: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Member or Guest; absent when the scanner does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<UserType>,
    /// Whether sign-in is allowed; absent when the scanner does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_enabled: Option<bool>,
    /// 0-100 risk score, if the scanner has one.
    #[serde(
        default,
        deserialize_with = "risk",
        skip_serializing_if = "Option::is_none"
    )]
    pub risk_score: Option<u8>,
    /// Last sign-in: a time, null for never, the key left out when unknown.
    #[serde(default, skip_serializing_if = "LastSignIn::is_unknown")]
    pub last_sign_in: LastSignIn,
    /// Whether MFA methods are registered, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_registered: Option<bool>,
    /// Directory role assignments.
    pub roles: Vec<RoleAssignment>,
    /// Group memberships.
    pub groups: Vec<GroupMembership>,
    /// Scanner-specific values, a JSON object kept as text until a rule reads it
    /// (most rules never do, and 100,000 parsed maps are costly).
    #[serde(
        default,
        deserialize_with = "json_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub attributes: Option<Box<serde_json::value::RawValue>>,
}

/// Whether a role assignment is in force or only eligible (PIM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentType {
    /// In force now.
    Active,
    /// Can be activated through PIM.
    Eligible,
}

/// A directory role assignment of an identity.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    /// The assignment's id (what removal deletes).
    #[serde(deserialize_with = "non_empty")]
    pub assignment_id: String,
    /// The role template id.
    pub role_definition_id: Guid,
    /// The role's display name.
    pub role_name: String,
    /// Scope, `/` for the whole directory.
    #[serde(deserialize_with = "non_empty")]
    pub directory_scope_id: String,
    /// Active or eligible.
    pub assignment_type: AssignmentType,
    /// The role-assignable group the identity holds this role through; the
    /// assignment belongs to the group, so removing it would strip every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_group: Option<Guid>,
    /// True when the assignment never expires (PIM `noExpiration`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
}

/// A group an identity is a member of.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMembership {
    /// Group object id.
    pub id: Guid,
    /// Group display name (shared: see `intern`).
    #[serde(
        deserialize_with = "intern::shared_str",
        serialize_with = "intern::as_str"
    )]
    pub display_name: Arc<str>,
    /// Dynamic-membership group (membership is computed by a rule).
    pub dynamic: bool,
    /// Synced from on-premises AD (membership is mastered there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_premises_synced: Option<bool>,
    /// A role-assignable group (`isAssignableToRole`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignable: Option<bool>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Parses a severity name as written in scans and rules.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// The name used in scans and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One posture finding and the identities it affects.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The scanner's finding id.
    #[serde(deserialize_with = "non_empty")]
    pub id: String,
    /// Short title.
    #[serde(deserialize_with = "non_empty")]
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// Category.
    pub category: String,
    /// The scanner's recommendation.
    pub recommendation: String,
    /// Ids of affected identities (all present in `identities`).
    pub affected_identities: Vec<Guid>,
    /// Where the check is documented (a URL or a line), if the scanner says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation: Option<String>,
}

impl Identity {
    /// True for guests (`userType` Guest or an `#EXT#` UPN).
    pub fn is_guest(&self) -> bool {
        self.user_type == Some(UserType::Guest)
            || self
                .user_principal_name
                .as_deref()
                .is_some_and(|u| u.contains("#EXT#"))
    }

    /// True when the scan cannot rule out a guest: a guardrail that exists
    /// for guests must refuse on it.
    pub fn maybe_guest(&self) -> bool {
        self.is_guest() || self.user_type.is_none()
    }

    /// True only when the scan says the account is enabled.
    pub fn is_enabled(&self) -> bool {
        self.account_enabled == Some(true)
    }

    /// Which `[protected]` list covers this identity as the scan shows it, if any.
    pub fn protected_by(&self, p: &crate::config::Protected) -> Option<crate::config::ProtectedBy> {
        let groups: Vec<(&str, &str)> = self
            .groups
            .iter()
            .map(|g| (g.id.as_str(), &*g.display_name))
            .collect();
        p.covers(&self.id.0, self.user_principal_name.as_deref(), &groups)
    }

    /// The UPN, or the object id when the scan does not know the UPN: how
    /// messages name the identity.
    pub fn label(&self) -> &str {
        self.user_principal_name.as_deref().unwrap_or(&self.id.0)
    }

    /// True when the identity holds an active Global Administrator assignment.
    pub fn is_global_admin(&self) -> bool {
        self.roles.iter().any(|r| {
            r.assignment_type == AssignmentType::Active
                && r.role_definition_id
                    .0
                    .eq_ignore_ascii_case(GLOBAL_ADMIN_TEMPLATE)
        })
    }
}

impl Scan {
    /// Parses and validates a scan from bytes; `source_name` names it in errors.
    pub fn from_slice(bytes: &[u8], source_name: &str) -> Result<Scan, ScanError> {
        // The JSON path of an error is tracked only when there is an error: a
        // valid scan is parsed once without the tracking wrapper (which costs
        // on every value), an invalid one a second time with it.
        fn parse(bytes: &[u8]) -> Result<Scan, serde_json::Error> {
            let _sharing = intern::Interning::start();
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let scan = Scan::deserialize(&mut de)?;
            de.end()?;
            Ok(scan)
        }
        fn error_with_path(bytes: &[u8], source_name: &str, plain: serde_json::Error) -> ScanError {
            let json = |line, column, json_path, e: &serde_json::Error| ScanError::Json {
                source_name: source_name.to_string(),
                line,
                column,
                json_path,
                message: clip_echo(&crate::text::strip_serde_position(&e.to_string())),
            };
            let mut de = serde_json::Deserializer::from_slice(bytes);
            match serde_path_to_error::deserialize::<_, Scan>(&mut de) {
                Err(e) => {
                    let path = clip_echo(&e.path().to_string());
                    let inner = e.into_inner();
                    json(inner.line(), inner.column(), path, &inner)
                }
                // The value parsed: the error is after it (trailing text).
                Ok(_) => json(plain.line(), plain.column(), ".".into(), &plain),
            }
        }
        let scan = parse(bytes).map_err(|e| error_with_path(bytes, source_name, e))?;
        scan.check_references(source_name)?;
        Ok(scan)
    }

    fn check_references(&self, source_name: &str) -> Result<(), ScanError> {
        let invalid = |json_path: String, message: String| ScanError::Invalid {
            source_name: source_name.to_string(),
            json_path,
            message: clip_echo(&message),
        };
        let mut ids = HashSet::with_capacity(self.identities.len());
        for (i, ident) in self.identities.iter().enumerate() {
            if !ids.insert(ident.id.0.to_ascii_lowercase()) {
                return Err(invalid(
                    format!("identities[{i}].id"),
                    format!("duplicate identity id {}", ident.id),
                ));
            }
        }
        let mut fids = HashSet::with_capacity(self.findings.len());
        for (i, f) in self.findings.iter().enumerate() {
            if !fids.insert(f.id.as_str()) {
                return Err(invalid(
                    format!("findings[{i}].id"),
                    format!("duplicate finding id {:?}", f.id),
                ));
            }
            for (j, a) in f.affected_identities.iter().enumerate() {
                if !ids.contains(&a.0.to_ascii_lowercase()) {
                    return Err(invalid(
                        format!("findings[{i}].affected_identities[{j}]"),
                        format!(
                            "finding {:?} names identity {a}, which is not in the scan's identities",
                            f.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Longest message (or JSON path) echoed from a scan: serde quotes the offending
/// value, and one value of a hostile scan can be megabytes long.
const SCAN_ECHO_LIMIT: usize = 400;

/// Shortens a message that quotes a huge value (see [`SCAN_ECHO_LIMIT`]).
fn clip_echo(msg: &str) -> String {
    crate::text::clip(msg, SCAN_ECHO_LIMIT)
}

/// Hex SHA-256 of a scan's bytes: its identity for "already processed".
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_shape_is_checked_exactly() {
        assert!(is_guid("62e90394-69f5-4237-9190-012177145e10"));
        assert!(!is_guid("62e90394-69f5-4237-9190-012177145e1"));
        assert!(!is_guid("62e90394x69f5-4237-9190-012177145e10"));
        assert!(!is_guid("zze90394-69f5-4237-9190-012177145e10"));
    }

    #[test]
    fn json_errors_name_line_column_and_path() {
        let text = br#"{"schema_version": 1, "tenant_id": "nope"}"#;
        let err = Scan::from_slice(text, "x.json").unwrap_err().to_string();
        assert!(err.starts_with("x.json:1:"), "{err}");
        assert!(err.contains("at tenant_id"), "{err}");
        assert!(err.contains("not a GUID"), "{err}");
    }
}
