//! The six remediation actions and their fixed properties.

use serde::{Deserialize, Serialize};

/// A remediation action, as named in rules, config and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Set `accountEnabled` to false.
    DisableUser,
    /// Revoke all refresh tokens and session cookies.
    RevokeSessions,
    /// Add the user to the MFA Conditional Access policy.
    EnforceMfa,
    /// Add the user to the phishing-resistant MFA Conditional Access policy.
    EnforcePhishingResistantMfa,
    /// Delete chosen active role assignments of one identity.
    RemoveRoleAssignment,
    /// Remove one identity from chosen groups.
    RemoveGroupMembership,
}

impl ActionKind {
    /// Every action, in a stable order (a new kind is added here too: the
    /// round-trip test below and `parse` go through this list).
    pub const ALL: [ActionKind; 6] = [
        ActionKind::DisableUser,
        ActionKind::RevokeSessions,
        ActionKind::EnforceMfa,
        ActionKind::EnforcePhishingResistantMfa,
        ActionKind::RemoveRoleAssignment,
        ActionKind::RemoveGroupMembership,
    ];

    /// The name used in rules, config and history.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::DisableUser => "disable_user",
            ActionKind::RevokeSessions => "revoke_sessions",
            ActionKind::EnforceMfa => "enforce_mfa",
            ActionKind::EnforcePhishingResistantMfa => "enforce_phishing_resistant_mfa",
            ActionKind::RemoveRoleAssignment => "remove_role_assignment",
            ActionKind::RemoveGroupMembership => "remove_group_membership",
        }
    }

    /// Parses an action name.
    pub fn parse(s: &str) -> Option<ActionKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What executing the action changes in the tenant, for people confirming a
    /// request (the console, `remediate`, the API's preview).
    pub fn effect(self) -> &'static str {
        match self {
            ActionKind::DisableUser => {
                "sets accountEnabled to false: the user can no longer sign in"
            }
            ActionKind::RevokeSessions => {
                "revokes the user's refresh tokens and session cookies: every app asks to sign in again"
            }
            ActionKind::EnforceMfa => {
                "adds the user to the group of the MFA Conditional Access policy: sign-ins need MFA"
            }
            ActionKind::EnforcePhishingResistantMfa => {
                "adds the user to the group of the phishing-resistant MFA Conditional Access policy"
            }
            ActionKind::RemoveRoleAssignment => {
                "deletes each chosen directory role assignment of the user"
            }
            ActionKind::RemoveGroupMembership => "removes the user from each chosen group",
        }
    }

    /// Whether many identities' actions of this kind may be approved in bulk.
    /// The removal actions are one identity per action and per approval.
    pub fn is_bulk(self) -> bool {
        !self.needs_targets()
    }

    /// Whether the action names the role assignments or groups it removes.
    pub fn needs_targets(self) -> bool {
        match self {
            ActionKind::RemoveRoleAssignment | ActionKind::RemoveGroupMembership => true,
            ActionKind::DisableUser
            | ActionKind::RevokeSessions
            | ActionKind::EnforceMfa
            | ActionKind::EnforcePhishingResistantMfa => false,
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ActionKind;

    #[test]
    fn every_kind_is_listed_once_and_its_name_parses_back() {
        let mut names: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
        for k in ActionKind::ALL {
            assert_eq!(ActionKind::parse(k.as_str()), Some(k));
            assert_eq!(k.is_bulk(), !k.needs_targets());
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ActionKind::ALL.len());
        assert_eq!(ActionKind::parse("undo"), None);
        assert_eq!(ActionKind::parse("Disable_User"), None);
    }
}
