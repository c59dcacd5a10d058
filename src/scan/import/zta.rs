//! A Zero Trust Assessment report folder to scan v1: the raw Graph pages of
//! its export become [`TenantData`] for the built-in checks
//! ([`crate::scan::posture::build_scan`]), and the assessment's own failed
//! tests are added as `ZTA-<TestId>` findings. Field mapping: `docs/import-zta.md`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::links::user_links;
use super::{
    ECHO_LIMIT, Ids, ImportError, Tenant, display, invalid, one_step_lower, parse, severity_word,
    time,
};
use crate::scan::posture::{
    Expiration, Gap, GraphUser, PostureSettings, RoleSchedule, ScheduleInfo, TenantData, build_scan,
};
use crate::scan::{Finding, Guid, NotEvaluated, Scan};
use crate::text::clip;

const REPORT: &str = "ZeroTrustAssessmentReport.json";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Report {
    executed_at: String,
    tenant_id: String,
    #[serde(default)]
    tenant_name: Option<String>,
    #[serde(default)]
    current_version: Option<String>,
    tests: Vec<ZtTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ZtTest {
    #[serde(deserialize_with = "text_or_number")]
    test_id: String,
    #[serde(default)]
    test_title: Option<String>,
    test_status: String,
    #[serde(default)]
    test_risk: Option<String>,
    #[serde(default)]
    test_category: Option<String>,
    #[serde(default)]
    test_result: Option<String>,
    #[serde(default)]
    test_description: Option<String>,
    #[serde(default)]
    skipped_reason: Option<String>,
}

/// ZTA writes most test ids as strings and some as numbers.
fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    match Id::deserialize(d)? {
        Id::Text(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Id::Text(_) => Err(serde::de::Error::custom("must not be empty")),
        Id::Number(n) => Ok(n.to_string()),
    }
}

/// One page of a Graph entity as the export wrote it.
#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
}

/// A PIM schedule instance: like a schedule, with `endDateTime` in place of
/// `scheduleInfo` (null when it never ends).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    #[serde(flatten)]
    schedule: RoleSchedule,
    #[serde(default, deserialize_with = "present")]
    end_date_time: Option<Option<String>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl Instance {
    fn into_schedule(self) -> RoleSchedule {
        let mut s = self.schedule;
        if s.schedule_info.is_none()
            && let Some(end) = self.end_date_time
        {
            let kind = if end.is_none() {
                "noExpiration"
            } else {
                "afterDateTime"
            };
            s.schedule_info = Some(ScheduleInfo {
                start_date_time: None,
                expiration: Some(Expiration {
                    kind: Some(kind.to_string()),
                    end_date_time: end,
                }),
            });
        }
        s
    }
}

/// Converts the report folder (or its `zt-export`, or the report file itself).
pub(super) fn convert(
    path: &Path,
    tenant: &Tenant<'_>,
    settings: &PostureSettings,
) -> Result<Scan, ImportError> {
    let export = export_dir(path)?;
    let report_path = export.join(REPORT);
    let file = display(&report_path);
    let bytes = std::fs::read(&report_path).map_err(|e| ImportError::Read {
        file: file.clone(),
        message: e.to_string(),
    })?;
    let report: Report = parse(&bytes, &file)?;
    let tenant_id = tenant.check(&report.tenant_id, &file, "TenantId")?;
    let read_at = time(&report.executed_at, &file, "ExecutedAt")?;
    let data = tenant_data(
        &export,
        tenant_id.0.to_string(),
        tenant.name_or(report.tenant_name.as_deref()),
        read_at,
    )?;
    let version = report
        .current_version
        .as_deref()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    let label = path
        .file_name()
        .map_or_else(|| display(path), |n| n.to_string_lossy().into_owned());
    let settings = PostureSettings {
        scanner: format!("zero trust assessment{version} import ({label})"),
        ..settings.clone()
    };
    let built = build_scan(data, &settings);
    for s in &built.skipped {
        tracing::warn!("{}: left out of the scan: {s}", path.display());
    }
    let mut scan = built.scan;
    add_tests(&mut scan, &report, &file)?;
    Ok(scan)
}

/// The folder holding the report and the Graph pages.
fn export_dir(path: &Path) -> Result<PathBuf, ImportError> {
    let candidates = if path.is_file() {
        vec![path.parent().map(Path::to_path_buf).unwrap_or_default()]
    } else {
        vec![path.join("zt-export"), path.to_path_buf()]
    };
    candidates
        .into_iter()
        .find(|d| d.join(REPORT).is_file())
        .ok_or_else(|| ImportError::Read {
            file: display(path),
            message: format!(
                "no {REPORT} here or in its zt-export folder (give the assessment's report folder)"
            ),
        })
}

fn tenant_data(
    export: &Path,
    tenant_id: String,
    tenant_name: String,
    read_at: chrono::DateTime<chrono::Utc>,
) -> Result<TenantData, ImportError> {
    let users: Vec<GraphUser> = pages(export, "User")?.ok_or_else(|| ImportError::Read {
        file: display(&export.join("User")),
        message: "no User pages (User/User-0.json): the export is incomplete".into(),
    })?;
    let sign_in = if users.iter().any(|u| u.sign_in_activity.is_some()) {
        Ok(())
    } else {
        Err(gap(
            "sign-in activity",
            "the export's users carry no signInActivity (a Free tenant, or no AuditLog.Read.All)",
        ))
    };
    let schedules = |name: &str| -> Result<Option<Vec<RoleSchedule>>, ImportError> {
        Ok(pages::<Instance>(export, name)?
            .map(|v| v.into_iter().map(Instance::into_schedule).collect()))
    };
    Ok(TenantData {
        tenant_id,
        tenant_name,
        read_at,
        users,
        sign_in,
        registration: part(
            pages(export, "UserRegistrationDetails")?,
            "MFA registration",
        ),
        risky_users: Err(gap(
            "risky users",
            "the Zero Trust Assessment export does not include Identity Protection's risky users",
        )),
        role_definitions: part(pages(export, "RoleDefinition")?, "role definitions"),
        role_assignments: part(pages(export, "RoleAssignment")?, "role assignments"),
        eligibility: part(
            schedules("RoleEligibilityScheduleInstance")?,
            "PIM eligibility",
        ),
        assignment_schedules: part(
            schedules("RoleAssignmentScheduleInstance")?,
            "PIM assignment schedules",
        ),
        groups: Err(gap(
            "groups",
            "the Zero Trust Assessment export does not include the tenant's groups",
        )),
        members: Err(gap(
            "group members",
            "the Zero Trust Assessment export does not include group members",
        )),
    })
}

fn gap(data: &'static str, reason: &str) -> Gap {
    Gap {
        data,
        reason: reason.to_string(),
    }
}

fn part<T>(pages: Option<Vec<T>>, data: &'static str) -> Result<Vec<T>, Gap> {
    pages.ok_or_else(|| {
        gap(
            data,
            "not in the Zero Trust Assessment export (licence or permission missing when it ran)",
        )
    })
}

/// Every `<name>/<name>-<n>.json` page in page order, or None without the folder.
fn pages<T: DeserializeOwned>(export: &Path, name: &str) -> Result<Option<Vec<T>>, ImportError> {
    let dir = export.join(name);
    if !dir.is_dir() {
        return Ok(None);
    }
    let read_err = |e: std::io::Error| ImportError::Read {
        file: display(&dir),
        message: e.to_string(),
    };
    let prefix = format!("{name}-");
    let mut numbered = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let n = p
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = n {
            numbered.push((n, p));
        }
    }
    numbered.sort();
    let mut out = Vec::new();
    for (_, p) in numbered {
        let file = display(&p);
        let bytes = std::fs::read(&p).map_err(|e| ImportError::Read {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let page: Page<T> = parse(&bytes, &file)?;
        out.extend(page.value);
    }
    Ok(Some(out))
}

/// Adds the assessment's own tests: Failed and Investigate as `ZTA-<TestId>`
/// findings (affected: linked users the scan has), Skipped and Error as not evaluated.
fn add_tests(scan: &mut Scan, report: &Report, file: &str) -> Result<(), ImportError> {
    let known: HashSet<String> = scan
        .identities
        .iter()
        .map(|i| i.id.0.to_ascii_lowercase())
        .collect();
    let mut ids = Ids::default();
    for f in &scan.findings {
        ids.unique(&f.id);
    }
    for (i, t) in report.tests.iter().enumerate() {
        let place = format!("Tests[{i}]");
        let title = t
            .test_title
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| format!("Zero Trust Assessment test {}", t.test_id));
        let id = format!("ZTA-{}", t.test_id);
        let investigate = match t.test_status.trim() {
            "Failed" => false,
            "Investigate" => true,
            "Skipped" | "Error" => {
                let reason = t
                    .skipped_reason
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| format!("{} in the Zero Trust Assessment", t.test_status));
                scan.not_evaluated.push(NotEvaluated {
                    check: ids.unique(&id),
                    title,
                    reason,
                });
                continue;
            }
            "Passed" | "Planned" => continue,
            other => {
                return Err(invalid(
                    file,
                    &format!("{place}.TestStatus"),
                    format!(
                        "unknown status {:?}: expected Passed, Failed, Investigate, Skipped, Error or Planned",
                        clip(other, ECHO_LIMIT)
                    ),
                ));
            }
        };
        let sev = severity_word(
            t.test_risk
                .as_deref()
                .filter(|r| !r.eq_ignore_ascii_case("Unranked")),
            file,
            &format!("{place}.TestRisk"),
        )?;
        let md = t.test_result.as_deref().unwrap_or("");
        let links = user_links(md).map_err(|e| {
            invalid(
                file,
                &format!("{place}.TestResult (markdown line {})", e.line),
                e.message,
            )
        })?;
        let mut affected: Vec<Guid> = Vec::new();
        for l in links {
            if known.contains(&l.id) && !affected.iter().any(|g| *g.0 == *l.id) {
                affected.push(Guid::from(l.id));
            }
        }
        scan.findings.push(Finding {
            id: ids.unique(&id),
            title,
            severity: if investigate {
                one_step_lower(sev)
            } else {
                sev
            },
            category: t
                .test_category
                .clone()
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "zero trust assessment".to_string()),
            recommendation: t
                .test_description
                .clone()
                .unwrap_or_default()
                .trim()
                .to_string(),
            affected_identities: affected,
            documentation: None,
        });
    }
    Ok(())
}
