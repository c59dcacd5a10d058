//! The tenant as Microsoft Graph v1.0 describes it: the entities the posture
//! scan reads, typed from Graph's JSON. The built-in scan fills them through
//! the Graph client (`collect`); the Zero Trust Assessment importer fills them
//! from the raw Graph pages of its export. Both then build the scan with
//! [`super::build_scan`], so one piece of code reads Graph's shapes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// `GET /users?$select=id,userPrincipalName,displayName,userType,accountEnabled,onPremisesSyncEnabled,createdDateTime,signInActivity`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    /// Object id.
    pub id: String,
    /// UPN.
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `Member` or `Guest`.
    #[serde(default)]
    pub user_type: Option<String>,
    /// Sign-in allowed.
    #[serde(default)]
    pub account_enabled: Option<bool>,
    /// True when synchronised from on-premises AD (null for cloud-only).
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_date_time: Option<String>,
    /// Needs Entra ID P1 and `AuditLog.Read.All`.
    #[serde(default)]
    pub sign_in_activity: Option<SignInActivity>,
}

/// A user's `signInActivity` (RFC 3339 times, null when none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignInActivity {
    /// Last interactive sign-in attempt (successful or not).
    #[serde(default)]
    pub last_sign_in_date_time: Option<String>,
    /// Last non-interactive sign-in attempt.
    #[serde(default)]
    pub last_non_interactive_sign_in_date_time: Option<String>,
    /// Last successful sign-in (interactive or not); Graph fills it since December 2023.
    #[serde(default)]
    pub last_successful_sign_in_date_time: Option<String>,
}

/// `GET /reports/authenticationMethods/userRegistrationDetails` (one per user).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationDetail {
    /// The user's object id.
    pub id: String,
    /// An MFA-capable method is registered.
    #[serde(default)]
    pub is_mfa_registered: Option<bool>,
    /// Graph's own view of whether the user holds an admin role.
    #[serde(default)]
    pub is_admin: Option<bool>,
    /// Registered methods, Graph's names (`fido2SecurityKey`, `passKeyDeviceBound`, ...).
    #[serde(default)]
    pub methods_registered: Vec<String>,
}

/// `GET /identityProtection/riskyUsers` (only users with a risk record).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskyUser {
    /// The user's object id.
    pub id: String,
    /// `low`, `medium`, `high`, `hidden`, `none`.
    #[serde(default)]
    pub risk_level: Option<String>,
    /// `none`, `confirmedSafe`, `remediated`, `dismissed`, `atRisk`, `confirmedCompromised`.
    #[serde(default)]
    pub risk_state: Option<String>,
    /// Why the risk was last changed.
    #[serde(default)]
    pub risk_detail: Option<String>,
}

/// `GET /roleManagement/directory/roleDefinitions`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// The definition id (equal to the template id for built-in roles).
    pub id: String,
    /// Name people know the role by.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The template id, the same in every tenant.
    #[serde(default)]
    pub template_id: Option<String>,
}

/// `GET /roleManagement/directory/roleAssignments?$expand=principal` (active).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryRoleAssignment {
    /// The assignment id (what removal deletes).
    pub id: String,
    /// The user, group or service principal holding it.
    pub principal_id: String,
    /// The role definition id.
    pub role_definition_id: String,
    /// `/` for the whole directory.
    #[serde(default)]
    pub directory_scope_id: Option<String>,
    /// The expanded principal, telling users from groups.
    #[serde(default)]
    pub principal: Option<Principal>,
}

/// The `principal` of an expanded role assignment.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Principal {
    /// `#microsoft.graph.user`, `#microsoft.graph.group`, `#microsoft.graph.servicePrincipal`.
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    /// Object id.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
}

impl Principal {
    /// True when the principal is a group.
    pub fn is_group(&self) -> bool {
        self.odata_type.as_deref() == Some("#microsoft.graph.group")
    }
}

/// `roleEligibilitySchedules` and `roleAssignmentSchedules` (PIM; needs P2).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleSchedule {
    /// The schedule id.
    pub id: String,
    /// The user or group it is for.
    pub principal_id: String,
    /// The role definition id.
    pub role_definition_id: String,
    /// `/` for the whole directory.
    #[serde(default)]
    pub directory_scope_id: Option<String>,
    /// `Direct`, `Group` or `Inherited`.
    #[serde(default)]
    pub member_type: Option<String>,
    /// Assignment schedules: `Assigned` or `Activated`.
    #[serde(default)]
    pub assignment_type: Option<String>,
    /// When it starts and ends.
    #[serde(default)]
    pub schedule_info: Option<ScheduleInfo>,
}

impl RoleSchedule {
    /// True when the schedule never expires (`noExpiration`); None when Graph did not say.
    pub fn never_expires(&self) -> Option<bool> {
        let t = self
            .schedule_info
            .as_ref()?
            .expiration
            .as_ref()?
            .kind
            .as_deref()?;
        Some(t.eq_ignore_ascii_case("noExpiration"))
    }
}

/// A PIM schedule's `scheduleInfo`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleInfo {
    /// RFC 3339 start.
    #[serde(default)]
    pub start_date_time: Option<String>,
    /// How it ends.
    #[serde(default)]
    pub expiration: Option<Expiration>,
}

/// A PIM schedule's `expiration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expiration {
    /// `noExpiration`, `afterDateTime` or `afterDuration`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// RFC 3339 end, for `afterDateTime`.
    #[serde(default)]
    pub end_date_time: Option<String>,
}

/// `GET /groups?$select=id,displayName,groupTypes,membershipRule,onPremisesSyncEnabled,isAssignableToRole,mailEnabled,securityEnabled`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphGroup {
    /// Object id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Contains `DynamicMembership` for dynamic groups, `Unified` for Microsoft 365 groups.
    #[serde(default)]
    pub group_types: Vec<String>,
    /// The dynamic membership rule.
    #[serde(default)]
    pub membership_rule: Option<String>,
    /// Synchronised from on-premises AD.
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    /// Role-assignable (can hold directory roles).
    #[serde(default)]
    pub is_assignable_to_role: Option<bool>,
    /// Mail-enabled.
    #[serde(default)]
    pub mail_enabled: Option<bool>,
    /// Security-enabled.
    #[serde(default)]
    pub security_enabled: Option<bool>,
}

impl GraphGroup {
    /// Membership computed by a rule: members cannot be removed by hand.
    pub fn is_dynamic(&self) -> bool {
        self.group_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case("DynamicMembership"))
    }
}

/// Why a part of the tenant could not be read: the checks that need it are
/// recorded as not evaluated, never as clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// What could not be read, e.g. `sign-in activity`.
    pub data: &'static str,
    /// Why, for people: the licence or permission missing, Graph's error.
    pub reason: String,
}

/// One part of the tenant: read, or the gap that kept it from being read.
pub type Part<T> = Result<T, Gap>;

/// Everything the posture checks look at, as read from one tenant.
#[derive(Debug, Clone)]
pub struct TenantData {
    /// The tenant id.
    pub tenant_id: String,
    /// The organisation's display name.
    pub tenant_name: String,
    /// When the reading finished: the scan's `scanned_at`.
    pub read_at: DateTime<Utc>,
    /// Every user (read or the scan is not written at all).
    pub users: Vec<GraphUser>,
    /// Whether `signInActivity` was read with the users (P1 and `AuditLog.Read.All`).
    pub sign_in: Part<()>,
    /// MFA registration (P1 and `AuditLog.Read.All`).
    pub registration: Part<Vec<RegistrationDetail>>,
    /// Identity Protection's risky users (P2).
    pub risky_users: Part<Vec<RiskyUser>>,
    /// Role names.
    pub role_definitions: Part<Vec<RoleDefinition>>,
    /// Active directory role assignments, principals expanded.
    pub role_assignments: Part<Vec<DirectoryRoleAssignment>>,
    /// PIM eligibility (P2).
    pub eligibility: Part<Vec<RoleSchedule>>,
    /// PIM schedules of active assignments (P2): which are permanent.
    pub assignment_schedules: Part<Vec<RoleSchedule>>,
    /// Groups.
    pub groups: Part<Vec<GraphGroup>>,
    /// Direct user members of each group read, by group id.
    pub members: Part<HashMap<String, Vec<String>>>,
}
