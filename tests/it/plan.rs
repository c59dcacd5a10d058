//! Planning: every guardrail refuses with its reason, modes combine strictly,
//! duplicates merge, exceptions apply until they expire, runs are downgraded.

use serde_json::{Value, json};

use crate::common::*;

/// A workspace whose guardrail limits do not get in the way unless a test says so.
fn ws() -> Workspace {
    let mut ws = Workspace::new();
    ws.set_tables("[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 1000\n");
    ws
}

fn plan(ws: &Workspace) -> Vec<Value> {
    let out = ws.cli(&["plan", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    out.json_lines()
}

fn plan_stderr(ws: &Workspace) -> String {
    ws.cli(&["plan"]).stderr
}

fn only(actions: &[Value], upn: &str, action: &str) -> Value {
    let m: Vec<&Value> = actions
        .iter()
        .filter(|a| a["upn"] == upn && a["action"] == action)
        .collect();
    assert_eq!(m.len(), 1, "{action} for {upn} in {actions:#?}");
    m[0].clone()
}

fn refused(a: &Value, guard: &str) {
    assert_eq!(a["state"], "refused", "{a:#}");
    assert!(
        a["why"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{guard}: ")),
        "{a:#}"
    );
}

#[test]
fn protected_identities_by_id_upn_and_group_are_never_acted_on() {
    let mut ws = ws();
    ws.set_tables(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\n[protected]\nids = [\"{}\"]\nupns = [\"BG2@t.com\"]\ngroups = [\"Break Glass\"]\n",
        guid(1)
    ));
    ws.add_rule(
        "r.rhai",
        &rule("r", "F1", "[disable_user(\"x\"), enforce_mfa(\"y\")]"),
    );
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![
                ident(1, "bg1@t.com"),
                ident(2, "bg2@t.com"),
                with_group(ident(3, "bg3@t.com"), 50, "Break Glass", false, false),
                ident(4, "normal@t.com"),
            ],
            vec![finding("F1", "high", &[1, 2, 3, 4])],
        ),
    );
    let p = plan(&ws);
    assert_eq!(p.len(), 8);
    for upn in ["bg1@t.com", "bg2@t.com", "bg3@t.com"] {
        for act in ["disable_user", "enforce_mfa"] {
            refused(&only(&p, upn, act), "protected");
        }
    }
    assert!(
        only(&p, "bg3@t.com", "enforce_mfa")["why"]
            .as_str()
            .unwrap()
            .contains("\"Break Glass\"")
    );
    assert_eq!(only(&p, "normal@t.com", "disable_user")["state"], "planned");
    assert_eq!(only(&p, "normal@t.com", "enforce_mfa")["state"], "planned");
}

#[test]
fn revoke_sessions_is_refused_for_guests() {
    let ws = ws();
    ws.add_rule("r.rhai", &rule("r", "F1", "revoke_sessions(\"risky\")"));
    let mut ext = ident(3, "x_y.com#EXT#@t.com"); // Member type, but an #EXT# UPN
    ext["user_type"] = json!("Member");
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "m@t.com"), guest(2, "g@t.com"), ext],
            vec![finding("F1", "high", &[1, 2, 3])],
        ),
    );
    let p = plan(&ws);
    assert_eq!(only(&p, "m@t.com", "revoke_sessions")["state"], "planned");
    refused(&only(&p, "g@t.com", "revoke_sessions"), "guest-revoke");
    refused(
        &only(&p, "x_y.com#EXT#@t.com", "revoke_sessions"),
        "guest-revoke",
    );
}

#[test]
fn phishing_resistant_mfa_is_only_for_global_administrators() {
    let ws = ws();
    ws.add_rule(
        "r.rhai",
        &rule("r", "F1", "enforce_phishing_resistant_mfa(\"admin\")"),
    );
    let mut eligible = ident(3, "eligible@t.com");
    eligible["roles"] = json!([{
        "assignment_id": "e1", "role_definition_id": GA, "role_name": "Global Administrator",
        "directory_scope_id": "/", "assignment_type": "eligible"
    }]);
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![
                with_ga(ident(1, "ga@t.com"), "a1"),
                ident(2, "user@t.com"),
                eligible,
            ],
            vec![finding("F1", "high", &[1, 2, 3])],
        ),
    );
    let p = plan(&ws);
    assert_eq!(
        only(&p, "ga@t.com", "enforce_phishing_resistant_mfa")["state"],
        "planned"
    );
    refused(
        &only(&p, "user@t.com", "enforce_phishing_resistant_mfa"),
        "phishing-resistant-mfa-scope",
    );
    refused(
        &only(&p, "eligible@t.com", "enforce_phishing_resistant_mfa"),
        "phishing-resistant-mfa-scope",
    );
}

#[test]
fn group_removal_is_refused_for_dynamic_synced_and_unknown_groups() {
    let ws = ws();
    ws.add_rule(
        "r.rhai",
        &rule("r", "F1", "identity.groups.map(|g| remove_group_membership(g.id, \"stale\")) + [remove_group_membership(\"00000000-0000-0000-0000-0000000000ff\", \"not a member\")]"),
    );
    let u = with_group(
        with_group(
            with_group(ident(1, "u@t.com"), 10, "Dyn", true, false),
            11,
            "Synced",
            false,
            true,
        ),
        12,
        "Plain",
        false,
        false,
    );
    ws.add_scan(
        "s.json",
        &scan(&now_rfc3339(), vec![u], vec![finding("F1", "high", &[1])]),
    );
    let p = plan(&ws);
    assert_eq!(p.len(), 4, "{p:#?}");
    let by_target = |t: String| p.iter().find(|a| a["targets"] == t).unwrap().clone();
    refused(&by_target(guid(10)), "dynamic-group");
    refused(&by_target(guid(11)), "synced-group");
    assert_eq!(by_target(guid(12))["state"], "planned");
    refused(
        &by_target("00000000-0000-0000-0000-0000000000ff".into()),
        "unknown-target",
    );
}

#[test]
fn role_removal_must_name_an_active_assignment_the_identity_has() {
    let ws = ws();
    ws.add_rule(
        "r.rhai",
        &rule("r", "F1", "[remove_role_assignment(\"ua1\", \"standing\"), remove_role_assignment(\"el1\", \"eligible\"), remove_role_assignment(\"nope\", \"unknown\")]"),
    );
    let mut u = ident(1, "u@t.com");
    u["roles"] = json!([
        {"assignment_id": "ua1", "role_definition_id": "fe930be7-5e62-47db-91af-98c3a49a38b1", "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "active"},
        {"assignment_id": "el1", "role_definition_id": "fe930be7-5e62-47db-91af-98c3a49a38b1", "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "eligible"}
    ]);
    ws.add_scan(
        "s.json",
        &scan(&now_rfc3339(), vec![u], vec![finding("F1", "high", &[1])]),
    );
    let p = plan(&ws);
    let by_target = |t: &str| p.iter().find(|a| a["targets"] == t).unwrap().clone();
    assert_eq!(by_target("ua1")["state"], "planned");
    refused(&by_target("el1"), "unknown-target");
    refused(&by_target("nope"), "unknown-target");
}

#[test]
fn the_last_enabled_global_administrator_is_never_disabled_or_demoted() {
    let ws = ws();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale admin\")"));
    ws.add_rule("s.rhai", &rule("s", "F2", "remove_role_assignment(identity.active_role_assignments(\"Global Administrator\"), \"standing\")"));
    let mut disabled_ga = with_ga(ident(3, "off@t.com"), "a3");
    disabled_ga["account_enabled"] = json!(false);
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![
                with_ga(ident(1, "ga1@t.com"), "a1"),
                with_ga(ident(2, "ga2@t.com"), "a2"),
                disabled_ga,
            ],
            vec![
                finding("F1", "high", &[1, 2, 3]),
                finding("F2", "high", &[2]),
            ],
        ),
    );
    let p = plan(&ws);
    // ga1 is disabled first; ga2 is then the last enabled GA: its disable and its
    // role removal are both refused. The disabled one is refused as already disabled.
    assert_eq!(only(&p, "ga1@t.com", "disable_user")["state"], "planned");
    refused(&only(&p, "ga2@t.com", "disable_user"), "last-global-admin");
    refused(
        &only(&p, "ga2@t.com", "remove_role_assignment"),
        "last-global-admin",
    );
    refused(&only(&p, "off@t.com", "disable_user"), "already-disabled");
}

#[test]
fn the_same_action_from_several_rules_and_findings_is_one_action_with_every_reason() {
    let ws = ws();
    ws.add_rule("a.rhai", &rule("a", "F1", "disable_user(\"from a\")"));
    ws.add_rule("b.rhai", &rule("b", "F2", "disable_user(\"from b\")"));
    ws.add_rule(
        "c.rhai",
        &rule(
            "c",
            "F2",
            "[disable_user(\"from c\"), disable_user(\"from c\")]",
        ),
    );
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u@t.com")],
            vec![finding("F1", "high", &[1]), finding("F2", "low", &[1])],
        ),
    );
    let p = plan(&ws);
    assert_eq!(p.len(), 1, "{p:#?}");
    let reasons = p[0]["reasons"].as_array().unwrap();
    let got: Vec<(String, String)> = reasons
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().into(),
                r["finding"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), "F1".into()),
            ("b".into(), "F2".into()),
            ("c".into(), "F2".into())
        ]
    );
    assert_eq!(p[0]["rules"], "a,b,c");
}

fn mode_ws(config_mode: &str, tenant_mode: Option<&str>, rule_mode: Option<&str>) -> Workspace {
    let mut ws = ws();
    ws.set_top(&format!("mode = \"{config_mode}\""));
    if let Some(m) = tenant_mode {
        ws.set_tenant_extra(&format!("mode = \"{m}\""));
    }
    let meta_mode = rule_mode
        .map(|m| format!(", mode: \"{m}\""))
        .unwrap_or_default();
    ws.add_rule(
        "r.rhai",
        &format!("fn metadata() {{ #{{ name: \"r\", description: \"d\"{meta_mode} }} }}\nfn evaluate(f, i, t) {{ disable_user(\"x\") }}"),
    );
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    ws
}

#[test]
fn the_effective_mode_is_the_strictest_of_config_tenant_and_rule() {
    let cases = [
        ("enforce", None, None, "ready", "enforce"),
        ("enforce", Some("approval"), None, "pending", "approval"),
        ("enforce", None, Some("approval"), "pending", "approval"),
        ("enforce", None, Some("dry-run"), "planned", "dry-run"),
        ("approval", Some("enforce"), None, "pending", "approval"),
        ("approval", None, Some("enforce"), "pending", "approval"),
        (
            "dry-run",
            Some("enforce"),
            Some("enforce"),
            "planned",
            "dry-run",
        ),
    ];
    for (c, t, r, state, mode) in cases {
        let p = plan(&mode_ws(c, t, r));
        assert_eq!(p[0]["state"], state, "config {c} tenant {t:?} rule {r:?}");
        assert_eq!(p[0]["mode"], mode, "config {c} tenant {t:?} rule {r:?}");
    }
}

#[test]
fn the_default_mode_is_dry_run() {
    let ws = ws();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let p = plan(&ws);
    assert_eq!(p[0]["state"], "planned");
    assert_eq!(p[0]["mode"], "dry-run");
}

fn many(n: u32) -> Value {
    scan(
        &now_rfc3339(),
        (1..=n).map(|i| ident(i, &format!("u{i}@t.com"))).collect(),
        vec![finding("F1", "high", &(1..=n).collect::<Vec<_>>())],
    )
}

#[test]
fn too_many_actions_downgrade_an_enforce_run_to_approval() {
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables("[guardrails]\nmax_actions_per_run = 3\nmax_actions_percent = 100.0\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    ws.add_scan("s.json", &many(4));
    let p = plan(&ws);
    assert!(
        p.iter()
            .all(|a| a["state"] == "pending" && a["mode"] == "approval"),
        "{p:#?}"
    );
    assert!(plan_stderr(&ws).contains("max_actions_per_run: 4 actions planned, the limit is 3"));

    ws.set_tables("[guardrails]\nmax_actions_per_run = 100\nmax_actions_percent = 50.0\n");
    let p = plan(&ws);
    assert!(p.iter().all(|a| a["state"] == "pending"), "{p:#?}");
    assert!(
        plan_stderr(&ws).contains("max_actions_percent: actions on 4 of 4 identities (100.0%)")
    );

    ws.set_tables("[guardrails]\nmax_actions_per_run = 4\nmax_actions_percent = 100.0\n");
    let p = plan(&ws);
    assert!(
        p.iter().all(|a| a["state"] == "ready"),
        "at the limit it still enforces: {p:#?}"
    );
}

#[test]
fn the_downgrade_is_recorded_in_history() {
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables("[guardrails]\nmax_actions_per_run = 1\nmax_actions_percent = 100.0\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    ws.add_scan("s.json", &many(2));
    assert_eq!(ws.cli(&["run", "--once"]).code, 0);
    let ev: Vec<Value> = ws
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "run_downgraded")
        .collect();
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0]["detail"]
            .as_str()
            .unwrap()
            .contains("max_actions_per_run")
    );
}

#[test]
fn the_circuit_breaker_trips_when_actions_jump_far_above_the_previous_run() {
    let mut ws = Workspace::new();
    ws.set_top("mode = \"approval\"");
    ws.set_tables("[guardrails]\nmax_actions_per_run = 1000\nmax_actions_percent = 100.0\ncircuit_breaker_factor = 3.0\ncircuit_breaker_min_actions = 5\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    ws.add_scan("a.json", &many(2));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("2 pending approval"), "{}", out.stderr);
    assert!(!out.stderr.contains("circuit breaker"), "{}", out.stderr);
    std::fs::remove_file(ws.path().join("scans/a.json")).unwrap();
    ws.add_scan("b.json", &many(7));
    let out = ws.cli(&["run", "--once"]);
    assert!(
        out.stderr
            .contains("circuit breaker: 7 actions planned against 2 in the previous run"),
        "{}",
        out.stderr
    );
    // The 2 actions of the first scan are still pending: carried over, not queued again.
    assert!(out.stderr.contains("5 pending approval"), "{}", out.stderr);
    assert!(
        out.stderr.contains("2 action(s) carried over"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_exception_skips_the_action_until_it_expires() {
    let ws = ws();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    ws.add_rule("m.rhai", &rule("m", "F1", "enforce_mfa(\"y\")"));
    ws.write(
        "policies/exceptions.toml",
        &format!(
            "[[exception]]\nidentity = \"u1@t.com\"\nrule = \"r\"\naction = \"disable_user\"\nreason = \"on leave\"\nowner = \"iam\"\nexpires = 2999-01-01\n\n\
             [[exception]]\nidentity = \"{}\"\nreason = \"old\"\nowner = \"iam\"\nexpires = \"2020-01-01\"\n",
            guid(2)
        ),
    );
    ws.add_scan("s.json", &many(2));
    let p = plan(&ws);
    let a = only(&p, "u1@t.com", "disable_user");
    assert_eq!(a["state"], "skipped");
    assert!(
        a["why"]
            .as_str()
            .unwrap()
            .contains("exception until 2999-01-01 (owner iam): on leave"),
        "{a:#}"
    );
    assert_eq!(
        only(&p, "u1@t.com", "enforce_mfa")["state"],
        "planned",
        "the exception names one action"
    );
    assert_eq!(
        only(&p, "u2@t.com", "disable_user")["state"],
        "planned",
        "expired exceptions no longer apply"
    );
}

#[test]
fn a_bad_exceptions_file_is_a_clear_error() {
    let ws = ws();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    ws.write(
        "policies/exceptions.toml",
        "[[exception]]\nidentity = \"x\"\nreason = \"r\"\nowner = \"o\"\nexpires = \"soon\"\n",
    );
    ws.add_scan("s.json", &many(1));
    let out = ws.cli(&["plan"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("exceptions.toml"), "{}", out.stderr);
    assert!(out.stderr.contains("line 5"), "{}", out.stderr);
}
