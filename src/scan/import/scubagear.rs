//! ScubaGear's `ScubaResults_*.json` (AAD baseline) to scan v1. Field mapping:
//! `docs/import-scubagear.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::{ECHO_LIMIT, Ids, ImportError, Tenant, bare_identity, invalid, parse, time};
use crate::scan::{
    AssignmentType, Finding, Guid, Identity, NotEvaluated, RoleAssignment, Scan, Severity,
};
use crate::text::{clip, is_guid};

#[derive(Deserialize)]
struct File {
    #[serde(rename = "MetaData")]
    meta: Meta,
    #[serde(rename = "Results")]
    results: Products,
    #[serde(rename = "Raw", default)]
    raw: Raw,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Meta {
    tenant_id: String,
    #[serde(default)]
    display_name: Option<String>,
    timestamp_zulu: String,
    #[serde(default)]
    tool_version: Option<String>,
}

#[derive(Deserialize)]
struct Products {
    #[serde(rename = "AAD", default)]
    aad: Option<Vec<Group>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Group {
    group_name: String,
    #[serde(rename = "GroupReferenceURL", default)]
    reference_url: Option<String>,
    controls: Vec<Control>,
}

#[derive(Deserialize)]
struct Control {
    #[serde(rename = "Control ID")]
    id: String,
    #[serde(rename = "Requirement")]
    requirement: String,
    #[serde(rename = "Result")]
    result: String,
    #[serde(rename = "Criticality")]
    criticality: String,
    #[serde(rename = "Details", default)]
    details: Option<String>,
}

#[derive(Deserialize, Default)]
struct Raw {
    #[serde(default)]
    privileged_users: Option<BTreeMap<String, PrivilegedUser>>,
    #[serde(default, deserialize_with = "one_or_many")]
    privileged_roles: Vec<PrivilegedRole>,
}

#[derive(Deserialize)]
struct PrivilegedUser {
    #[serde(rename = "DisplayName", default)]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    roles: Vec<String>,
    /// Absent for service principals; null for cloud-only users.
    #[serde(
        rename = "OnPremisesImmutableId",
        default,
        deserialize_with = "present"
    )]
    immutable_id: Option<Option<String>>,
    /// Present for service principals only.
    #[serde(rename = "ServicePrincipalId", default)]
    service_principal_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrivilegedRole {
    display_name: String,
    role_template_id: String,
    #[serde(default, deserialize_with = "one_or_many")]
    assignments: Vec<Assignment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Assignment {
    id: String,
    principal_id: String,
    #[serde(default)]
    directory_scope_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    start_date_time: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    end_date_time: Option<Option<String>>,
}

/// PowerShell's `ConvertTo-Json` writes a one-element array as the element
/// itself, and an empty one as null.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(t)) => vec![t],
    })
}

/// Tells a key given as null (`Some(None)`) from a key left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// What a ScubaGear result becomes.
enum Outcome {
    Finding,
    NotEvaluated(&'static str),
    Nothing,
}

fn outcome(result: &str) -> Option<Outcome> {
    Some(match result {
        "Fail" | "Warning" => Outcome::Finding,
        "N/A" => Outcome::NotEvaluated("not checked automatically (ScubaGear: N/A)"),
        "Omitted" => Outcome::NotEvaluated("omitted by the ScubaGear configuration"),
        "Incorrect result" => Outcome::NotEvaluated("result marked incorrect by the user"),
        r if r.starts_with("Error") => Outcome::NotEvaluated("ScubaGear reported an error"),
        "Pass" | "-" => Outcome::Nothing,
        _ => return None,
    })
}

/// `Shall` -> high, `Should` -> medium, `May` -> low (the part before any `/`).
fn criticality(word: &str, file: &str, place: &str) -> Result<Severity, ImportError> {
    let base = word.split('/').next().unwrap_or("").trim();
    match base.to_ascii_lowercase().as_str() {
        "shall" => Ok(Severity::High),
        "should" => Ok(Severity::Medium),
        "may" => Ok(Severity::Low),
        _ => Err(invalid(
            file,
            place,
            format!(
                "unknown criticality {:?}: expected Shall, Should or May",
                clip(word, ECHO_LIMIT)
            ),
        )),
    }
}

/// Converts ScubaGear's results; `name` is the file's name.
pub(super) fn convert(bytes: &[u8], name: &str, tenant: &Tenant<'_>) -> Result<Scan, ImportError> {
    let file = name;
    let f: File = parse(bytes, file)?;
    let tenant_id = tenant.check(&f.meta.tenant_id, file, "MetaData.TenantId")?;
    let scanned_at = time(&f.meta.timestamp_zulu, file, "MetaData.TimestampZulu")?;
    let Some(groups) = &f.results.aad else {
        return Err(invalid(
            file,
            "Results.AAD",
            "the file has no AAD results (ScubaGear was run without the aad product)".into(),
        ));
    };
    let users = users(&f.raw, file)?;
    let mut ids = Ids::default();
    let mut findings = Vec::new();
    let mut not_evaluated = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for (c, control) in group.controls.iter().enumerate() {
            let place = format!("Results.AAD[{g}].Controls[{c}]");
            let Some(what) = outcome(control.result.trim()) else {
                return Err(invalid(
                    file,
                    &format!("{place}.Result"),
                    format!(
                        "unknown result {:?}: expected Pass, Fail, Warning, N/A, Omitted or Error",
                        clip(&control.result, ECHO_LIMIT)
                    ),
                ));
            };
            let title = requirement(&control.requirement);
            let details = plain(control.details.as_deref().unwrap_or(""));
            match what {
                Outcome::Nothing => {}
                Outcome::NotEvaluated(why) => not_evaluated.push(NotEvaluated {
                    check: ids.unique(&control.id),
                    title,
                    reason: if details.is_empty() {
                        why.to_string()
                    } else {
                        format!("{why}: {details}")
                    },
                }),
                Outcome::Finding => findings.push(Finding {
                    id: ids.unique(&control.id),
                    severity: criticality(
                        &control.criticality,
                        file,
                        &format!("{place}.Criticality"),
                    )?,
                    category: format!("AAD: {}", group.group_name),
                    recommendation: format!("{title} ScubaGear found: {details}"),
                    title,
                    affected_identities: affected(&control.id, &f.raw, &users),
                    documentation: group.reference_url.clone().filter(|u| !u.is_empty()),
                }),
            }
        }
    }
    let version = f
        .meta
        .tool_version
        .as_deref()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    Ok(Scan {
        schema_version: 1,
        tenant_id,
        tenant_name: tenant.name_or(f.meta.display_name.as_deref()),
        scanned_at,
        identities: users.into_values().collect(),
        findings,
        scanner: Some(format!("scubagear{version} import ({name})")),
        not_evaluated,
    })
}

/// The privileged users (service principals left out), by lower-case id, with
/// their direct active assignments of the privileged roles ScubaGear read.
fn users(raw: &Raw, file: &str) -> Result<BTreeMap<String, Identity>, ImportError> {
    let mut out = BTreeMap::new();
    for (key, u) in raw.privileged_users.iter().flatten() {
        if u.service_principal_id.is_some() {
            continue;
        }
        if !is_guid(key) {
            return Err(invalid(
                file,
                &format!("Raw.privileged_users.{}", clip(key, ECHO_LIMIT)),
                "the key is not an object id (GUID)".into(),
            ));
        }
        let id = key.to_ascii_lowercase();
        let mut attrs = json!({"source": "scubagear", "roles": u.roles});
        if let Some(immutable) = &u.immutable_id {
            attrs["on_premises_immutable_id"] = json!(immutable);
        }
        let mut ident = bare_identity(&id, u.display_name.as_deref().unwrap_or(""), None, attrs);
        ident.roles = roles_of(&id, raw, file)?;
        out.insert(id, ident);
    }
    Ok(out)
}

fn roles_of(id: &str, raw: &Raw, file: &str) -> Result<Vec<RoleAssignment>, ImportError> {
    let mut out = Vec::new();
    for (r, role) in raw.privileged_roles.iter().enumerate() {
        for (a, asg) in role.assignments.iter().enumerate() {
            if !asg.principal_id.eq_ignore_ascii_case(id) {
                continue;
            }
            let place = format!("Raw.privileged_roles[{r}]");
            if !is_guid(&role.role_template_id) {
                return Err(invalid(
                    file,
                    &format!("{place}.RoleTemplateId"),
                    format!(
                        "{:?} is not a GUID",
                        clip(&role.role_template_id, ECHO_LIMIT)
                    ),
                ));
            }
            let Some(scope) = asg.directory_scope_id.clone().filter(|s| !s.is_empty()) else {
                return Err(invalid(
                    file,
                    &format!("{place}.Assignments[{a}].DirectoryScopeId"),
                    "missing directory scope".into(),
                ));
            };
            out.push(RoleAssignment {
                assignment_id: asg.id.clone(),
                role_definition_id: Guid::from(role.role_template_id.to_ascii_lowercase()),
                role_name: role.display_name.clone(),
                directory_scope_id: scope,
                assignment_type: AssignmentType::Active,
                via_group: None,
                permanent: asg.end_date_time.as_ref().map(Option::is_none),
            });
        }
    }
    Ok(out)
}

/// The identities a failing control is about, where ScubaGear's data says:
/// 7.1 the Global Administrators, 7.3 the synced admins, 7.4 the principals of
/// permanent active assignments, 7.5 those of assignments outside PIM.
fn affected(control: &str, raw: &Raw, users: &BTreeMap<String, Identity>) -> Vec<Guid> {
    let base = control.split('v').next().unwrap_or(control);
    let by_assignment = |pick: &dyn Fn(&Assignment) -> bool| -> Vec<String> {
        raw.privileged_roles
            .iter()
            .flat_map(|r| r.assignments.iter())
            .filter(|a| pick(a))
            .map(|a| a.principal_id.to_ascii_lowercase())
            .collect()
    };
    let privileged = || raw.privileged_users.iter().flatten();
    let picked: Vec<String> = match base {
        "MS.AAD.7.1" => privileged()
            .filter(|(_, u)| u.roles.iter().any(|r| r == "Global Administrator"))
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect(),
        "MS.AAD.7.3" => privileged()
            .filter(|(_, u)| matches!(&u.immutable_id, Some(Some(v)) if !v.is_empty()))
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect(),
        "MS.AAD.7.4" => by_assignment(&|a| a.end_date_time == Some(None)),
        "MS.AAD.7.5" => by_assignment(&|a| a.start_date_time == Some(None)),
        _ => Vec::new(),
    };
    let mut out: Vec<Guid> = Vec::new();
    for id in picked {
        if users.contains_key(&id) && !out.iter().any(|g| *g.0 == *id) {
            out.push(Guid::from(id));
        }
    }
    out
}

/// The requirement's text, without the indicator badges ScubaGear appends as HTML.
fn requirement(s: &str) -> String {
    plain(s.split("<div").next().unwrap_or(s))
}

/// Text of a ScubaGear field for people: HTML tags removed, whitespace folded.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}
