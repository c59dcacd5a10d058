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
    /// Every action, in a stable order.
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

    /// Whether many identities' actions of this kind may be approved in bulk.
    /// The removal actions are one identity per action and per approval.
    pub fn is_bulk(self) -> bool {
        !self.needs_targets()
    }

    /// Whether the action names the role assignments or groups it removes.
    pub fn needs_targets(self) -> bool {
        matches!(
            self,
            ActionKind::RemoveRoleAssignment | ActionKind::RemoveGroupMembership
        )
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
