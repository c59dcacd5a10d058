//! The built-in posture checks: from the tenant as Graph describes it
//! ([`TenantData`]) to a scan v1 ([`Scan`]) with identities and findings.
//!
//! Each check has a stable finding id (`ER-...`, listed in [`CHECKS`]) that
//! rules name. A check whose data could not be read (a licence or permission
//! gap) is listed in the scan's `not_evaluated` with the reason, never reported
//! clean. Protected identities (break-glass accounts) are never listed as affected.

mod checks;
mod graph_data;
mod identities;
mod roles;
pub use roles::is_highly_privileged;
#[cfg(test)]
mod test_data;

pub use graph_data::{
    DirectoryRoleAssignment, Expiration, Gap, GraphGroup, GraphUser, Part, Principal,
    RegistrationDetail, RiskyUser, RoleDefinition, RoleSchedule, ScheduleInfo, SignInActivity,
    TenantData,
};

use super::{Guid, Scan, Severity};
use crate::config::Protected;

/// What the checks are told besides the tenant's data.
#[derive(Debug, Clone)]
pub struct PostureSettings {
    /// Accounts with no successful sign-in for this many days are stale.
    pub stale_days: u32,
    /// Groups (id or display name) counted as privileged besides role-assignable
    /// groups and groups holding a directory role.
    pub privileged_groups: Vec<String>,
    /// Never listed as affected.
    pub protected: Protected,
    /// Written as the scan's `scanner`.
    pub scanner: String,
}

/// The data a check reads; a gap in any of them means "not evaluated".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// `signInActivity` on users.
    SignIn,
    /// MFA registration details.
    Registration,
    /// Risky users.
    Risk,
    /// Active role assignments and role names.
    Roles,
    /// PIM schedules of active assignments.
    AssignmentSchedules,
    /// Groups and their members.
    Groups,
}

/// One posture check: what it reports, and the data it needs.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The stable finding id rules name.
    pub id: &'static str,
    /// Short title.
    pub title: &'static str,
    /// Severity.
    pub severity: Severity,
    /// Category.
    pub category: &'static str,
    /// What to do about it.
    pub recommendation: &'static str,
    /// Where it is documented.
    pub documentation: &'static str,
    /// The data it reads.
    pub needs: &'static [Needs],
}

/// Users without MFA registered.
pub const MFA_NOT_REGISTERED: &str = "ER-MFA-001";
/// Privileged users without a phishing-resistant method.
pub const PRIV_NO_PHISHING_RESISTANT: &str = "ER-PRIV-002";
/// Enabled accounts stale for N days.
pub const STALE_ACCOUNTS: &str = "ER-STALE-003";
/// Guests holding directory roles.
pub const GUEST_WITH_ROLES: &str = "ER-GUEST-004";
/// High-risk users not remediated.
pub const HIGH_RISK_USERS: &str = "ER-RISK-005";
/// Permanent active assignments of highly privileged roles.
pub const PERMANENT_PRIVILEGED: &str = "ER-PRIV-006";
/// Stale members of privileged groups.
pub const STALE_PRIVILEGED_GROUP_MEMBERS: &str = "ER-GRP-007";
/// Stale privileged accounts.
pub const STALE_PRIVILEGED: &str = "ER-PRIV-008";
/// On-premises-synced privileged accounts.
pub const SYNCED_PRIVILEGED: &str = "ER-PRIV-009";
/// Global Administrator count outside 2..8.
pub const GLOBAL_ADMIN_COUNT: &str = "ER-GA-010";

/// Every check the built-in scan runs, in report order.
pub const CHECKS: &[Check] = &[
    Check {
        id: MFA_NOT_REGISTERED,
        title: "Users without MFA registered",
        severity: Severity::High,
        category: "identity-protection",
        recommendation: "Require MFA registration (a Conditional Access policy requiring MFA, or the registration campaign) for every enabled member.",
        documentation: "https://learn.microsoft.com/entra/identity/authentication/howto-mfa-getstarted",
        needs: &[Needs::Registration],
    },
    Check {
        id: PRIV_NO_PHISHING_RESISTANT,
        title: "Privileged users without a phishing-resistant method",
        severity: Severity::Critical,
        category: "privileged-access",
        recommendation: "Register a passkey (FIDO2), Windows Hello for Business or certificate-based authentication for every privileged account, then require the phishing-resistant authentication strength.",
        documentation: "https://learn.microsoft.com/entra/identity/authentication/how-to-plan-prerequisites-phishing-resistant-passwordless-authentication",
        needs: &[Needs::Registration, Needs::Roles],
    },
    Check {
        id: STALE_ACCOUNTS,
        title: "Stale enabled accounts",
        severity: Severity::Medium,
        category: "identity-hygiene",
        recommendation: "Disable accounts with no successful sign-in within the stale period (and accounts never used since creation), then delete them after the retention period.",
        documentation: "https://learn.microsoft.com/entra/identity/monitoring-health/howto-manage-inactive-user-accounts",
        needs: &[Needs::SignIn],
    },
    Check {
        id: GUEST_WITH_ROLES,
        title: "Guest users with directory roles",
        severity: Severity::High,
        category: "external-identities",
        recommendation: "Remove directory roles from guests; give external administrators a member account of this tenant.",
        documentation: "https://learn.microsoft.com/entra/identity/role-based-access-control/best-practices",
        needs: &[Needs::Roles],
    },
    Check {
        id: HIGH_RISK_USERS,
        title: "High-risk users not remediated",
        severity: Severity::Critical,
        category: "identity-protection",
        recommendation: "Revoke the sessions of high-risk users, reset their credentials, and require a secure password change through a risk-based Conditional Access policy.",
        documentation: "https://learn.microsoft.com/entra/id-protection/howto-identity-protection-remediate-unblock",
        needs: &[Needs::Risk],
    },
    Check {
        id: PERMANENT_PRIVILEGED,
        title: "Permanent active assignments of highly privileged roles",
        severity: Severity::High,
        category: "privileged-access",
        recommendation: "Replace standing assignments of highly privileged roles with PIM-eligible ones (just-in-time, time-bound activation); keep only the break-glass accounts permanent.",
        documentation: "https://learn.microsoft.com/entra/id-governance/privileged-identity-management/pim-deployment-plan",
        needs: &[Needs::Roles, Needs::AssignmentSchedules],
    },
    Check {
        id: STALE_PRIVILEGED_GROUP_MEMBERS,
        title: "Stale members of privileged groups",
        severity: Severity::Medium,
        category: "privileged-access",
        recommendation: "Remove stale members from role-assignable and other privileged groups.",
        documentation: "https://learn.microsoft.com/entra/identity/role-based-access-control/groups-concept",
        needs: &[Needs::SignIn, Needs::Groups, Needs::Roles],
    },
    Check {
        id: STALE_PRIVILEGED,
        title: "Stale privileged accounts",
        severity: Severity::High,
        category: "privileged-access",
        recommendation: "Remove the roles of privileged accounts nobody uses, or disable the accounts.",
        documentation: "https://learn.microsoft.com/entra/identity/role-based-access-control/best-practices",
        needs: &[Needs::SignIn, Needs::Roles],
    },
    Check {
        id: SYNCED_PRIVILEGED,
        title: "Privileged accounts synchronised from on-premises",
        severity: Severity::High,
        category: "privileged-access",
        recommendation: "Use cloud-only accounts for privileged roles, so that a compromise of on-premises AD does not reach the tenant.",
        documentation: "https://learn.microsoft.com/entra/architecture/protect-m365-from-on-premises-attacks",
        needs: &[Needs::Roles],
    },
    Check {
        id: GLOBAL_ADMIN_COUNT,
        title: "Global Administrator count outside 2 to 8",
        severity: Severity::High,
        category: "privileged-access",
        recommendation: "Keep at least two and at most eight Global Administrators (break-glass accounts included); use least-privileged roles for everyone else.",
        documentation: "https://learn.microsoft.com/entra/identity/role-based-access-control/best-practices#5-limit-the-number-of-global-administrators-to-less-than-5",
        needs: &[Needs::Roles],
    },
];

/// The built scan, and what the caller reports besides it.
#[derive(Debug)]
pub struct Built {
    /// The scan v1, ready to write.
    pub scan: Scan,
    /// What scan v1 could not hold and was left out (users, groups or role
    /// assignments whose id is not a GUID, users listed twice), one line each.
    pub skipped: Vec<String>,
    /// The ids of the checks that ran, in report order: one here without a
    /// finding in the scan ran clean (one in `not_evaluated` did not run).
    pub evaluated: Vec<&'static str>,
}

/// Builds the scan: identities from users (with their roles, groups, MFA,
/// risk and sign-in), then each check's finding or its `not_evaluated` entry.
pub fn build_scan(data: TenantData, settings: &PostureSettings) -> Built {
    let people = identities::build(&data);
    let outcome = checks::run(&data, &people, settings);
    let tenant_name = if data.tenant_name.is_empty() {
        data.tenant_id.clone()
    } else {
        data.tenant_name.clone()
    };
    Built {
        scan: Scan {
            schema_version: 1,
            tenant_id: Guid::from(data.tenant_id.as_str()),
            tenant_name,
            scanned_at: data.read_at,
            identities: people.identities,
            findings: outcome.findings,
            scanner: Some(settings.scanner.clone()),
            not_evaluated: outcome.not_evaluated,
        },
        skipped: people.skipped,
        evaluated: outcome.evaluated,
    }
}
