//! Guardrails: pure checks that refuse an action, always with a reason.

use std::collections::HashSet;

use crate::config::Protected;
use crate::domain::ActionKind;
use crate::scan::{AssignmentType, GLOBAL_ADMIN_TEMPLATE, Identity, Scan};

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

fn refuse(guard: &'static str, reason: String) -> Result<(), Refusal> {
    Err(Refusal { guard, reason })
}

/// Protected identities: never acted on.
pub fn check_protected(p: &Protected, id: &Identity) -> Result<(), Refusal> {
    let groups: Vec<(&str, &str)> = id
        .groups
        .iter()
        .map(|g| (g.id.0.as_str(), g.display_name.as_str()))
        .collect();
    check_protected_account(p, &id.id.0, &id.user_principal_name, &groups)
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

/// The per-action guardrails that depend only on the action and its identity.
pub fn check_action(kind: ActionKind, targets: &[String], id: &Identity) -> Result<(), Refusal> {
    match kind {
        ActionKind::DisableUser if !id.account_enabled => refuse(
            "already-disabled",
            format!("{} is already disabled in the scan", id.user_principal_name),
        ),
        ActionKind::RevokeSessions if id.is_guest() => refuse(
            "guest-revoke",
            format!(
                "{} is a guest: sessions are never revoked for guest users (their home tenant owns them)",
                id.user_principal_name
            ),
        ),
        ActionKind::EnforcePhishingResistantMfa if !id.is_global_admin() => refuse(
            "phishing-resistant-mfa-scope",
            format!(
                "{} holds no active Global Administrator role ({GLOBAL_ADMIN_TEMPLATE}); phishing-resistant MFA is enforced for Global Administrators only",
                id.user_principal_name
            ),
        ),
        ActionKind::RemoveRoleAssignment => {
            for t in targets {
                match id.roles.iter().find(|r| &r.assignment_id == t) {
                    None => {
                        return refuse(
                            "unknown-target",
                            format!("{} has no role assignment {t:?}", id.user_principal_name),
                        );
                    }
                    Some(r) if r.assignment_type != AssignmentType::Active => {
                        return refuse(
                            "unknown-target",
                            format!(
                                "role assignment {t:?} ({}) of {} is eligible, not active",
                                r.role_name, id.user_principal_name
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        }
        ActionKind::RemoveGroupMembership => {
            for t in targets {
                match id.groups.iter().find(|g| g.id.0.eq_ignore_ascii_case(t)) {
                    None => {
                        return refuse(
                            "unknown-target",
                            format!("{} is not a member of group {t:?}", id.user_principal_name),
                        );
                    }
                    Some(g) if g.dynamic => {
                        return refuse(
                            "dynamic-group",
                            format!(
                                "group {:?} has dynamic membership: its rule would add {} back; change the rule instead",
                                g.display_name, id.user_principal_name
                            ),
                        );
                    }
                    Some(g) if g.on_premises_synced == Some(true) => {
                        return refuse(
                            "synced-group",
                            format!(
                                "group {:?} is synced from on-premises AD: change its membership there",
                                g.display_name
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        }
        _ => Ok(()),
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
                .filter(|(_, i)| i.account_enabled && i.is_global_admin())
                .map(|(n, _)| n)
                .collect(),
        }
    }

    /// Refuses the action if it would leave no enabled Global Administrator;
    /// otherwise counts it as done.
    pub fn check(
        &mut self,
        idx: usize,
        id: &Identity,
        kind: ActionKind,
        targets: &[String],
    ) -> Result<(), Refusal> {
        let removes_ga = match kind {
            ActionKind::DisableUser => true,
            ActionKind::RemoveRoleAssignment => {
                // Removing these assignments leaves no other active GA assignment.
                !id.roles.iter().any(|r| {
                    r.assignment_type == AssignmentType::Active
                        && r.role_definition_id
                            .0
                            .eq_ignore_ascii_case(GLOBAL_ADMIN_TEMPLATE)
                        && !targets.contains(&r.assignment_id)
                })
            }
            _ => false,
        };
        if !removes_ga || !self.remaining.contains(&idx) {
            return Ok(());
        }
        if self.remaining.len() <= 1 {
            return refuse(
                "last-global-admin",
                format!(
                    "{} is the last enabled Global Administrator in the scan; the tenant would be left without one",
                    id.user_principal_name
                ),
            );
        }
        self.remaining.remove(&idx);
        Ok(())
    }
}
