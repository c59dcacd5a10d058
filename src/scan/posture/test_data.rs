//! A small tenant full of traps, in Graph's own JSON shapes, for the posture
//! tests. Read at 2026-11-20T06:00:00Z with `stale_days` 90 (cut-off
//! 2026-08-22T06:00:00Z).
//!
//! | n  | who | traps |
//! |----|-----|-------|
//! | 1  | break-glass, protected by id | GA permanent, stale, MFA not registered, synced |
//! | 2  | alice | GA activated through PIM (time-bound), passkey |
//! | 3  | bob | GA permanent, push only |
//! | 4  | carol | GA eligible only, SMS only (and an inherited schedule) |
//! | 5  | gary, guest | Directory Readers, MFA not registered |
//! | 6  | dave | member of role-assignable Tier0 (Privileged Role Administrator, permanent), stale, synced |
//! | 7  | erin | never signed in, created 2025, member of a dynamic group and of HR (privileged by name) |
//! | 8  | frank | never signed in, created 2026-11-01 |
//! | 9  | gina | never signed in, creation unknown |
//! | 10 | henry | disabled, stale, high risk at risk, MFA not registered |
//! | 11 | ivy | high risk at risk |
//! | 12 | jack | high risk remediated |
//! | 13 | kim | high risk confirmed compromised |
//! | 14 | lee | medium risk; last success stale, a later failed attempt |
//! | 15 | (id not a GUID) | skipped |
//! | 16 | nora | hidden risk; unparsable last success, non-interactive 2026-11-10 |
//! | 17 | olga | member of Ops (eligible Security Administrator), stale, passkey |
//! | 18 | pat | last success a day inside the stale period |
//! | 19 | quinn | last success a second outside it |

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Gap, PostureSettings, TenantData};
use crate::config::Protected;
use crate::scan::{GLOBAL_ADMIN_TEMPLATE, Scan};

pub(crate) const PRA: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
pub(crate) const SEC_ADMIN: &str = "194ae4cb-b126-40b2-bd5b-6091b380977d";
pub(crate) const DIR_READERS: &str = "88d8e3e3-8f55-4a1e-953a-9b9898b8876b";

/// User n's object id.
pub(crate) fn u(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Group n's object id.
pub(crate) fn g(n: u32) -> String {
    format!("00000000-0000-4000-9000-{n:012}")
}

fn from<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

pub(crate) fn gap(data: &'static str) -> Gap {
    Gap {
        data,
        reason: format!("{data} needs a licence"),
    }
}

fn user(n: u32, name: &str, kind: &str, enabled: bool, signin: Value, created: Value) -> Value {
    json!({
        "id": u(n), "userPrincipalName": format!("{name}@contoso.com"), "displayName": name,
        "userType": kind, "accountEnabled": enabled, "onPremisesSyncEnabled": null,
        "createdDateTime": created, "signInActivity": signin
    })
}

fn ok(t: &str) -> Value {
    json!({ "lastSuccessfulSignInDateTime": t, "lastSignInDateTime": t,
            "lastNonInteractiveSignInDateTime": null })
}

/// An enabled member created in 2024 whose last success and attempt are `t`.
fn member(n: u32, name: &str, t: &str) -> Value {
    user(
        n,
        name,
        "Member",
        true,
        ok(t),
        json!("2024-01-01T00:00:00Z"),
    )
}

fn users() -> Value {
    let none = json!({ "lastSuccessfulSignInDateTime": null, "lastSignInDateTime": null,
                       "lastNonInteractiveSignInDateTime": null });
    let created = |t: &str| json!(t);
    let mut guest = member(5, "gary_fabrikam.com#EXT#", "2026-11-01T00:00:00Z");
    guest["userType"] = json!("Guest");
    let mut henry = member(10, "henry", "2025-01-01T00:00:00Z");
    henry["accountEnabled"] = json!(false);
    let mut lee = member(14, "lee", "2026-06-01T00:00:00Z");
    lee["signInActivity"]["lastSignInDateTime"] = json!("2026-11-19T00:00:00Z");
    let mut nora = member(16, "nora", "yesterday");
    nora["signInActivity"] = json!({ "lastSuccessfulSignInDateTime": "yesterday",
        "lastSignInDateTime": "2026-11-09T00:00:00Z",
        "lastNonInteractiveSignInDateTime": "2026-11-10T00:00:00+00:00" });
    let mut v = vec![
        member(1, "breakglass", "2026-01-01T00:00:00Z"),
        member(2, "alice", "2026-11-19T00:00:00Z"),
        member(3, "bob", "2026-11-18T00:00:00Z"),
        member(4, "carol", "2026-11-17T00:00:00Z"),
        guest,
        member(6, "dave", "2026-05-01T00:00:00Z"),
        user(
            7,
            "erin",
            "Member",
            true,
            none.clone(),
            created("2025-01-01T00:00:00Z"),
        ),
        user(
            8,
            "frank",
            "Member",
            true,
            Value::Null,
            created("2026-11-01T00:00:00Z"),
        ),
        user(9, "gina", "Member", true, none, Value::Null),
        henry,
        member(11, "ivy", "2026-11-19T00:00:00Z"),
        member(12, "jack", "2026-11-19T00:00:00Z"),
        member(13, "kim", "2026-11-19T00:00:00Z"),
        lee,
        json!({ "id": "not-a-guid", "userPrincipalName": "mia@contoso.com", "accountEnabled": true }),
        nora,
        member(17, "olga", "2026-03-01T00:00:00Z"),
        member(18, "pat", "2026-08-23T00:00:00Z"),
        member(19, "quinn", "2026-08-22T05:59:59Z"),
    ];
    v[0]["onPremisesSyncEnabled"] = json!(true);
    v[5]["onPremisesSyncEnabled"] = json!(true);
    v[16]["onPremisesSyncEnabled"] = json!(false);
    Value::Array(v)
}

fn registration() -> Value {
    let r = |n: u32, mfa: bool, methods: &[&str]| json!({ "id": u(n), "isMfaRegistered": mfa, "isAdmin": false, "methodsRegistered": methods });
    json!([
        r(1, false, &[]),
        r(2, true, &["fido2SecurityKey", "mobilePhone"]),
        r(3, true, &["microsoftAuthenticatorPush"]),
        r(4, true, &["mobilePhone"]),
        r(5, false, &[]),
        r(6, true, &["windowsHelloForBusiness"]),
        r(10, false, &[]),
        r(17, true, &["passKeyDeviceBound"]),
    ])
}

fn risky() -> Value {
    let r = |n: u32, level: &str, state: &str| json!({ "id": u(n), "riskLevel": level, "riskState": state, "riskDetail": "none" });
    json!([
        r(10, "high", "atRisk"),
        r(11, "high", "atRisk"),
        r(12, "high", "remediated"),
        r(13, "high", "confirmedCompromised"),
        r(14, "medium", "atRisk"),
        r(16, "hidden", "atRisk"),
    ])
}

fn assignment(id: &str, principal: &str, kind: &str, role: &str) -> Value {
    json!({ "id": id, "principalId": principal, "roleDefinitionId": role, "directoryScopeId": "/",
            "principal": { "@odata.type": format!("#microsoft.graph.{kind}"), "id": principal } })
}

fn schedule(id: &str, principal: &str, role: &str, expiry: &str, member: &str) -> Value {
    json!({ "id": id, "principalId": principal, "roleDefinitionId": role, "directoryScopeId": "/",
            "memberType": member, "assignmentType": "Assigned",
            "scheduleInfo": { "startDateTime": "2025-01-01T00:00:00Z",
                              "expiration": { "type": expiry, "endDateTime": null } } })
}

fn group(n: u32, name: &str, dynamic: bool, synced: bool, assignable: bool) -> Value {
    let types: Vec<&str> = if dynamic {
        vec!["DynamicMembership"]
    } else {
        vec![]
    };
    json!({ "id": g(n), "displayName": name, "groupTypes": types,
            "onPremisesSyncEnabled": synced.then_some(true), "isAssignableToRole": assignable,
            "securityEnabled": true, "mailEnabled": false })
}

pub(crate) fn read_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T06:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The tenant described in the module doc, nothing missing.
pub(crate) fn tenant() -> TenantData {
    let ga = GLOBAL_ADMIN_TEMPLATE;
    let members: HashMap<String, Vec<String>> = [
        (g(1), vec![u(6)]),
        (g(2), vec![u(7), u(2), u(7)]),
        (g(3), vec![u(7)]),
        (g(5), vec![u(17), "unknown-member".to_string()]),
    ]
    .into_iter()
    .collect();
    TenantData {
        tenant_id: "0f3c2b1a-9d8e-4f7a-8b6c-5d4e3f2a1b0c".into(),
        tenant_name: "Contoso".into(),
        read_at: read_at(),
        users: from(users()),
        sign_in: Ok(()),
        registration: Ok(from(registration())),
        risky_users: Ok(from(risky())),
        role_definitions: Ok(from(json!([
            { "id": ga, "displayName": "Global Administrator", "templateId": ga },
            { "id": PRA, "displayName": "Privileged Role Administrator", "templateId": PRA },
            { "id": DIR_READERS, "displayName": "Directory Readers", "templateId": DIR_READERS },
        ]))),
        role_assignments: Ok(from(json!([
            assignment("a-bg", &u(1), "user", ga),
            assignment("a-alice", &u(2), "user", ga),
            assignment("a-bob", &u(3), "user", ga),
            assignment("a-gary", &u(5), "user", DIR_READERS),
            assignment("a-t0", &g(1), "group", PRA),
            assignment(
                "a-sp",
                "00000000-0000-4000-a000-000000000001",
                "servicePrincipal",
                ga
            ),
            assignment("a-bad", &u(3), "user", "custom-role"),
        ]))),
        eligibility: Ok(from(json!([
            schedule("e-carol", &u(4), ga, "noExpiration", "Direct"),
            schedule("e-ops", &g(5), SEC_ADMIN, "afterDateTime", "Direct"),
            schedule("e-inherited", &u(17), SEC_ADMIN, "afterDateTime", "Group"),
        ]))),
        assignment_schedules: Ok(from(json!([
            schedule("s-bg", &u(1), ga, "noExpiration", "Direct"),
            schedule("s-alice", &u(2), ga, "afterDateTime", "Direct"),
            schedule("s-bob", &u(3), ga, "noExpiration", "Direct"),
            schedule("s-t0", &g(1), PRA, "noExpiration", "Direct"),
        ]))),
        groups: Ok(from(json!([
            group(1, "Tier0 Admins", false, false, true),
            group(2, "All staff", true, false, false),
            group(3, "HR", false, true, false),
            group(5, "Ops", false, false, false),
        ]))),
        members: Ok(members),
    }
}

/// Break-glass protected by id; HR privileged by name (in another case).
pub(crate) fn settings() -> PostureSettings {
    PostureSettings {
        stale_days: 90,
        privileged_groups: vec!["hr".into()],
        protected: Protected {
            ids: vec![u(1).to_uppercase()],
            ..Protected::default()
        },
        scanner: "entra-remediator test".into(),
    }
}

/// The user numbers of a list of ids made by [`u`].
pub(crate) fn numbers<'a>(ids: impl IntoIterator<Item = &'a crate::scan::Guid>) -> Vec<u32> {
    ids.into_iter()
        .map(|x| x.0[24..].parse().unwrap())
        .collect()
}

/// The user numbers a finding affects; None when the scan has no such finding.
pub(crate) fn affected(scan: &Scan, id: &str) -> Option<Vec<u32>> {
    scan.findings
        .iter()
        .find(|f| f.id == id)
        .map(|f| numbers(&f.affected_identities))
}

/// The reason a check was not evaluated, if it was not.
pub(crate) fn not_evaluated<'a>(scan: &'a Scan, id: &str) -> Option<&'a str> {
    scan.not_evaluated
        .iter()
        .find(|n| n.check == id)
        .map(|n| n.reason.as_str())
}
