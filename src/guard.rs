//! Guardrails: pure checks that refuse an action, always with a reason. What is
//! not per action lives here (protected identities, the last Global
//! Administrator); each action's own scan-side checks live in its module under
//! `actions` (`Remediation::check_scan`).

use std::collections::HashSet;

use crate::config::Protected;
use crate::scan::{Identity, Scan};

/// Why a guardrail refused an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which guardrail, a stable name for filtering.
    pub guard: &'static str,
    /// Why, for people.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.guard, self.reason)
    }
}

/// A refusal by `guard` for `reason`, as every guardrail returns it.
pub fn refuse(guard: &'static str, reason: String) -> Result<(), Refusal> {
    Err(Refusal { guard, reason })
}

/// Protected identities: never acted on.
pub fn check_protected(p: &Protected, id: &Identity) -> Result<(), Refusal> {
    let groups: Vec<(&str, &str)> = id
        .groups
        .iter()
        .map(|g| (g.id.0.as_str(), g.display_name.as_str()))
        .collect();
    match &id.user_principal_name {
        Some(upn) => check_protected_account(p, &id.id.0, upn, &groups),
        None => {
            check_protected_account(p, &id.id.0, &id.id.0, &groups)?;
            if p.upns.is_empty() {
                Ok(())
            } else {
                refuse(
                    "protected",
                    format!(
                        "{} has no UPN in the scan, so protected.upns cannot be ruled out (enrich the scan from Graph)",
                        id.id
                    ),
                )
            }
        }
    }
}

/// Protection of one account given its object id, UPN and groups (id, display
/// name): the scan's view at planning, the live tenant's just before a write.
pub fn check_protected_account(
    p: &Protected,
    id: &str,
    upn: &str,
    groups: &[(&str, &str)],
) -> Result<(), Refusal> {
    if p.ids.iter().any(|x| x.eq_ignore_ascii_case(id)) {
        return refuse(
            "protected",
            format!("{upn} is a protected identity (protected.ids)"),
        );
    }
    if p.upns.iter().any(|x| x.eq_ignore_ascii_case(upn)) {
        return refuse(
            "protected",
            format!("{upn} is a protected identity (protected.upns)"),
        );
    }
    if let Some((_, name)) = groups.iter().find(|(gid, name)| {
        p.groups
            .iter()
            .any(|x| x.eq_ignore_ascii_case(gid) || x.eq_ignore_ascii_case(name))
    }) {
        return refuse(
            "protected",
            format!("{upn} is a member of protected group {name:?} (protected.groups)"),
        );
    }
    Ok(())
}

/// Tracks the enabled, active Global Administrators left as the plan proceeds,
/// so that neither disabling nor role removal takes away the last one.
pub struct LastAdmin {
    remaining: HashSet<usize>,
}

impl LastAdmin {
    /// Starts from the scan's enabled identities with an active GA assignment.
    pub fn new(scan: &Scan) -> LastAdmin {
        LastAdmin {
            remaining: scan
                .identities
                .iter()
                .enumerate()
                .filter(|(_, i)| i.is_enabled() && i.is_global_admin())
                .map(|(n, _)| n)
                .collect(),
        }
    }

    /// Refuses an action on the identity `idx` that takes away its Global
    /// Administrator role (`removes_ga`, as its action says) if it would leave
    /// no enabled Global Administrator; otherwise counts it as done.
    pub fn check(&mut self, idx: usize, id: &Identity, removes_ga: bool) -> Result<(), Refusal> {
        if !removes_ga || !self.remaining.contains(&idx) {
            return Ok(());
        }
        if self.remaining.len() <= 1 {
            return refuse(
                "last-global-admin",
                format!(
                    "{} is the last enabled Global Administrator in the scan; the tenant would be left without one",
                    id.label()
                ),
            );
        }
        self.remaining.remove(&idx);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod test_identities;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_identities::{group, guid, identity, refusal};
    use super::*;

    #[test]
    fn protected_identities_are_matched_by_id_upn_and_group_ignoring_case() {
        let p: Protected = toml::from_str(&format!(
            "ids = [\"{}\"]\nupns = [\"BG2@T.COM\"]\ngroups = [\"break glass\"]",
            guid(1).to_uppercase()
        ))
        .unwrap();
        assert_eq!(
            refusal(check_protected(&p, &identity(1, "bg1@t.com", json!({})))),
            (
                "protected",
                "bg1@t.com is a protected identity (protected.ids)".into()
            )
        );
        assert_eq!(
            refusal(check_protected(&p, &identity(2, "bg2@t.com", json!({})))),
            (
                "protected",
                "bg2@t.com is a protected identity (protected.upns)".into()
            )
        );
        let member = identity(
            3,
            "bg3@t.com",
            json!({ "groups": [group(9, "Break Glass", false, false)] }),
        );
        assert_eq!(
            refusal(check_protected(&p, &member)),
            (
                "protected",
                "bg3@t.com is a member of protected group \"Break Glass\" (protected.groups)"
                    .into()
            )
        );
        assert_eq!(
            check_protected(&p, &identity(4, "other@t.com", json!({}))),
            Ok(())
        );
    }

    #[test]
    fn a_refusal_reads_guard_then_reason() {
        let r = Refusal {
            guard: "dynamic-group",
            reason: "why".into(),
        };
        assert_eq!(r.to_string(), "dynamic-group: why");
    }
}
