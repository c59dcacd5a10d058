//! Guardrails: pure checks that refuse an action, always with a reason. What is
//! not per action lives here (protected identities, the last Global
//! Administrator); each action's own scan-side checks live in its module under
//! `actions` (`Remediation::check_scan`).

use std::collections::HashSet;

use crate::config::{Protected, ProtectedBy};
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
    match id.protected_by(p) {
        None => Ok(()),
        Some(by) => refuse("protected", protected_reason(id.label(), &by)),
    }
}

/// Protection of one account given its object id, UPN and groups (id, display
/// name): the live tenant's view just before a write.
pub fn check_protected_account(
    p: &Protected,
    id: &str,
    upn: &str,
    groups: &[(&str, &str)],
) -> Result<(), Refusal> {
    match p.covers(id, Some(upn), groups) {
        None => Ok(()),
        Some(by) => refuse("protected", protected_reason(upn, &by)),
    }
}

/// Why an account named `who` is protected, in words.
fn protected_reason(who: &str, by: &ProtectedBy) -> String {
    match by {
        ProtectedBy::Id => format!("{who} is a protected identity (protected.ids)"),
        ProtectedBy::Upn => format!("{who} is a protected identity (protected.upns)"),
        ProtectedBy::Group(name) => {
            format!("{who} is a member of protected group {name:?} (protected.groups)")
        }
        ProtectedBy::UpnUnknown => format!(
            "{who} has no UPN in the scan, so protected.upns cannot be ruled out (enrich the scan from Graph)"
        ),
    }
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
