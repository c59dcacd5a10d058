//! Public data the posture reads return besides the core `User` / `Group` /
//! `RoleAssignment` (kept apart so those structs stay unchanged).

/// A user's `signInActivity` (each an RFC 3339 time, `None` reads null).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignIn {
    /// lastSignInDateTime (last interactive sign-in, successful or not).
    pub last: Option<String>,
    /// lastNonInteractiveSignInDateTime.
    pub last_non_interactive: Option<String>,
    /// lastSuccessfulSignInDateTime (interactive or not).
    pub last_successful: Option<String>,
}

/// A user's row of `reports/authenticationMethods/userRegistrationDetails`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// methodsRegistered, Graph's names (see [`Registration::METHODS`]).
    pub methods: Vec<String>,
    /// isMfaRegistered.
    pub is_mfa_registered: bool,
    /// isMfaCapable (registered and allowed by policy).
    pub is_mfa_capable: bool,
    /// isPasswordlessCapable.
    pub is_passwordless_capable: bool,
    /// isSsprRegistered.
    pub is_sspr_registered: bool,
    /// isAdmin; `None` derives it from the user's role assignments and eligibilities.
    pub is_admin: Option<bool>,
    /// lastUpdatedDateTime; `None` reads the fake's start time.
    pub last_updated: Option<String>,
}

impl Registration {
    /// The `methodsRegistered` values Graph reports.
    pub const METHODS: &'static [&'static str] = &[
        "passKeyDeviceBound",
        "passKeyDeviceBoundAuthenticator",
        "passKeyDeviceBoundWindowsHello",
        "fido2SecurityKey",
        "windowsHelloForBusiness",
        "microsoftAuthenticatorPush",
        "microsoftAuthenticatorPasswordless",
        "softwareOneTimePasscode",
        "hardwareOneTimePasscode",
        "temporaryAccessPass",
        "mobilePhone",
        "alternateMobilePhone",
        "officePhone",
        "email",
        "securityQuestion",
        "appPassword",
        "macOsSecureEnclaveKey",
    ];

    /// Methods that satisfy multifactor authentication on their own.
    const STRONG: &'static [&'static str] = &[
        "passKeyDeviceBound",
        "passKeyDeviceBoundAuthenticator",
        "passKeyDeviceBoundWindowsHello",
        "fido2SecurityKey",
        "windowsHelloForBusiness",
        "microsoftAuthenticatorPush",
        "microsoftAuthenticatorPasswordless",
        "softwareOneTimePasscode",
        "hardwareOneTimePasscode",
        "mobilePhone",
        "alternateMobilePhone",
        "officePhone",
        "macOsSecureEnclaveKey",
    ];

    /// Passwordless methods.
    const PASSWORDLESS: &'static [&'static str] = &[
        "passKeyDeviceBound",
        "passKeyDeviceBoundAuthenticator",
        "passKeyDeviceBoundWindowsHello",
        "fido2SecurityKey",
        "windowsHelloForBusiness",
        "microsoftAuthenticatorPasswordless",
        "macOsSecureEnclaveKey",
    ];

    /// A registration with these methods, the flags derived as Entra does:
    /// MFA registered and capable with a strong method, passwordless capable
    /// with a passkey / FIDO2 / Windows Hello / phone sign-in, SSPR registered
    /// with two methods or more.
    pub fn with_methods(methods: &[&str]) -> Registration {
        let has = |set: &[&str]| methods.iter().any(|m| set.contains(m));
        let mfa = has(Self::STRONG);
        Registration {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            is_mfa_registered: mfa,
            is_mfa_capable: mfa,
            is_passwordless_capable: has(Self::PASSWORDLESS),
            is_sspr_registered: methods.len() >= 2,
            is_admin: None,
            last_updated: None,
        }
    }
}

/// A user's Identity Protection record (`identityProtection/riskyUsers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Risk {
    /// riskLevel: low, medium, high, hidden or none.
    pub level: String,
    /// riskState: none, confirmedSafe, remediated, dismissed, atRisk or confirmedCompromised.
    pub state: String,
    /// riskDetail, e.g. "none", "adminConfirmedUserCompromised", "userPerformedSecuredPasswordReset".
    pub detail: String,
    /// riskLastUpdatedDateTime; `None` reads the fake's start time.
    pub last_updated: Option<String>,
}

/// What the posture reads say about a user besides the `User` fields.
/// Users never given details read: createdDateTime the fake's start time,
/// onPremisesSyncEnabled null, signInActivity null (never signed in), not
/// registered for any method, no risk record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserDetails {
    /// createdDateTime (RFC 3339); `None` reads the fake's start time.
    pub created: Option<String>,
    /// onPremisesSyncEnabled (`None` reads null: cloud-only, never synced).
    pub on_premises_sync_enabled: Option<bool>,
    /// signInActivity; `None` reads null (never signed in).
    pub sign_in: Option<SignIn>,
    /// Authentication methods registration; `None`: listed as registered for nothing.
    pub registration: Option<Registration>,
    /// Risk record; `None`: not listed by riskyUsers.
    pub risk: Option<Risk>,
}

/// A PIM eligible role assignment (`roleEligibilitySchedules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleEligibility {
    /// unifiedRoleEligibilitySchedule id.
    pub id: String,
    /// Principal (user or group) id.
    pub principal_id: String,
    /// roleDefinitionId.
    pub role_definition_id: String,
    /// directoryScopeId ("/" for tenant-wide).
    pub directory_scope_id: String,
    /// scheduleInfo.startDateTime (RFC 3339).
    pub start: String,
    /// scheduleInfo.expiration.endDateTime; `None` for noExpiration.
    pub end: Option<String>,
    /// memberType: "Direct" or "Group".
    pub member_type: String,
}

/// What [`crate::FakeTenant::generate`] put in the tenant, so a scan can be
/// compared against it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    /// Users created (members and guests, break-glass accounts included).
    pub users: usize,
    /// userType Guest.
    pub guests: usize,
    /// accountEnabled false.
    pub disabled: usize,
    /// Last successful sign-in more than 90 days ago.
    pub stale: usize,
    /// signInActivity null.
    pub never_signed_in: usize,
    /// Not MFA registered (no registration, or no strong method).
    pub without_mfa: usize,
    /// Users with a risk record.
    pub risky: usize,
    /// Risk level high and state atRisk.
    pub high_risk_at_risk: usize,
    /// Users synchronised from on-premises.
    pub synced_users: usize,
    /// Groups created.
    pub groups: usize,
    /// Dynamic membership groups.
    pub dynamic_groups: usize,
    /// On-premises synced groups.
    pub synced_groups: usize,
    /// Role-assignable groups.
    pub role_assignable_groups: usize,
    /// Direct member entries over all groups.
    pub memberships: usize,
    /// Active role assignments.
    pub role_assignments: usize,
    /// Active assignments without PIM (permanent, direct).
    pub permanent_assignments: usize,
    /// Active assignments with a PIM schedule.
    pub pim_assignments: usize,
    /// Active assignments to a role-assignable group.
    pub group_assignments: usize,
    /// Active assignments to a service principal.
    pub service_principal_assignments: usize,
    /// Eligible (PIM) assignments.
    pub eligibilities: usize,
    /// Active Global Administrator assignments to users.
    pub global_admins: usize,
    /// Ids of the break-glass accounts (permanent Global Administrators).
    pub break_glass: Vec<String>,
}
