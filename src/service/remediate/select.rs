//! Checking a person's remediation request against the scan: the reason, which
//! identities it selects and which targets it names. Every refusal names the
//! field at fault; nothing is recorded.

use std::collections::{HashMap, HashSet};

use crate::config::TenantConfig;
use crate::scan::{Identity, LoadedScan};

use super::{MAX_REASON_CHARS, RemediateError, RemediationRequest, Selection};

/// A request checked against the scan.
pub(super) struct Selected {
    /// Indexes of the selected identities in the scan, each once, in request order.
    pub identities: Vec<usize>,
    /// The targets, each once (removals only).
    pub targets: Vec<String>,
    /// The finding, when selected by finding.
    pub finding: Option<String>,
    /// The reason, trimmed.
    pub reason: String,
}

fn invalid(message: String) -> RemediateError {
    RemediateError::Invalid(message)
}

/// Checks the request: the scan is the tenant's, a reason is given, the
/// selection fits the action (bulk only for bulk-capable kinds), every named
/// identity, finding and target is in the scan.
pub(super) fn select(
    tenant: &TenantConfig,
    scan: &LoadedScan,
    req: &RemediationRequest,
) -> Result<Selected, RemediateError> {
    if !scan
        .scan
        .tenant_id
        .0
        .eq_ignore_ascii_case(&tenant.tenant_id)
    {
        return Err(invalid(format!(
            "scan: {} is a scan of tenant id {}, not of tenant {:?} ({})",
            scan.source_name, scan.scan.tenant_id.0, tenant.name, tenant.tenant_id
        )));
    }
    let reason = checked_reason(&req.reason)?;
    let kind = req.kind;
    let (identities, finding) = match &req.selection {
        Selection::Finding(f) => {
            if !kind.is_bulk() {
                return Err(invalid(format!(
                    "finding: {kind} takes exactly one identity and cannot be requested for everyone a finding affects; name the identity"
                )));
            }
            (finding_identities(scan, f)?, Some(f.clone()))
        }
        Selection::Identities(names) => (named_identities(scan, names)?, None),
    };
    if kind.is_bulk() {
        if !req.targets.is_empty() {
            return Err(invalid(format!(
                "targets: {kind} takes no targets; targets are only for remove_role_assignment and remove_group_membership"
            )));
        }
        return Ok(Selected {
            identities,
            targets: Vec::new(),
            finding,
            reason,
        });
    }
    let [one] = identities.as_slice() else {
        return Err(invalid(format!(
            "identities: {kind} takes exactly one identity ({} selected)",
            identities.len()
        )));
    };
    let targets = checked_targets(req, &scan.scan.identities[*one])?;
    Ok(Selected {
        identities,
        targets,
        finding,
        reason,
    })
}

fn checked_reason(reason: &str) -> Result<String, RemediateError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(invalid(
            "reason: a reason is required (it is recorded in history)".into(),
        ));
    }
    let n = r.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(invalid(format!(
            "reason: at most {MAX_REASON_CHARS} characters, got {n}"
        )));
    }
    Ok(r.to_string())
}

/// The named identities' indexes (object id or UPN, case-insensitive), each once.
fn named_identities(scan: &LoadedScan, names: &[String]) -> Result<Vec<usize>, RemediateError> {
    if names.iter().all(|n| n.trim().is_empty()) {
        return Err(invalid(
            "identities: name at least one identity (object id or UPN) or a finding".into(),
        ));
    }
    let ids = &scan.scan.identities;
    // A large selection looks up through a map; a few names scan the list.
    let map: Option<HashMap<String, usize>> = (names.len() > 4).then(|| {
        let mut m = HashMap::with_capacity(ids.len() * 2);
        for (i, id) in ids.iter().enumerate().rev() {
            m.insert(id.id.0.to_ascii_lowercase(), i);
            if let Some(u) = &id.user_principal_name {
                m.insert(u.to_ascii_lowercase(), i);
            }
        }
        m
    });
    let find = |name: &str| match &map {
        Some(m) => m.get(&name.to_ascii_lowercase()).copied(),
        None => ids.iter().position(|id| matches(id, name)),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let i = find(name).ok_or_else(|| RemediateError::UnknownIdentity(name.to_string()))?;
        if seen.insert(i) {
            out.push(i);
        }
    }
    Ok(out)
}

fn matches(id: &Identity, name: &str) -> bool {
    id.id.0.eq_ignore_ascii_case(name)
        || id
            .user_principal_name
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(name))
}

/// Everyone the finding affects, each once.
fn finding_identities(scan: &LoadedScan, finding: &str) -> Result<Vec<usize>, RemediateError> {
    let f = scan
        .scan
        .findings
        .iter()
        .find(|f| f.id == finding)
        .ok_or_else(|| RemediateError::UnknownFinding(finding.to_string()))?;
    let at: HashMap<String, usize> = scan
        .scan
        .identities
        .iter()
        .enumerate()
        .map(|(i, id)| (id.id.0.to_ascii_lowercase(), i))
        .collect();
    let mut seen = HashSet::new();
    let out: Vec<usize> = f
        .affected_identities
        .iter()
        .filter_map(|g| at.get(&g.0.to_ascii_lowercase()).copied())
        .filter(|i| seen.insert(*i))
        .collect();
    if out.is_empty() {
        return Err(invalid(format!(
            "finding: {finding:?} affects no identity in the scan"
        )));
    }
    Ok(out)
}

/// The removal's targets, each once, each one of the identity's role
/// assignments / groups in the scan (the guardrails judge which may go).
fn checked_targets(req: &RemediationRequest, id: &Identity) -> Result<Vec<String>, RemediateError> {
    let kind = req.kind;
    let mut seen = HashSet::new();
    let targets: Vec<String> = req
        .targets
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && seen.insert(t.to_ascii_lowercase()))
        .collect();
    if targets.is_empty() {
        return Err(invalid(format!(
            "targets: {kind} needs at least one target (the {} to remove)",
            what(req)
        )));
    }
    // Each target as the scan spells it (a group id in any case is the group).
    targets
        .iter()
        .map(|t| {
            let known = if kind == crate::domain::ActionKind::RemoveRoleAssignment {
                id.roles
                    .iter()
                    .find(|r| r.assignment_id == *t)
                    .map(|r| r.assignment_id.clone())
            } else {
                id.groups
                    .iter()
                    .find(|g| g.id.0.eq_ignore_ascii_case(t))
                    .map(|g| g.id.0.to_string())
            };
            known.ok_or_else(|| {
                invalid(format!(
                    "targets: {t:?} is not one of the {} of {} in the scan",
                    what(req),
                    id.label()
                ))
            })
        })
        .collect()
}

fn what(req: &RemediationRequest) -> &'static str {
    if req.kind == crate::domain::ActionKind::RemoveRoleAssignment {
        "role assignment ids"
    } else {
        "group ids"
    }
}
