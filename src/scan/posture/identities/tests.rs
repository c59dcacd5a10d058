use chrono::{DateTime, Utc};

use super::super::test_data::{DIR_READERS, PRA, SEC_ADMIN, g, gap, numbers, tenant, u};
use super::*;
use crate::scan::GLOBAL_ADMIN_TEMPLATE;

fn at(s: &str) -> LastSignIn {
    LastSignIn::At(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
}

fn find<'p>(p: &'p People, n: u32) -> &'p Identity {
    p.identities.iter().find(|i| i.id.as_str() == u(n)).unwrap()
}

/// (assignment id, template, name, type, via group, permanent) of a user's roles.
type RoleRow = (
    String,
    String,
    String,
    AssignmentType,
    Option<String>,
    Option<bool>,
);

fn roles(p: &People, n: u32) -> Vec<RoleRow> {
    find(p, n)
        .roles
        .iter()
        .map(|r| {
            assert_eq!(r.directory_scope_id, "/");
            (
                r.assignment_id.clone(),
                r.role_definition_id.0.to_string(),
                r.role_name.clone(),
                r.assignment_type,
                r.via_group.as_ref().map(|x| x.0.to_string()),
                r.permanent,
            )
        })
        .collect()
}

fn row(
    id: &str,
    template: &str,
    name: &str,
    t: AssignmentType,
    via: Option<String>,
    permanent: Option<bool>,
) -> RoleRow {
    (id.into(), template.into(), name.into(), t, via, permanent)
}

#[test]
fn users_keep_graph_order_and_ids_that_are_not_guids_are_skipped() {
    let data = tenant();
    let p = build(&data);
    assert_eq!(
        numbers(p.identities.iter().map(|i| &i.id)),
        vec![
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19
        ]
    );
    assert_eq!(p.identities.len(), p.facts.len());
    assert_eq!(
        p.skipped,
        vec![
            "user \"not-a-guid\": id is not a GUID; left out".to_string(),
            "role assignment \"a-bad\": role definition id is not a GUID; left out".to_string(),
        ]
    );
    assert_eq!(p.roles_incomplete, None);
    let gary = find(&p, 5);
    assert_eq!(gary.user_type, Some(UserType::Guest));
    assert_eq!(gary.display_name, "gary_fabrikam.com#EXT#");
    assert_eq!(find(&p, 10).account_enabled, Some(false));
}

#[test]
fn a_user_listed_twice_is_kept_once() {
    let mut data = tenant();
    let mut again = data.users[1].clone();
    again.id = again.id.to_uppercase();
    data.users.push(again);
    let p = build(&data);
    assert_eq!(p.identities.len(), 18);
    assert!(p.skipped[1].contains("listed twice"), "{:?}", p.skipped);
}

#[test]
fn last_sign_in_prefers_the_last_success_and_never_guesses() {
    let data = tenant();
    let p = build(&data);
    // A failed attempt after the last success does not make lee active.
    assert_eq!(find(&p, 14).last_sign_in, at("2026-06-01T00:00:00Z"));
    // Unparsable success: the newest of the attempts.
    assert_eq!(find(&p, 16).last_sign_in, at("2026-11-10T00:00:00Z"));
    assert_eq!(find(&p, 7).last_sign_in, LastSignIn::Never);
    assert_eq!(find(&p, 8).last_sign_in, LastSignIn::Never);

    let mut data = tenant();
    data.sign_in = Err(gap("sign-in activity"));
    let p = build(&data);
    assert!(
        p.identities
            .iter()
            .all(|i| i.last_sign_in == LastSignIn::Unknown)
    );
}

#[test]
fn risk_scores_follow_state_then_level() {
    let data = tenant();
    let p = build(&data);
    let score = |n| find(&p, n).risk_score;
    assert_eq!(
        [10, 11, 12, 13, 14, 16, 2].map(score),
        [
            Some(90),
            Some(90),
            Some(0),
            Some(100),
            Some(60),
            None,
            Some(0)
        ]
    );
    let mut data = tenant();
    data.risky_users = Err(gap("risky users"));
    let p = build(&data);
    assert!(p.identities.iter().all(|i| i.risk_score.is_none()));
    assert!(p.facts.iter().all(|f| f.risk_level.is_none()));
}

#[test]
fn mfa_is_known_only_for_users_in_the_registration_details() {
    let data = tenant();
    let p = build(&data);
    let mfa = |n| find(&p, n).mfa_registered;
    assert_eq!([1, 2, 7].map(mfa), [Some(false), Some(true), None]);
    let mut data = tenant();
    data.registration = Err(gap("registration details"));
    let p = build(&data);
    assert!(p.identities.iter().all(|i| i.mfa_registered.is_none()));
}

#[test]
fn roles_come_direct_through_groups_and_from_pim() {
    let data = tenant();
    let p = build(&data);
    let ga = GLOBAL_ADMIN_TEMPLATE;
    use AssignmentType::{Active, Eligible};
    let ga_name = "Global Administrator";
    assert_eq!(
        roles(&p, 1),
        vec![row("a-bg", ga, ga_name, Active, None, Some(true))]
    );
    assert_eq!(
        roles(&p, 2),
        vec![row("a-alice", ga, ga_name, Active, None, Some(false))]
    );
    // a-bad (role id not a GUID) left out.
    assert_eq!(
        roles(&p, 3),
        vec![row("a-bob", ga, ga_name, Active, None, Some(true))]
    );
    // The inherited schedule of olga is not counted twice.
    assert_eq!(
        roles(&p, 4),
        vec![row("e-carol", ga, ga_name, Eligible, None, Some(true))]
    );
    assert_eq!(
        roles(&p, 5),
        vec![row(
            "a-gary",
            DIR_READERS,
            "Directory Readers",
            Active,
            None,
            None
        )]
    );
    assert_eq!(
        roles(&p, 6),
        vec![row(
            "a-t0",
            PRA,
            "Privileged Role Administrator",
            Active,
            Some(g(1)),
            Some(true)
        )]
    );
    // No definition read for Security Administrator: the built-in name.
    assert_eq!(
        roles(&p, 17),
        vec![row(
            "e-ops",
            SEC_ADMIN,
            "Security Administrator",
            Eligible,
            Some(g(5)),
            Some(false)
        )]
    );
    assert!(roles(&p, 7).is_empty());
    let mut held: Vec<&String> = p.role_groups.iter().collect();
    held.sort();
    assert_eq!(held, vec![&g(1), &g(5)]);
}

#[test]
fn without_schedules_permanence_is_unknown() {
    let mut data = tenant();
    data.assignment_schedules = Err(gap("role assignment schedules"));
    let p = build(&data);
    assert_eq!(find(&p, 3).roles[0].permanent, None);
    assert_eq!(find(&p, 6).roles[0].permanent, None);
}

#[test]
fn unknown_members_of_a_role_holding_group_make_roles_incomplete() {
    let mut data = tenant();
    data.members = Err(gap("group members"));
    let p = build(&data);
    assert!(roles(&p, 6).is_empty());
    assert_eq!(
        p.roles_incomplete.as_deref(),
        Some(
            format!(
                "members of 2 role-holding group(s) (first {}): group members: group members needs a licence",
                g(1)
            )
            .as_str()
        )
    );
    assert!(p.identities.iter().all(|i| i.groups.is_empty()));
}

#[test]
fn groups_are_direct_memberships_in_graph_order() {
    let data = tenant();
    let p = build(&data);
    let erin: Vec<_> = find(&p, 7)
        .groups
        .iter()
        .map(|m| {
            (
                m.id.0.to_string(),
                m.display_name.to_string(),
                m.dynamic,
                m.on_premises_synced,
                m.role_assignable,
            )
        })
        .collect();
    assert_eq!(
        erin,
        vec![
            (g(2), "All staff".to_string(), true, None, Some(false)),
            (g(3), "HR".to_string(), false, Some(true), Some(false)),
        ]
    );
    assert_eq!(find(&p, 6).groups[0].role_assignable, Some(true));
    assert_eq!(find(&p, 2).groups.len(), 1);
}

#[test]
fn a_group_whose_id_is_not_a_guid_is_left_out_but_remembered() {
    let mut data = tenant();
    if let Ok(groups) = &mut data.groups {
        groups[2].id = "hr-group".into();
    }
    if let Ok(m) = &mut data.members {
        let hr = m.remove(&g(3)).unwrap();
        m.insert("hr-group".into(), hr);
    }
    let p = build(&data);
    let erin = p
        .identities
        .iter()
        .position(|i| i.id.as_str() == u(7))
        .unwrap();
    assert_eq!(p.identities[erin].groups.len(), 1);
    assert_eq!(p.facts[erin].unlisted_groups, vec![("hr-group", "HR")]);
    assert!(
        p.skipped
            .iter()
            .any(|s| s.starts_with("group \"hr-group\""))
    );
}

#[test]
fn attributes_hold_only_what_graph_gave() {
    let data = tenant();
    let p = build(&data);
    let attrs = |n| find(&p, n).attributes.as_ref().map(|a| a.get().to_string());
    assert_eq!(
        attrs(1).as_deref(),
        Some(
            r#"{"on_premises_sync_enabled":true,"created_date_time":"2024-01-01T00:00:00Z","methods_registered":[],"is_admin":false}"#
        )
    );
    assert_eq!(
        attrs(13).as_deref(),
        Some(
            r#"{"created_date_time":"2024-01-01T00:00:00Z","risk_level":"high","risk_state":"confirmedCompromised","risk_detail":"none"}"#
        )
    );
    assert_eq!(attrs(9), None);
}
