//! What undo (and settling after a crash) needs to know about a write: the
//! snapshot committed with each write's intent. One type for the writers and
//! the readers, in the JSON shape history has always kept.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a Conditional Access action put the user under its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaMode {
    /// The user was added to the security group the policy includes.
    Group,
    /// The user was listed in the policy's `includeUsers`.
    Policy,
}

/// The undo snapshot of one action's write; each action fills its own fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Disable: the account was enabled before.
    #[serde(
        rename = "accountEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub account_enabled: Option<bool>,
    /// Role removal: the assignments removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<Vec<RemovedAssignment>>,
    /// Group removal: the groups the user was removed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// MFA: group or users mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<CaMode>,
    /// MFA, group mode: the policy's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// MFA, users mode: where the tenant keeps the policy id (a policy being created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_key: Option<String>,
    /// MFA, users mode: the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Undo: the action undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<i64>,
}

impl Snapshot {
    /// Reads a snapshot from an intent's `snapshot` value (`null` is empty).
    pub fn parse(v: &Value) -> Result<Snapshot, String> {
        if v.is_null() {
            return Ok(Snapshot::default());
        }
        serde_json::from_value(v.clone()).map_err(|e| format!("its snapshot is unreadable: {e}"))
    }

    /// The snapshot of a users-mode MFA write.
    pub fn policy(policy_key: Option<&str>, policy_id: Option<&str>) -> Snapshot {
        Snapshot {
            mode: Some(CaMode::Policy),
            policy_key: policy_key.map(str::to_string),
            policy_id: policy_id.map(str::to_string),
            ..Snapshot::default()
        }
    }
}

/// A removed role assignment as kept in the intent's snapshot, so that undo can
/// restore the same kind: direct, or PIM (assigned or activated) with its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedAssignment {
    /// The assignment's id.
    pub id: String,
    /// The user.
    pub principal_id: String,
    /// The role.
    pub role_definition_id: String,
    /// The scope.
    pub directory_scope_id: String,
    /// Managed by PIM (removed with an `adminRemove` schedule request).
    #[serde(default)]
    pub pim: bool,
    /// PIM: `Assigned` (by an administrator) or `Activated` (from an eligibility).
    #[serde(default)]
    pub assignment_type: Option<String>,
    /// PIM: when the schedule started.
    #[serde(default)]
    pub start_date_time: Option<String>,
    /// PIM: when it ends; `None` for no expiration.
    #[serde(default)]
    pub end_date_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_json_history_kept_reads_back_and_writes_the_same() {
        for v in [
            json!({"accountEnabled": true}),
            json!({"groups": ["g1", "g2"]}),
            json!({"mode": "group", "group_id": "g"}),
            json!({"mode": "policy", "policy_key": "ca_policy:enforce_mfa"}),
            json!({"mode": "policy", "policy_key": "k", "policy_id": "p"}),
            json!({"mode": "policy", "policy_id": "p"}),
            json!({"undo_of": 7}),
            json!({"assignments": [{"id": "a", "principalId": "u", "roleDefinitionId": "r",
                "directoryScopeId": "/", "pim": true, "assignmentType": "Assigned",
                "startDateTime": "2024-01-01T00:00:00Z", "endDateTime": null}]}),
        ] {
            let s = Snapshot::parse(&v);
            assert!(s.is_ok(), "{v}");
            let back = s.map(|s| serde_json::to_value(s).ok()).ok().flatten();
            assert_eq!(back, Some(v));
        }
        assert_eq!(Snapshot::parse(&Value::Null), Ok(Snapshot::default()));
        assert!(Snapshot::parse(&json!({"assignments": [{"id": 3}]})).is_err());
    }
}
