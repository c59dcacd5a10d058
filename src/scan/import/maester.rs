//! Maester's results JSON (`TestResults-*.json`, `maester-results.json`) to scan
//! v1. Field mapping: `docs/import-maester.md`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::links::user_links;
use super::{
    ECHO_LIMIT, Ids, ImportError, Tenant, bare_identity, invalid, one_step_lower, parse,
    severity_word, time,
};
use crate::scan::{Finding, Guid, NotEvaluated, Scan};
use crate::text::clip;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Results {
    tenant_id: String,
    #[serde(default)]
    tenant_name: Option<String>,
    executed_at: String,
    #[serde(default)]
    current_version: Option<String>,
    tests: Vec<Test>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Test {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    help_url: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    result: String,
    #[serde(default)]
    block: Option<String>,
    #[serde(default)]
    result_detail: Option<Detail>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Detail {
    #[serde(default)]
    test_result: Option<String>,
    #[serde(default)]
    test_description: Option<String>,
    #[serde(default)]
    skipped_reason: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    service: Option<String>,
}

/// What a Maester result becomes.
enum Outcome {
    Finding { investigate: bool },
    NotEvaluated(&'static str),
    Nothing,
}

fn outcome(result: &str) -> Option<Outcome> {
    Some(match result {
        "Failed" => Outcome::Finding { investigate: false },
        "Investigate" => Outcome::Finding { investigate: true },
        "Error" => Outcome::NotEvaluated("Maester reported an error running the test"),
        "Skipped" => Outcome::NotEvaluated("skipped by Maester"),
        "NotRun" => Outcome::NotEvaluated("not run (left out by the tag filter or configuration)"),
        "Passed" => Outcome::Nothing,
        _ => return None,
    })
}

/// Users seen in the tests' markdown, by lower-case id.
#[derive(Default)]
pub(super) struct People {
    by_id: BTreeMap<String, Person>,
}

struct Person {
    display_name: String,
    upn: Option<String>,
    tests: Vec<String>,
}

impl People {
    /// Records the users linked in `markdown` for finding `finding`, returning their ids.
    fn add(
        &mut self,
        markdown: &str,
        finding: &str,
        file: &str,
        place: &str,
    ) -> Result<Vec<Guid>, ImportError> {
        let found = user_links(markdown).map_err(|e| {
            invalid(
                file,
                &format!("{place} (markdown line {})", e.line),
                e.message,
            )
        })?;
        let mut ids: Vec<Guid> = Vec::new();
        for link in found {
            let p = self.by_id.entry(link.id.clone()).or_insert_with(|| Person {
                display_name: link.display_name.clone(),
                upn: None,
                tests: Vec::new(),
            });
            match (&p.upn, link.upn) {
                (Some(had), Some(new)) if !had.eq_ignore_ascii_case(&new) => {
                    return Err(invalid(
                        file,
                        place,
                        format!(
                            "user {} is given two UPNs, {:?} and {:?}",
                            link.id,
                            clip(had, ECHO_LIMIT),
                            clip(&new, ECHO_LIMIT)
                        ),
                    ));
                }
                (None, Some(new)) => p.upn = Some(new),
                _ => {}
            }
            if !p.tests.iter().any(|t| t == finding) {
                p.tests.push(finding.to_string());
            }
            if !ids.iter().any(|g| *g.0 == *link.id) {
                ids.push(Guid::from(link.id));
            }
        }
        Ok(ids)
    }
}

/// Converts Maester's results; `name` is the file's name for the scanner label.
pub(super) fn convert(bytes: &[u8], name: &str, tenant: &Tenant<'_>) -> Result<Scan, ImportError> {
    let file = name;
    let r: Results = parse(bytes, file)?;
    let tenant_id = tenant.check(&r.tenant_id, file, "TenantId")?;
    let scanned_at = time(&r.executed_at, file, "ExecutedAt")?;
    let mut ids = Ids::default();
    let mut people = People::default();
    let mut findings = Vec::new();
    let mut not_evaluated = Vec::new();
    for (i, t) in r.tests.iter().enumerate() {
        let place = format!("Tests[{i}]");
        let Some(what) = outcome(t.result.trim()) else {
            return Err(invalid(
                file,
                &format!("{place}.Result"),
                format!(
                    "unknown result {:?}: expected Passed, Failed, Investigate, Skipped, NotRun or Error",
                    clip(&t.result, ECHO_LIMIT)
                ),
            ));
        };
        let (id, title) = id_and_title(t, file, &place)?;
        let empty = Detail::default();
        let detail = t.result_detail.as_ref().unwrap_or(&empty);
        match what {
            Outcome::Nothing => {}
            Outcome::NotEvaluated(default_reason) => not_evaluated.push(NotEvaluated {
                check: ids.unique(&id),
                title,
                reason: non_empty(detail.skipped_reason.as_deref())
                    .unwrap_or(default_reason)
                    .to_string(),
            }),
            Outcome::Finding { investigate } => {
                let id = ids.unique(&id);
                let word = non_empty(t.severity.as_deref()).or(detail.severity.as_deref());
                let sev = severity_word(word, file, &format!("{place}.Severity"))?;
                let affected = people.add(
                    detail.test_result.as_deref().unwrap_or(""),
                    &id,
                    file,
                    &format!("{place}.ResultDetail.TestResult"),
                )?;
                findings.push(Finding {
                    id,
                    title,
                    severity: if investigate {
                        one_step_lower(sev)
                    } else {
                        sev
                    },
                    category: non_empty(detail.service.as_deref())
                        .or(non_empty(t.block.as_deref()))
                        .unwrap_or("maester")
                        .to_string(),
                    recommendation: recommendation(detail.test_description.as_deref()),
                    affected_identities: affected,
                    documentation: non_empty(t.help_url.as_deref()).map(str::to_string),
                });
            }
        }
    }
    let identities = people
        .by_id
        .into_iter()
        .map(|(id, p)| {
            let attrs = json!({"source": "maester", "tests": p.tests});
            bare_identity(&id, &p.display_name, p.upn, attrs)
        })
        .collect();
    let version = r
        .current_version
        .as_deref()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    Ok(Scan {
        schema_version: 1,
        tenant_id,
        tenant_name: tenant.name_or(r.tenant_name.as_deref()),
        scanned_at,
        identities,
        findings,
        scanner: Some(format!("maester{version} import ({name})")),
        not_evaluated,
    })
}

/// The test's id and title: `Id` and `Title`, else split from `Name` at the
/// first `:` (`MT.1005: Title`), as Maester itself does.
fn id_and_title(t: &Test, file: &str, place: &str) -> Result<(String, String), ImportError> {
    let name = non_empty(t.name.as_deref());
    let (from_name_id, from_name_title) = match name.and_then(|n| n.split_once(':')) {
        Some((a, b)) if !a.trim().is_empty() => (Some(a.trim()), Some(b.trim())),
        _ => (name, name),
    };
    let id = non_empty(t.id.as_deref()).or(from_name_id);
    let title = non_empty(t.title.as_deref()).or(from_name_title).or(id);
    match (id, title) {
        (Some(id), Some(title)) => Ok((id.to_string(), title.to_string())),
        _ => Err(invalid(
            file,
            place,
            "the test has neither Id, Title nor Name".to_string(),
        )),
    }
}

/// The "Remediation action" section of Maester's description, else the description.
fn recommendation(description: Option<&str>) -> String {
    let d = description.unwrap_or("").trim();
    let lower = d.to_ascii_lowercase();
    let Some(at) = lower.find("remediation action") else {
        return d.to_string();
    };
    let after = &d[at..];
    let body = after.split_once('\n').map_or("", |(_, b)| b);
    let end = body.find("\n#").unwrap_or(body.len());
    let section = body[..end].trim();
    if section.is_empty() {
        d.to_string()
    } else {
        section.to_string()
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}
