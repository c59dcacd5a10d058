use super::super::test_data::{affected, gap, not_evaluated, settings, tenant, u};
use super::super::{Built, build_scan};
use super::*;
use crate::scan::{GLOBAL_ADMIN_TEMPLATE, Scan};

fn build(data: TenantData) -> Built {
    build_scan(data, &settings())
}

/// Every check's affected users, None when it has no finding.
fn all(scan: &Scan) -> Vec<(&'static str, Option<Vec<u32>>)> {
    CHECKS
        .iter()
        .map(|c| (c.id, affected(scan, c.id)))
        .collect()
}

#[test]
fn every_check_has_an_implementation() {
    for c in CHECKS {
        assert!(
            c.id == GLOBAL_ADMIN_COUNT || predicate(c.id).is_some(),
            "{}",
            c.id
        );
    }
}

#[test]
fn the_full_tenant_gives_exact_affected_sets_and_never_the_break_glass() {
    let built = build(tenant());
    let s = &built.scan;
    assert_eq!(
        all(s),
        vec![
            (MFA_NOT_REGISTERED, Some(vec![5])),
            (PRIV_NO_PHISHING_RESISTANT, Some(vec![3, 4])),
            (STALE_ACCOUNTS, Some(vec![6, 7, 14, 17, 19])),
            (GUEST_WITH_ROLES, Some(vec![5])),
            (HIGH_RISK_USERS, Some(vec![11, 13])),
            (PERMANENT_PRIVILEGED, Some(vec![3, 6])),
            (STALE_PRIVILEGED_GROUP_MEMBERS, Some(vec![6, 7, 17])),
            (STALE_PRIVILEGED, Some(vec![6, 17])),
            (SYNCED_PRIVILEGED, Some(vec![6])),
            (GLOBAL_ADMIN_COUNT, None),
        ]
    );
    assert!(s.not_evaluated.is_empty(), "{:?}", s.not_evaluated);
    assert_eq!(
        built.evaluated,
        CHECKS.iter().map(|c| c.id).collect::<Vec<_>>()
    );
    let f = &s.findings[0];
    assert_eq!(
        (f.title.as_str(), f.severity, f.category.as_str()),
        (CHECKS[0].title, CHECKS[0].severity, CHECKS[0].category)
    );
    assert_eq!(f.recommendation, CHECKS[0].recommendation);
    assert_eq!(f.documentation.as_deref(), Some(CHECKS[0].documentation));
}

#[test]
fn without_protection_the_break_glass_is_affected_everywhere_it_fails() {
    let mut settings = settings();
    settings.protected = Default::default();
    let s = build_scan(tenant(), &settings).scan;
    assert_eq!(affected(&s, MFA_NOT_REGISTERED), Some(vec![1, 5]));
    assert_eq!(
        affected(&s, STALE_ACCOUNTS),
        Some(vec![1, 6, 7, 14, 17, 19])
    );
    assert_eq!(affected(&s, PERMANENT_PRIVILEGED), Some(vec![1, 3, 6]));
    assert_eq!(affected(&s, SYNCED_PRIVILEGED), Some(vec![1, 6]));
    assert_eq!(
        affected(&s, PRIV_NO_PHISHING_RESISTANT),
        Some(vec![1, 3, 4])
    );
}

#[test]
fn a_protected_group_protects_its_members() {
    let mut settings = settings();
    settings.protected.groups = vec!["TIER0 ADMINS".into()];
    let s = build_scan(tenant(), &settings).scan;
    assert_eq!(affected(&s, STALE_PRIVILEGED), Some(vec![17]));
    assert_eq!(affected(&s, PERMANENT_PRIVILEGED), Some(vec![3]));
}

#[test]
fn protected_groups_that_cannot_be_checked_stop_every_check() {
    let mut settings = settings();
    settings.protected.groups = vec!["Break Glass".into()];
    let mut data = tenant();
    data.groups = Err(gap("groups"));
    let built = build_scan(data, &settings);
    assert!(built.scan.findings.is_empty());
    assert!(built.evaluated.is_empty());
    assert_eq!(built.scan.not_evaluated.len(), CHECKS.len());
    assert_eq!(
        not_evaluated(&built.scan, MFA_NOT_REGISTERED),
        Some("protected.groups cannot be ruled out: groups: groups needs a licence")
    );
}

#[test]
fn a_sign_in_gap_leaves_the_stale_checks_not_evaluated() {
    let mut data = tenant();
    data.sign_in = Err(gap("sign-in activity"));
    let built = build(data);
    let s = &built.scan;
    for id in [
        STALE_ACCOUNTS,
        STALE_PRIVILEGED_GROUP_MEMBERS,
        STALE_PRIVILEGED,
    ] {
        assert_eq!(affected(s, id), None, "{id}");
        assert_eq!(
            not_evaluated(s, id),
            Some("sign-in activity: sign-in activity needs a licence")
        );
        assert!(!built.evaluated.contains(&id));
    }
    assert_eq!(affected(s, MFA_NOT_REGISTERED), Some(vec![5]));
    assert_eq!(s.not_evaluated.len(), 3);
}

#[test]
fn a_registration_gap_leaves_the_mfa_checks_not_evaluated() {
    let mut data = tenant();
    data.registration = Err(gap("registration details"));
    let s = build(data).scan;
    let ids: Vec<&str> = s.not_evaluated.iter().map(|n| n.check.as_str()).collect();
    assert_eq!(ids, vec![MFA_NOT_REGISTERED, PRIV_NO_PHISHING_RESISTANT]);
    assert_eq!(affected(&s, STALE_ACCOUNTS), Some(vec![6, 7, 14, 17, 19]));
}

#[test]
fn a_risk_gap_leaves_the_risk_check_not_evaluated() {
    let mut data = tenant();
    data.risky_users = Err(gap("risky users"));
    let s = build(data).scan;
    let ids: Vec<&str> = s.not_evaluated.iter().map(|n| n.check.as_str()).collect();
    assert_eq!(ids, vec![HIGH_RISK_USERS]);
}

#[test]
fn a_role_gap_leaves_every_role_check_not_evaluated() {
    let mut data = tenant();
    data.role_assignments = Err(gap("role assignments"));
    let built = build(data);
    let ids: Vec<&str> = built
        .scan
        .not_evaluated
        .iter()
        .map(|n| n.check.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![
            PRIV_NO_PHISHING_RESISTANT,
            GUEST_WITH_ROLES,
            PERMANENT_PRIVILEGED,
            STALE_PRIVILEGED_GROUP_MEMBERS,
            STALE_PRIVILEGED,
            SYNCED_PRIVILEGED,
            GLOBAL_ADMIN_COUNT
        ]
    );
    assert_eq!(
        built.evaluated,
        vec![MFA_NOT_REGISTERED, STALE_ACCOUNTS, HIGH_RISK_USERS]
    );
}

#[test]
fn unknown_members_of_role_holding_groups_are_a_role_gap() {
    let mut data = tenant();
    data.members = Err(gap("group members"));
    let s = build(data).scan;
    assert!(
        not_evaluated(&s, GLOBAL_ADMIN_COUNT)
            .unwrap()
            .starts_with("members of 2 role-holding group(s)")
    );
    assert_eq!(
        not_evaluated(&s, STALE_PRIVILEGED_GROUP_MEMBERS).unwrap(),
        format!(
            "group members: group members needs a licence; members of 2 role-holding group(s) (first {}): group members: group members needs a licence",
            super::super::test_data::g(1)
        )
    );
}

#[test]
fn without_schedules_permanence_is_not_evaluated() {
    let mut data = tenant();
    data.assignment_schedules = Err(gap("role assignment schedules"));
    let s = build(data).scan;
    let ids: Vec<&str> = s.not_evaluated.iter().map(|n| n.check.as_str()).collect();
    assert_eq!(ids, vec![PERMANENT_PRIVILEGED]);
}

#[test]
fn an_eligibility_gap_reports_active_findings_with_a_note_and_never_clean() {
    let mut data = tenant();
    data.eligibility = Err(gap("role eligibility"));
    if let Ok(a) = &mut data.role_assignments {
        a.retain(|x| x.id != "a-gary"); // the guest's only role
    }
    let built = build(data);
    let s = &built.scan;
    // carol (eligible GA) and olga (eligible through Ops) are no longer privileged.
    assert_eq!(affected(s, PRIV_NO_PHISHING_RESISTANT), Some(vec![3]));
    assert_eq!(affected(s, STALE_PRIVILEGED), Some(vec![6]));
    assert_eq!(
        affected(s, STALE_PRIVILEGED_GROUP_MEMBERS),
        Some(vec![6, 7])
    );
    let f = s
        .findings
        .iter()
        .find(|f| f.id == STALE_PRIVILEGED)
        .unwrap();
    assert!(
        f.recommendation.ends_with(
            "Eligible (PIM) assignments could not be read (role eligibility: role eligibility needs a licence): accounts privileged only through eligibility are not listed."
        ),
        "{}",
        f.recommendation
    );
    // Active-only checks are untouched.
    let p = s
        .findings
        .iter()
        .find(|f| f.id == PERMANENT_PRIVILEGED)
        .unwrap();
    assert_eq!(p.recommendation, CHECKS[5].recommendation);
    // Nobody found on active roles: not evaluated, never clean.
    assert_eq!(affected(s, GUEST_WITH_ROLES), None);
    assert_eq!(
        not_evaluated(s, GUEST_WITH_ROLES),
        Some(
            "role eligibility: role eligibility needs a licence (nobody found on active assignments; eligible ones could not be read)"
        )
    );
    assert!(!built.evaluated.contains(&GUEST_WITH_ROLES));
    assert!(built.evaluated.contains(&STALE_PRIVILEGED));
}

fn ga_assignment(id: &str, principal: String) -> super::super::DirectoryRoleAssignment {
    super::super::DirectoryRoleAssignment {
        id: id.into(),
        principal_id: principal,
        role_definition_id: GLOBAL_ADMIN_TEMPLATE.into(),
        directory_scope_id: Some("/".into()),
        principal: None,
    }
}

#[test]
fn one_global_admin_is_reported_without_affected_identities() {
    let mut data = tenant();
    if let Ok(a) = &mut data.role_assignments {
        a.retain(|x| x.id != "a-alice" && x.id != "a-bob");
    }
    let built = build(data);
    let f = built
        .scan
        .findings
        .iter()
        .find(|f| f.id == GLOBAL_ADMIN_COUNT)
        .unwrap();
    assert_eq!(
        f.title,
        "Global Administrator count outside 2 to 8 (found 1)"
    );
    assert!(f.affected_identities.is_empty());
}

#[test]
fn nine_global_admins_list_the_unprotected_ones() {
    let mut data = tenant();
    if let Ok(a) = &mut data.role_assignments {
        // Through a group: the whole Tier0 group (dave) now holds GA.
        let mut t0 = ga_assignment("a-t0-ga", super::super::test_data::g(1));
        t0.principal = Some(super::super::Principal {
            odata_type: Some("#microsoft.graph.group".into()),
            ..Default::default()
        });
        a.push(t0);
        // A disabled GA does not count.
        a.push(ga_assignment("a-henry", u(10)));
        for n in [11, 12, 13, 14, 16] {
            a.push(ga_assignment(&format!("a-{n}"), u(n)));
        }
    }
    let s = build(data).scan;
    let f = s
        .findings
        .iter()
        .find(|f| f.id == GLOBAL_ADMIN_COUNT)
        .unwrap();
    assert_eq!(
        f.title,
        "Global Administrator count outside 2 to 8 (found 9)"
    );
    assert_eq!(
        super::super::test_data::numbers(&f.affected_identities),
        vec![2, 3, 6, 11, 12, 13, 14, 16]
    );
}

#[test]
fn a_built_scan_round_trips_through_the_strict_loader() {
    for data in [tenant(), {
        let mut d = tenant();
        d.sign_in = Err(gap("sign-in activity"));
        d.eligibility = Err(gap("role eligibility"));
        d
    }] {
        let built = build(data);
        let bytes = serde_json::to_vec(&built.scan).unwrap();
        let back = Scan::from_slice(&bytes, "built.json").unwrap();
        assert_eq!(back.identities.len(), built.scan.identities.len());
        assert_eq!(back.findings.len(), built.scan.findings.len());
        assert_eq!(back.not_evaluated, built.scan.not_evaluated);
        assert_eq!(back.scanner.as_deref(), Some("entra-remediator test"));
        for (a, b) in back.identities.iter().zip(&built.scan.identities) {
            assert_eq!(a.last_sign_in, b.last_sign_in, "{}", a.id);
            assert_eq!(a.roles.len(), b.roles.len());
            assert_eq!(
                a.attributes.as_ref().map(|x| x.get()),
                b.attributes.as_ref().map(|x| x.get())
            );
        }
        assert_eq!(serde_json::to_vec(&back).unwrap(), bytes);
    }
}
