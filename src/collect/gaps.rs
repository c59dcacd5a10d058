//! Why a part of the tenant could not be read, in words an operator can act
//! on: the licence the tenant needs, the permission the app needs, or Graph's
//! own error.

use crate::graph::paging::ListingError;
use crate::scan::posture::Gap;

/// The parts of the tenant the scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Data {
    /// Users.
    Users,
    /// Users' `signInActivity`.
    SignIn,
    /// Authentication methods registration details.
    Registration,
    /// Identity Protection's risky users.
    Risk,
    /// Role definitions and active assignments.
    Roles,
    /// PIM eligibility schedules.
    Eligibility,
    /// PIM schedules of active assignments.
    AssignmentSchedules,
    /// Groups and members.
    Groups,
}

impl Data {
    /// What it is called in a gap (`Gap::data`).
    pub(super) fn noun(self) -> &'static str {
        match self {
            Data::Users => "users",
            Data::SignIn => "sign-in activity",
            Data::Registration => "MFA registration details",
            Data::Risk => "risky users",
            Data::Roles => "directory role assignments",
            Data::Eligibility => "PIM eligible assignments",
            Data::AssignmentSchedules => "PIM assignment schedules",
            Data::Groups => "groups and members",
        }
    }

    /// The licence the tenant needs for it, if any.
    fn licence(self) -> Option<&'static str> {
        match self {
            Data::SignIn | Data::Registration => Some("Microsoft Entra ID P1"),
            Data::Risk | Data::Eligibility | Data::AssignmentSchedules => {
                Some("Microsoft Entra ID P2")
            }
            Data::Users | Data::Roles | Data::Groups => None,
        }
    }

    /// The least-privileged application permission that reads it.
    pub(super) fn permission(self) -> &'static str {
        match self {
            Data::Users => "User.Read.All",
            Data::SignIn | Data::Registration => "AuditLog.Read.All",
            Data::Risk => "IdentityRiskyUser.Read.All",
            Data::Roles => "RoleManagement.Read.Directory",
            Data::Eligibility => {
                "RoleEligibilitySchedule.Read.Directory (or RoleManagement.Read.Directory)"
            }
            Data::AssignmentSchedules => {
                "RoleAssignmentSchedule.Read.Directory (or RoleManagement.Read.Directory)"
            }
            Data::Groups => "GroupMember.Read.All",
        }
    }
}

/// Graph's error codes for a tenant without the licence a feature needs.
const LICENCE_CODES: &[&str] = &[
    "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
    "AadPremiumLicenseRequired",
    "Authentication_RequestFromUnsupportedUserRole",
];

/// True when Graph's refusal says the tenant lacks a licence.
fn is_licence_refusal(code: &str, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    LICENCE_CODES.iter().any(|c| c.eq_ignore_ascii_case(code))
        || m.contains("licen")
        || m.contains("premium")
        || m.contains("sku")
}

/// The gap a failed listing leaves.
pub(super) fn gap(data: Data, e: &ListingError) -> Gap {
    let reason = match e {
        ListingError::Refused(resp) => {
            let code = resp.error_code().unwrap_or("");
            let message = resp.error_message();
            match (resp.status, data.licence()) {
                (401 | 403, Some(lic)) if is_licence_refusal(code, &message) => {
                    format!("the tenant has no {lic} licence (Graph: {message})")
                }
                (401 | 403, _) => format!(
                    "the app lacks the permission {} (Graph: {message})",
                    data.permission()
                ),
                _ => format!("Graph refused the read (Graph: {message})"),
            }
        }
        ListingError::Unanswered { request, error } => {
            format!("no answer from Graph to {request}: {error}")
        }
        ListingError::TooManyPages => "Graph kept linking to more pages than allowed".to_string(),
    };
    Gap {
        data: data.noun(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphResponse;
    use serde_json::json;

    fn refused(status: u16, code: &str, message: &str) -> ListingError {
        ListingError::Refused(GraphResponse {
            status,
            body: json!({"error": {"code": code, "message": message}}),
            attempts: Vec::new(),
        })
    }

    #[test]
    fn a_licence_refusal_names_the_licence() {
        let g = gap(
            Data::SignIn,
            &refused(
                403,
                "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                "Neither tenant is B2C or tenant doesn't have premium license",
            ),
        );
        assert_eq!(g.data, "sign-in activity");
        assert!(
            g.reason
                .starts_with("the tenant has no Microsoft Entra ID P1 licence"),
            "{}",
            g.reason
        );
        let g = gap(Data::Risk, &refused(403, "AadPremiumLicenseRequired", "x"));
        assert!(g.reason.contains("P2"), "{}", g.reason);
    }

    #[test]
    fn a_permission_refusal_names_the_permission() {
        let g = gap(
            Data::Registration,
            &refused(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
        );
        assert!(
            g.reason
                .starts_with("the app lacks the permission AuditLog.Read.All"),
            "{}",
            g.reason
        );
        // A part needing no licence is never called a licence gap.
        let g = gap(
            Data::Groups,
            &refused(403, "Authorization_RequestDenied", "premium"),
        );
        assert!(g.reason.contains("GroupMember.Read.All"), "{}", g.reason);
    }
}
