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
        ActionKind::RemoveRoleAssignment => check_role_targets(targets, id),
        ActionKind::RemoveGroupMembership => check_group_targets(targets, id),
        ActionKind::DisableUser
        | ActionKind::RevokeSessions
        | ActionKind::EnforceMfa
        | ActionKind::EnforcePhishingResistantMfa => Ok(()),
    }
}

/// Role assignments to remove must be active assignments the identity holds.
fn check_role_targets(targets: &[String], id: &Identity) -> Result<(), Refusal> {
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

/// Groups to leave must be groups the identity is in, neither dynamic nor synced
/// from on-premises (their membership is decided elsewhere).
fn check_group_targets(targets: &[String], id: &Identity) -> Result<(), Refusal> {
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
            ActionKind::RevokeSessions
            | ActionKind::EnforceMfa
            | ActionKind::EnforcePhishingResistantMfa
            | ActionKind::RemoveGroupMembership => false,
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn guid(n: u32) -> String {
        format!("00000000-0000-0000-0000-{n:012x}")
    }

    /// An enabled member; `extra` overrides its fields.
    fn identity(n: u32, upn: &str, extra: Value) -> Identity {
        serde_json::from_value(identity_json(n, upn, extra)).unwrap()
    }

    fn identity_json(n: u32, upn: &str, extra: Value) -> Value {
        let mut v = json!({
            "id": guid(n), "user_principal_name": upn, "display_name": upn,
            "user_type": "Member", "account_enabled": true, "last_sign_in": null,
            "roles": [], "groups": []
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    fn role(assignment: &str, template: &str, kind: &str) -> Value {
        json!({
            "assignment_id": assignment, "role_definition_id": template,
            "role_name": "Global Administrator", "directory_scope_id": "/",
            "assignment_type": kind
        })
    }

    fn ga(n: u32, upn: &str) -> Identity {
        serde_json::from_value(ga_json(n, upn)).unwrap()
    }

    fn ga_json(n: u32, upn: &str) -> Value {
        identity_json(
            n,
            upn,
            json!({ "roles": [role(&format!("ga-{n}"), GLOBAL_ADMIN_TEMPLATE, "active")] }),
        )
    }

    fn group(n: u32, name: &str, dynamic: bool, synced: bool) -> Value {
        json!({ "id": guid(n), "display_name": name, "dynamic": dynamic, "on_premises_synced": synced })
    }

    fn refusal(r: Result<(), Refusal>) -> (&'static str, String) {
        let e = r.unwrap_err();
        (e.guard, e.reason)
    }

    #[test]
    fn sessions_of_a_guest_are_never_revoked() {
        let guest = identity(1, "ext@x.com", json!({ "user_type": "Guest" }));
        assert_eq!(
            refusal(check_action(ActionKind::RevokeSessions, &[], &guest)),
            (
                "guest-revoke",
                "ext@x.com is a guest: sessions are never revoked for guest users (their home tenant owns them)".into()
            )
        );
        let ext = identity(2, "b_x.com#EXT#@t.com", json!({}));
        assert_eq!(
            refusal(check_action(ActionKind::RevokeSessions, &[], &ext)).0,
            "guest-revoke"
        );
        let member = identity(3, "m@t.com", json!({}));
        assert_eq!(
            check_action(ActionKind::RevokeSessions, &[], &member),
            Ok(())
        );
    }

    #[test]
    fn phishing_resistant_mfa_is_for_active_global_administrators_only() {
        let kind = ActionKind::EnforcePhishingResistantMfa;
        let eligible = identity(
            1,
            "e@t.com",
            json!({ "roles": [role("a1", GLOBAL_ADMIN_TEMPLATE, "eligible")] }),
        );
        assert_eq!(
            refusal(check_action(kind, &[], &eligible)),
            (
                "phishing-resistant-mfa-scope",
                format!(
                    "e@t.com holds no active Global Administrator role ({GLOBAL_ADMIN_TEMPLATE}); phishing-resistant MFA is enforced for Global Administrators only"
                )
            )
        );
        assert_eq!(check_action(kind, &[], &ga(2, "ga@t.com")), Ok(()));
    }

    #[test]
    fn removal_from_a_dynamic_group_is_refused() {
        let id = identity(
            1,
            "u@t.com",
            json!({ "groups": [group(50, "All Staff", true, false)] }),
        );
        assert_eq!(
            refusal(check_action(
                ActionKind::RemoveGroupMembership,
                &[guid(50).to_uppercase()],
                &id
            )),
            (
                "dynamic-group",
                "group \"All Staff\" has dynamic membership: its rule would add u@t.com back; change the rule instead".into()
            )
        );
    }

    #[test]
    fn removal_from_a_synced_or_unknown_group_is_refused() {
        let id = identity(
            1,
            "u@t.com",
            json!({ "groups": [group(50, "AD Admins", false, true), group(51, "Cloud", false, false)] }),
        );
        let remove = |t: String| check_action(ActionKind::RemoveGroupMembership, &[t], &id);
        assert_eq!(
            refusal(remove(guid(50))),
            (
                "synced-group",
                "group \"AD Admins\" is synced from on-premises AD: change its membership there"
                    .into()
            )
        );
        assert_eq!(
            refusal(remove(guid(52))),
            (
                "unknown-target",
                format!("u@t.com is not a member of group {:?}", guid(52))
            )
        );
        assert_eq!(remove(guid(51)), Ok(()));
    }

    #[test]
    fn only_active_role_assignments_the_identity_holds_are_removed() {
        let id = identity(
            1,
            "u@t.com",
            json!({ "roles": [role("act", GLOBAL_ADMIN_TEMPLATE, "active"), role("elig", GLOBAL_ADMIN_TEMPLATE, "eligible")] }),
        );
        let remove = |t: &str| check_action(ActionKind::RemoveRoleAssignment, &[t.into()], &id);
        assert_eq!(
            refusal(remove("elig")),
            (
                "unknown-target",
                "role assignment \"elig\" (Global Administrator) of u@t.com is eligible, not active"
                    .into()
            )
        );
        assert_eq!(
            refusal(remove("nope")),
            (
                "unknown-target",
                "u@t.com has no role assignment \"nope\"".into()
            )
        );
        assert_eq!(remove("act"), Ok(()));
    }

    #[test]
    fn a_disabled_account_is_not_disabled_again() {
        let id = identity(1, "off@t.com", json!({ "account_enabled": false }));
        assert_eq!(
            refusal(check_action(ActionKind::DisableUser, &[], &id)),
            (
                "already-disabled",
                "off@t.com is already disabled in the scan".into()
            )
        );
    }

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

    fn scan_of(identities: Vec<Value>) -> Scan {
        serde_json::from_value(json!({
            "schema_version": 1, "tenant_id": guid(999), "tenant_name": "T",
            "scanned_at": "2026-11-20T00:00:00Z", "identities": identities, "findings": []
        }))
        .unwrap()
    }

    #[test]
    fn the_last_enabled_global_administrator_is_kept() {
        let scan = scan_of(vec![ga_json(1, "a@t.com"), ga_json(2, "b@t.com")]);
        let mut last = LastAdmin::new(&scan);
        let (a, b) = (&scan.identities[0], &scan.identities[1]);
        assert_eq!(last.check(0, a, ActionKind::DisableUser, &[]), Ok(()));
        // Counted once: acting on the same identity again is still allowed.
        assert_eq!(last.check(0, a, ActionKind::EnforceMfa, &[]), Ok(()));
        assert_eq!(
            refusal(last.check(1, b, ActionKind::RemoveRoleAssignment, &["ga-2".into()])),
            (
                "last-global-admin",
                "b@t.com is the last enabled Global Administrator in the scan; the tenant would be left without one".into()
            )
        );
        assert_eq!(
            refusal(last.check(1, b, ActionKind::DisableUser, &[])).0,
            "last-global-admin"
        );
    }

    #[test]
    fn removing_one_of_two_global_administrator_assignments_keeps_the_admin() {
        let both = identity_json(
            1,
            "a@t.com",
            json!({ "roles": [role("x", GLOBAL_ADMIN_TEMPLATE, "active"), role("y", GLOBAL_ADMIN_TEMPLATE, "active")] }),
        );
        let scan = scan_of(vec![both]);
        let mut last = LastAdmin::new(&scan);
        let id = &scan.identities[0];
        assert_eq!(
            last.check(0, id, ActionKind::RemoveRoleAssignment, &["x".into()]),
            Ok(())
        );
        assert_eq!(
            refusal(last.check(
                0,
                id,
                ActionKind::RemoveRoleAssignment,
                &["x".into(), "y".into()]
            ))
            .0,
            "last-global-admin"
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
