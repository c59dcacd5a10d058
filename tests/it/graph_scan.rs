//! The built-in posture scan against a fake tenant full of traps: `scan
//! --tenant` writes a scan that `plan` accepts, whose findings and affected
//! identities are exactly right; licence and permission gaps are "not
//! evaluated", never clean; a tenant whose users cannot be read gets no scan;
//! a source with `graph` scans before planning.

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use fake_entra::{
    FakeTenant, PimSchedule, Registration, Risk, RoleAssignment, RoleEligibility, SignIn, User,
    UserDetails,
};
use serde_json::Value;

use crate::common::*;

const GA: &str = "62e90394-69f5-4237-9190-012177145e10";
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
const SECURITY_ADMIN: &str = "194ae4cb-b126-40b2-bd5b-6091b380977d";

/// Users below this number are the traps; fillers make the listing page.
const FILLERS: u32 = 1_100;

fn ago(days: i64) -> String {
    (Utc::now() - Duration::days(days)).to_rfc3339()
}

fn user(fake: &FakeTenant, n: u32, upn: &str, guest: bool, enabled: bool) {
    fake.add_user(User {
        id: guid(n),
        user_principal_name: upn.into(),
        display_name: upn.split('@').next().unwrap_or(upn).into(),
        user_type: if guest { "Guest" } else { "Member" }.into(),
        account_enabled: enabled,
    });
}

fn details(
    fake: &FakeTenant,
    n: u32,
    created_days_ago: i64,
    signed_in_days_ago: Option<i64>,
    methods: &[&str],
) -> UserDetails {
    let d = UserDetails {
        created: Some(ago(created_days_ago)),
        on_premises_sync_enabled: None,
        sign_in: signed_in_days_ago.map(|d| SignIn {
            last: Some(ago(d)),
            last_non_interactive: None,
            last_successful: Some(ago(d)),
        }),
        registration: Some(Registration::with_methods(methods)),
        risk: None,
    };
    fake.set_user_details(&guid(n), d.clone());
    d
}

fn assign(fake: &FakeTenant, id: &str, principal: String, role: &str) {
    fake.add_role_assignment(RoleAssignment {
        id: id.into(),
        principal_id: principal,
        role_definition_id: role.into(),
        directory_scope_id: "/".into(),
        pim_managed: false,
    });
}

/// The trap tenant (numbers are object ids through `guid`):
/// 1 break-glass GA (protected), permanent, stale, unregistered;
/// 2 GA through PIM (time-bound), FIDO2; 3 permanent GA, push only, synced;
/// 4 eligible GA only, push; 5 guest User Administrator, push;
/// 6 stale member, unregistered; 7 never signed in, created 400 days ago;
/// 8 never signed in, created 10 days ago, unregistered; 9 disabled and stale;
/// 10 stale member of a role-assignable group holding Security Administrator;
/// 11 high risk at risk; 12 high risk remediated; 13 member of a dynamic group.
async fn trap_tenant() -> (FakeTenant, Workspace) {
    let (fake, mut ws) =
        enforce_setup(&format!("[protected]\nids = [\"{}\"]\n", guid(1)), "").await;
    ws.set_top("mode = \"dry-run\"");
    fake.set_tenant_name("Contoso Traps");
    let push = ["microsoftAuthenticatorPush"];
    user(&fake, 1, "breakglass01@contoso.com", false, true);
    details(&fake, 1, 900, Some(400), &[]);
    assign(&fake, "asg-bg", guid(1), GA);
    user(&fake, 2, "alice@contoso.com", false, true);
    details(&fake, 2, 900, Some(1), &["fido2SecurityKey"]);
    fake.add_role_assignment(RoleAssignment {
        id: "asg-alice".into(),
        principal_id: guid(2),
        role_definition_id: GA.into(),
        directory_scope_id: "/".into(),
        pim_managed: true,
    });
    fake.set_pim_schedule(
        "asg-alice",
        PimSchedule {
            start: ago(0),
            end: Some((Utc::now() + Duration::hours(4)).to_rfc3339()),
            assignment_type: "Activated".into(),
        },
    );
    user(&fake, 3, "bob@contoso.com", false, true);
    let mut d = details(&fake, 3, 900, Some(2), &push);
    d.on_premises_sync_enabled = Some(true);
    fake.set_user_details(&guid(3), d);
    assign(&fake, "asg-bob", guid(3), GA);
    user(&fake, 4, "carol@contoso.com", false, true);
    details(&fake, 4, 900, Some(3), &push);
    fake.add_eligibility(RoleEligibility {
        id: "elig-carol".into(),
        principal_id: guid(4),
        role_definition_id: GA.into(),
        directory_scope_id: "/".into(),
        start: ago(30),
        end: None,
        member_type: "Direct".into(),
    });
    user(&fake, 5, "dave_partner.com#EXT#@contoso.com", true, true);
    details(&fake, 5, 900, Some(4), &push);
    assign(&fake, "asg-dave", guid(5), USER_ADMIN);
    user(&fake, 6, "eve@contoso.com", false, true);
    details(&fake, 6, 900, Some(200), &[]);
    user(&fake, 7, "frank@contoso.com", false, true);
    details(&fake, 7, 400, None, &push);
    user(&fake, 8, "gina@contoso.com", false, true);
    details(&fake, 8, 10, None, &[]);
    user(&fake, 9, "hank@contoso.com", false, false);
    details(&fake, 9, 900, Some(300), &push);
    user(&fake, 10, "ivan@contoso.com", false, true);
    details(&fake, 10, 900, Some(120), &[]);
    let mut tier0 = fake_group(9001, "Tier0 Admins");
    tier0.is_assignable_to_role = true;
    fake.add_group(tier0);
    fake.add_member(&guid(9001), &guid(10));
    assign(&fake, "asg-tier0", guid(9001), SECURITY_ADMIN);
    user(&fake, 11, "judy@contoso.com", false, true);
    let mut d = details(&fake, 11, 900, Some(1), &push);
    d.risk = Some(Risk {
        level: "high".into(),
        state: "atRisk".into(),
        detail: "none".into(),
        last_updated: None,
    });
    fake.set_user_details(&guid(11), d);
    user(&fake, 12, "ken@contoso.com", false, true);
    let mut d = details(&fake, 12, 900, Some(1), &push);
    d.risk = Some(Risk {
        level: "high".into(),
        state: "remediated".into(),
        detail: "userPerformedSecuredPasswordReset".into(),
        last_updated: None,
    });
    fake.set_user_details(&guid(12), d);
    user(&fake, 13, "lena@contoso.com", false, true);
    details(&fake, 13, 900, Some(1), &push);
    let mut sales = fake_group(9002, "Sales (dynamic)");
    sales.dynamic = true;
    fake.add_group(sales);
    fake.add_member(&guid(9002), &guid(13));
    let mut synced = fake_group(9003, "SG-Helpdesk (synced)");
    synced.on_premises_sync_enabled = true;
    fake.add_group(synced);
    fake.add_member(&guid(9003), &guid(13));
    for n in 100..100 + FILLERS {
        user(&fake, n, &format!("filler{n}@contoso.com"), false, true);
        details(&fake, n, 900, Some(1), &push);
    }
    (fake, ws)
}

/// The one scan file in the workspace's scan directory.
fn written_scan(ws: &Workspace) -> Value {
    let files: Vec<_> = std::fs::read_dir(ws.path().join("scans"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap()
}

/// Affected identity numbers of each finding.
fn affected(scan: &Value) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    scan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let ids = f["affected_identities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (f["id"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn ids(ns: &[u32]) -> BTreeSet<String> {
    ns.iter().map(|n| guid(*n)).collect()
}

fn not_evaluated(scan: &Value) -> BTreeSet<String> {
    scan["not_evaluated"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["check"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_of_the_trap_tenant_finds_exactly_the_affected_identities_and_plan_accepts_it() {
    let (fake, ws) = trap_tenant().await;
    let out = ws.cli_async(&["scan", "--tenant", "test"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout.clone();
    assert!(text.contains("written to"), "{text}");
    let scan = written_scan(&ws);
    assert_eq!(scan["tenant_name"], "Contoso Traps");
    assert_eq!(
        scan["identities"].as_array().unwrap().len(),
        13 + FILLERS as usize
    );
    assert!(not_evaluated(&scan).is_empty(), "{}", scan["not_evaluated"]);
    let got = affected(&scan);
    let want: std::collections::BTreeMap<String, BTreeSet<String>> = [
        ("ER-MFA-001", ids(&[6, 8, 10])),
        ("ER-PRIV-002", ids(&[3, 4, 5, 10])),
        ("ER-STALE-003", ids(&[6, 7, 10])),
        ("ER-GUEST-004", ids(&[5])),
        ("ER-RISK-005", ids(&[11])),
        ("ER-PRIV-006", ids(&[3, 5, 10])),
        ("ER-GRP-007", ids(&[10])),
        ("ER-PRIV-008", ids(&[10])),
        ("ER-PRIV-009", ids(&[3])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
    // Roles through the group are marked so; the dynamic group is dynamic.
    let ident = |n: u32| {
        scan["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == guid(n))
            .unwrap()
            .clone()
    };
    assert_eq!(ident(10)["roles"][0]["via_group"], guid(9001));
    let groups = ident(13)["groups"].as_array().unwrap().clone();
    let group = |id: u32| groups.iter().find(|g| g["id"] == guid(id)).unwrap().clone();
    assert_eq!(group(9002)["dynamic"], true);
    assert_eq!(group(9003)["on_premises_synced"], true);
    assert_eq!(group(9003)["dynamic"], false);
    assert_eq!(ident(3)["roles"][0]["permanent"], true);
    assert_eq!(ident(2)["roles"][0]["permanent"], false);
    assert!(ident(7)["last_sign_in"].is_null());
    // Users were paged (500 per page with signInActivity), riskyUsers paced.
    let user_pages = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v1.0/users")
        .count();
    assert_eq!(user_pages, 3, "1,113 users at 500 per page");
    // History records the scan; plan accepts it.
    let ev: Vec<Value> = ws
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "scan_written")
        .collect();
    assert_eq!(ev.len(), 1);
    let detail: Value = serde_json::from_str(ev[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["checks_run"].as_array().unwrap().len(), 10);
    assert!(detail["requests"].as_u64().unwrap() >= 10, "{detail}");
    ws.add_rule(
        "stale.rhai",
        &rule("stale", "ER-STALE-003", r#"disable_user("stale")"#),
    );
    let out = ws.cli_async(&["plan", "--format", "json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan = out.stdout.clone();
    for n in [6, 7, 10] {
        assert!(plan.contains(&guid(n)), "{plan}");
    }
    assert!(
        !plan.contains(&guid(1)),
        "the break-glass account is never planned: {plan}"
    );
}

/// The checks each licence gap leaves not evaluated, and some it leaves running.
const P1_CHECKS: [&str; 5] = [
    "ER-MFA-001",
    "ER-PRIV-002",
    "ER-STALE-003",
    "ER-GRP-007",
    "ER-PRIV-008",
];
const P2_CHECKS: [&str; 2] = ["ER-RISK-005", "ER-PRIV-006"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_missing_licence_leaves_its_checks_not_evaluated_never_clean() {
    for (p1, p2) in [(false, true), (true, false), (false, false)] {
        let (fake, ws) = trap_tenant().await;
        fake.set_licences(p1, p2);
        let out = ws.cli_async(&["scan", "--tenant", "test"]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("NOT EVALUATED"), "{}", out.stdout);
        let scan = written_scan(&ws);
        let skipped = not_evaluated(&scan);
        let got = affected(&scan);
        let reasons = scan["not_evaluated"].to_string();
        for (licensed, checks, name) in [
            (p1, &P1_CHECKS[..], "Microsoft Entra ID P1"),
            (p2, &P2_CHECKS[..], "Microsoft Entra ID P2"),
        ] {
            for check in checks {
                assert_eq!(
                    skipped.contains(*check),
                    !licensed,
                    "{check} with p1={p1} p2={p2}"
                );
                assert_eq!(
                    got.contains_key(*check),
                    licensed,
                    "{check} with p1={p1} p2={p2}"
                );
            }
            assert_eq!(reasons.contains(name), !licensed, "{reasons}");
        }
        // What needs no licence still runs: guests with roles, synced admins.
        assert_eq!(got.get("ER-GUEST-004"), Some(&ids(&[5])));
        assert_eq!(got.get("ER-PRIV-009"), Some(&ids(&[3])));
        // Without P1 nobody reads as never signed in: the key is absent.
        let absent = scan["identities"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.get("last_sign_in").is_none());
        assert_eq!(absent, !p1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_and_unreadable_users_write_no_scan() {
    let (fake, ws) = trap_tenant().await;
    let granted = |without: &str| {
        Some(
            [
                "User.Read.All",
                "AuditLog.Read.All",
                "IdentityRiskyUser.Read.All",
                "RoleManagement.Read.Directory",
                "RoleEligibilitySchedule.Read.Directory",
                "RoleAssignmentSchedule.Read.Directory",
                "GroupMember.Read.All",
            ]
            .iter()
            .filter(|p| **p != without)
            .map(|p| p.to_string())
            .collect(),
        )
    };
    for (missing, check) in [
        ("AuditLog.Read.All", "ER-STALE-003"),
        ("IdentityRiskyUser.Read.All", "ER-RISK-005"),
        ("GroupMember.Read.All", "ER-GRP-007"),
    ] {
        fake.set_permissions(granted(missing));
        let out = ws.cli_async(&["scan", "--tenant", "test"]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let scan = written_scan(&ws);
        let reasons = scan["not_evaluated"].to_string();
        assert!(
            reasons.contains(&format!("the app lacks the permission {missing}")),
            "{missing}: {reasons}"
        );
        assert!(not_evaluated(&scan).contains(check), "{missing}: {reasons}");
        assert!(!affected(&scan).contains_key(check));
        std::fs::remove_dir_all(ws.path().join("scans")).unwrap();
        std::fs::create_dir_all(ws.path().join("scans")).unwrap();
    }
    fake.set_permissions(granted("User.Read.All"));
    let out = ws.cli_async(&["scan", "--tenant", "test"]).await;
    assert_ne!(out.code, 0);
    let err = out.stderr.clone();
    assert!(
        err.contains("cannot read the tenant's users, so no scan was written"),
        "{err}"
    );
    assert!(err.contains("User.Read.All"), "{err}");
    assert_eq!(
        std::fs::read_dir(ws.path().join("scans")).unwrap().count(),
        0
    );
    assert!(ws.events().iter().any(|e| e["kind"] == "scan_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_source_scans_before_each_run_keeps_scans_and_lists_them_by_time() {
    let (fake, mut ws) = trap_tenant().await;
    ws.set_tenant_extra(
        "source = { dir = \"scans\", keep_scans = 2, graph = { stale_days = 60 } }",
    );
    // Replace the default source line written by the workspace.
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap();
    let cfg = cfg.replacen("source = { dir = \"scans\" }\n", "", 1);
    std::fs::write(ws.config_path(), cfg).unwrap();
    ws.add_rule(
        "stale.rhai",
        &rule("stale", "ER-STALE-003", r#"disable_user("stale")"#),
    );
    fake.inject(fake_entra::Fault::Throttle {
        matching: "/v1.0/users".into(),
        count: 1,
        retry_after: Some(0.2),
    });
    for _ in 0..3 {
        let out = ws.cli_async(&["run", "--once"]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let written = ws
        .events()
        .iter()
        .filter(|e| e["kind"] == "scan_written")
        .count();
    assert_eq!(written, 3);
    let out = ws
        .cli_async(&["scans", "list", "--tenant", "test", "--format", "json"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed = ws_json_lines(&out.stdout);
    assert_eq!(listed.len(), 2, "keep_scans = 2: {listed:?}");
    assert!(listed[0]["scanned_at"].as_str() > listed[1]["scanned_at"].as_str());
    // A listed time picks that scan.
    let older = listed[1]["scanned_at"].as_str().unwrap();
    let out = ws
        .cli_async(&["plan", "--scanned-at", older, "--format", "json"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Each run planned from its own fresh scan: three recorded runs, each
    // from the file its own scan wrote just before.
    let events = ws.events();
    let order: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "scan_written" || e["kind"] == "run_recorded")
        .map(|e| {
            let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
            let file = d["file"]
                .as_str()
                .or(d["scan"].as_str())
                .unwrap()
                .to_string();
            (e["kind"].as_str().unwrap().to_string(), file)
        })
        .collect();
    assert_eq!(order.len(), 6, "{order:?}");
    for pair in order.chunks(2) {
        assert_eq!(pair[0].0, "scan_written");
        assert_eq!(pair[1].0, "run_recorded");
        assert_eq!(
            pair[0].1, pair[1].1,
            "the run plans from the scan just written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risky_users_throttled_without_retry_after_are_read_after_a_backoff() {
    let (fake, ws) = trap_tenant().await;
    // Identity Protection answers its excess with 429 and no Retry-After.
    fake.inject(fake_entra::Fault::Throttle {
        matching: "/v1.0/identityProtection/riskyUsers".into(),
        count: 2,
        retry_after: None,
    });
    let out = ws.cli_async(&["scan", "--tenant", "test"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let risky: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/v1.0/identityProtection/riskyUsers")
        .map(|r| r.status)
        .collect();
    assert_eq!(risky, [429, 429, 200]);
    let scan = written_scan(&ws);
    assert!(!not_evaluated(&scan).contains("ER-RISK-005"));
    assert_eq!(affected(&scan).get("ER-RISK-005"), Some(&ids(&[11])));
}

fn ws_json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
