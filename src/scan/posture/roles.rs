//! What the checks count as highly privileged and as phishing-resistant.
//!
//! The role list is the tenant-takeover tier of Microsoft's built-in roles:
//! the roles Microsoft labels PRIVILEGED in "Microsoft Entra built-in roles"
//! (learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference)
//! and "Privileged roles and permissions in Microsoft Entra ID"
//! (.../privileged-roles-permissions) that can change credentials,
//! authentication or authorization policy, or grant roles, plus the Exchange
//! and SharePoint workload administrators (unlabelled there, but they reach
//! every mailbox and site). Left out on purpose: read-only privileged roles
//! (Global Reader, Security Reader, Security Operator), Billing Administrator
//! (not labelled PRIVILEGED; it cannot touch identities) and Application
//! Developer (it only creates applications it then owns).

/// One highly privileged built-in role: its template id (the same in every
/// tenant) and its name.
pub(super) struct Role {
    pub(super) template: &'static str,
    pub(super) name: &'static str,
}

/// The highly privileged built-in roles (see the module doc for the source).
pub(super) const HIGHLY_PRIVILEGED: &[Role] = &[
    Role {
        template: crate::scan::GLOBAL_ADMIN_TEMPLATE,
        name: "Global Administrator",
    },
    Role {
        template: "e8611ab8-c189-46e8-94e1-60213ab1f814",
        name: "Privileged Role Administrator",
    },
    Role {
        template: "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
        name: "Privileged Authentication Administrator",
    },
    Role {
        template: "194ae4cb-b126-40b2-bd5b-6091b380977d",
        name: "Security Administrator",
    },
    Role {
        template: "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
        name: "Conditional Access Administrator",
    },
    Role {
        template: "29232cdf-9323-42fd-ade2-1d097af3e4de",
        name: "Exchange Administrator",
    },
    Role {
        template: "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
        name: "SharePoint Administrator",
    },
    Role {
        template: "fe930be7-5e62-47db-91af-98c3a49a38b1",
        name: "User Administrator",
    },
    Role {
        template: "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        name: "Application Administrator",
    },
    Role {
        template: "158c047a-c907-4556-b7ef-446551a6b5f7",
        name: "Cloud Application Administrator",
    },
    Role {
        template: "c4e39bd9-1100-46d3-8c65-fb160da0071f",
        name: "Authentication Administrator",
    },
    Role {
        template: "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
        name: "Hybrid Identity Administrator",
    },
    Role {
        template: "3a2c62db-5318-420d-8d74-23affee5d9d5",
        name: "Intune Administrator",
    },
    Role {
        template: "729827e3-9c14-49f7-bb1b-9608f156bbb8",
        name: "Helpdesk Administrator",
    },
    Role {
        template: "966707d0-3269-4727-9be2-8c3a10f19b9d",
        name: "Password Administrator",
    },
    Role {
        template: "e00e864a-17c5-4a4b-9c06-f5b95a8d5bd8",
        name: "Partner Tier2 Support",
    },
    Role {
        template: "8329153b-31d0-4727-b945-745eb3bc5f31",
        name: "Domain Name Administrator",
    },
    Role {
        template: "be2f45a1-457d-42af-a067-6ec1fa63bc45",
        name: "External Identity Provider Administrator",
    },
];

/// True when the role template is in [`HIGHLY_PRIVILEGED`].
pub fn is_highly_privileged(template: &str) -> bool {
    HIGHLY_PRIVILEGED
        .iter()
        .any(|r| r.template.eq_ignore_ascii_case(template))
}

/// The built-in name of a template in [`HIGHLY_PRIVILEGED`], for assignments
/// whose role definition was not read.
pub(super) fn known_name(template: &str) -> Option<&'static str> {
    HIGHLY_PRIVILEGED
        .iter()
        .find(|r| r.template.eq_ignore_ascii_case(template))
        .map(|r| r.name)
}

/// Graph's `methodsRegistered` values (userRegistrationDetails) of
/// phishing-resistant methods: device-bound passkeys (security keys, in
/// Microsoft Authenticator, in Windows Hello), the older FIDO2 name, Windows
/// Hello for Business, the macOS Platform SSO secure enclave key, and
/// multifactor certificate-based authentication. Synced passkeys
/// (`passKeySynced`) are left out: Microsoft advises device-bound passkeys for
/// administrators.
pub(super) const PHISHING_RESISTANT: &[&str] = &[
    "passKeyDeviceBound",
    "passKeyDeviceBoundAuthenticator",
    "passKeyDeviceBoundWindowsHello",
    "fido2SecurityKey",
    "windowsHelloForBusiness",
    "macOsSecureEnclaveKey",
    "x509CertificateMultiFactor",
];

/// True when one of `methods` is in [`PHISHING_RESISTANT`].
pub(super) fn has_phishing_resistant(methods: &[String]) -> bool {
    methods
        .iter()
        .any(|m| PHISHING_RESISTANT.iter().any(|p| p.eq_ignore_ascii_case(m)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::is_guid;

    #[test]
    fn the_role_list_holds_valid_distinct_templates() {
        for (i, r) in HIGHLY_PRIVILEGED.iter().enumerate() {
            assert!(is_guid(r.template), "{}", r.name);
            assert!(
                HIGHLY_PRIVILEGED[i + 1..]
                    .iter()
                    .all(|o| o.template != r.template && o.name != r.name),
                "{} listed twice",
                r.name
            );
        }
        assert!(is_highly_privileged("62E90394-69F5-4237-9190-012177145E10"));
        assert!(!is_highly_privileged(
            "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
        ));
        assert_eq!(
            known_name("fe930be7-5e62-47db-91af-98c3a49a38b1"),
            Some("User Administrator")
        );
    }

    #[test]
    fn phishing_resistant_methods_are_told_from_phishable_ones() {
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(has_phishing_resistant(&m(&[
            "mobilePhone",
            "fido2SecurityKey"
        ])));
        assert!(has_phishing_resistant(&m(&[
            "passKeyDeviceBoundAuthenticator"
        ])));
        assert!(!has_phishing_resistant(&m(&[
            "mobilePhone",
            "microsoftAuthenticatorPush",
            "passKeySynced"
        ])));
        assert!(!has_phishing_resistant(&[]));
    }
}
