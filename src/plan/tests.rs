//! Unit tests of planning: merging, modes, exceptions, guardrails and downgrades,
//! built from JSON scans and TOML config in memory.

use std::path::PathBuf;

use chrono::TimeZone;
use serde_json::{Value, json};

use super::*;
use crate::config::RuleLimits;
use crate::exceptions::Exception;
use crate::scan::GLOBAL_ADMIN_TEMPLATE;

fn guid(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

fn ident(n: u32, upn: &str) -> Value {
    json!({
        "id": guid(n), "user_principal_name": upn, "display_name": upn,
        "user_type": "Member", "account_enabled": true, "last_sign_in": null,
        "roles": [], "groups": []
    })
}

fn ga(n: u32, upn: &str) -> Value {
    let mut v = ident(n, upn);
    v["roles"] = json!([{
        "assignment_id": format!("ga-{n}"), "role_definition_id": GLOBAL_ADMIN_TEMPLATE,
        "role_name": "Global Administrator", "directory_scope_id": "/",
        "assignment_type": "active"
    }]);
    v
}

/// A scan of `n` plain members u1@t.com.. plus `more`.
fn scan(n: u32, more: Vec<Value>) -> Scan {
    let mut identities: Vec<Value> = (1..=n).map(|i| ident(i, &format!("u{i}@t.com"))).collect();
    identities.extend(more);
    let doc = json!({
        "schema_version": 1, "tenant_id": guid(999), "tenant_name": "T",
        "scanned_at": "2026-11-20T00:00:00Z", "identities": identities, "findings": []
    });
    Scan::from_slice(doc.to_string().as_bytes(), "test scan").unwrap()
}

/// Config with `top` keys and tables, and one tenant with `tenant` keys.
fn config(top: &str, tenant: &str) -> Config {
    toml::from_str(&format!(
        "{top}\n[[tenant]]\nname = \"t\"\ntenant_id = \"{}\"\nsource = {{ dir = \"scans\" }}\n{tenant}\n",
        guid(999)
    ))
    .unwrap()
}

/// Guardrail limits that stay out of the way.
const ROOMY: &str = "[guardrails]\nmax_actions_percent = 100.0";

/// Rule `plain` has no mode of its own; rule `careful` asks for approval.
fn rules() -> RuleSet {
    let rule = |name: &str, mode: &str| {
        (
            PathBuf::from(format!("{name}.rhai")),
            format!(
                "fn metadata() {{ #{{ name: \"{name}\", description: \"d\"{mode} }} }}\nfn evaluate(finding, identity, tenant) {{ () }}\n"
            ),
        )
    };
    RuleSet::from_sources(
        vec![rule("plain", ""), rule("careful", ", mode: \"approval\"")],
        &RuleLimits::default(),
    )
    .unwrap()
}

fn proposal(rule: &str, identity: usize, kind: ActionKind, targets: &[&str]) -> Proposal {
    Proposal {
        rule: rule.into(),
        finding: "F1".into(),
        identity,
        kind,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        reason: format!("{rule} says so"),
    }
}

fn exceptions(items: &[&str]) -> Exceptions {
    let mut ex = Exceptions::default();
    ex.items = items
        .iter()
        .map(|t| toml::from_str::<Exception>(t).unwrap())
        .collect();
    ex
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 1, 12, 0, 0).unwrap()
}

fn plan_of(
    cfg: &Config,
    scan: &Scan,
    proposals: Vec<Proposal>,
    exceptions: &Exceptions,
    previous: Option<i64>,
) -> Plan {
    let rules = rules();
    let eval = Evaluation {
        proposals,
        ..Evaluation::default()
    };
    let input = Inputs {
        scan,
        rules: &rules,
        eval: &eval,
        exceptions,
        previous,
        now: now(),
    };
    build(cfg, &cfg.tenants[0], &input)
}

fn verdicts(plan: &Plan) -> Vec<&Verdict> {
    plan.actions.iter().map(|a| &a.decision).collect()
}

#[test]
fn duplicate_proposals_merge_into_one_action_with_every_reason() {
    let cfg = config(ROOMY, "");
    let p = plan_of(
        &cfg,
        &scan(2, vec![]),
        vec![
            proposal("plain", 0, ActionKind::EnforceMfa, &[]),
            proposal("plain", 1, ActionKind::EnforceMfa, &[]),
            proposal("careful", 0, ActionKind::EnforceMfa, &[]),
            proposal("plain", 0, ActionKind::EnforceMfa, &[]),
            proposal("plain", 0, ActionKind::RemoveRoleAssignment, &["a"]),
            proposal("plain", 0, ActionKind::RemoveRoleAssignment, &["b"]),
        ],
        &Exceptions::default(),
        None,
    );
    let keys: Vec<(&str, ActionKind, &[String])> = p
        .actions
        .iter()
        .map(|a| (a.identity_upn.as_str(), a.kind, a.targets.as_slice()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("u1@t.com", ActionKind::EnforceMfa, &[][..]),
            ("u2@t.com", ActionKind::EnforceMfa, &[][..]),
            (
                "u1@t.com",
                ActionKind::RemoveRoleAssignment,
                &["a".to_string()][..]
            ),
            (
                "u1@t.com",
                ActionKind::RemoveRoleAssignment,
                &["b".to_string()][..]
            ),
        ]
    );
    let rules: Vec<&str> = p.actions[0]
        .reasons
        .iter()
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(rules, ["plain", "careful"]);
    assert_eq!(p.actions[0].reasons[1].reason, "careful says so");
}

#[test]
fn the_strictest_of_config_tenant_and_rule_modes_wins() {
    let proposals = || {
        vec![
            proposal("plain", 0, ActionKind::EnforceMfa, &[]),
            proposal("careful", 1, ActionKind::EnforceMfa, &[]),
            proposal("plain", 1, ActionKind::EnforceMfa, &[]),
        ]
    };
    let cfg = config(&format!("mode = \"enforce\"\n{ROOMY}"), "");
    let p = plan_of(
        &cfg,
        &scan(2, vec![]),
        proposals(),
        &Exceptions::default(),
        None,
    );
    assert_eq!(p.mode, Mode::Enforce);
    let modes: Vec<Mode> = p.actions.iter().map(|a| a.mode).collect();
    assert_eq!(modes, [Mode::Enforce, Mode::Approval]);

    let cfg = config(
        &format!("mode = \"enforce\"\n{ROOMY}"),
        "mode = \"dry-run\"",
    );
    let p = plan_of(
        &cfg,
        &scan(2, vec![]),
        proposals(),
        &Exceptions::default(),
        None,
    );
    assert_eq!(p.mode, Mode::DryRun);
    let modes: Vec<Mode> = p.actions.iter().map(|a| a.mode).collect();
    assert_eq!(modes, [Mode::DryRun, Mode::DryRun]);
}

#[test]
fn too_many_actions_downgrade_the_run_and_refused_ones_do_not_count() {
    let cfg = config(
        "mode = \"enforce\"\n[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 2",
        "",
    );
    let guest = {
        let mut g = ident(9, "g@t.com");
        g["user_type"] = json!("Guest");
        g
    };
    let mut proposals: Vec<Proposal> = (0..2)
        .map(|i| proposal("plain", i, ActionKind::EnforceMfa, &[]))
        .collect();
    proposals.push(proposal("plain", 2, ActionKind::RevokeSessions, &[]));
    let p = plan_of(
        &cfg,
        &scan(2, vec![guest.clone()]),
        proposals.clone(),
        &Exceptions::default(),
        None,
    );
    assert!(p.downgrades.is_empty(), "{:?}", p.downgrades);
    assert_eq!(p.proceeding(), 2);

    proposals.push(proposal("plain", 2, ActionKind::EnforceMfa, &[]));
    let p = plan_of(
        &cfg,
        &scan(2, vec![guest]),
        proposals,
        &Exceptions::default(),
        None,
    );
    assert_eq!(
        p.downgrades,
        ["max_actions_per_run: 3 actions planned, the limit is 2"]
    );
    assert_eq!(p.mode, Mode::Approval);
    assert!(p.actions.iter().all(|a| a.mode == Mode::Approval));
}

#[test]
fn acting_on_too_large_a_share_of_identities_downgrades_the_run() {
    let cfg = config("mode = \"enforce\"", "");
    let two = vec![
        proposal("plain", 0, ActionKind::EnforceMfa, &[]),
        proposal("plain", 0, ActionKind::RevokeSessions, &[]),
        proposal("plain", 1, ActionKind::EnforceMfa, &[]),
    ];
    let p = plan_of(
        &cfg,
        &scan(10, vec![]),
        two.clone(),
        &Exceptions::default(),
        None,
    );
    assert!(p.downgrades.is_empty(), "20% is the limit, not over it");
    assert_eq!(p.mode, Mode::Enforce);

    let mut three = two;
    three.push(proposal("plain", 2, ActionKind::EnforceMfa, &[]));
    let p = plan_of(&cfg, &scan(10, vec![]), three, &Exceptions::default(), None);
    assert_eq!(
        p.downgrades,
        ["max_actions_percent: actions on 3 of 10 identities (30.0%), the limit is 20%"]
    );
    assert_eq!(verdicts(&p), [&Verdict::Proceed; 4]);
    assert_eq!(p.mode, Mode::Approval);
    assert!(p.actions.iter().all(|a| a.mode == Mode::Approval));
}

#[test]
fn the_circuit_breaker_compares_with_the_previous_run() {
    let cfg = config(
        "mode = \"enforce\"\n[guardrails]\nmax_actions_percent = 100.0\ncircuit_breaker_factor = 2.0\ncircuit_breaker_min_actions = 3",
        "",
    );
    let proposals: Vec<Proposal> = (0..3)
        .map(|i| proposal("plain", i, ActionKind::EnforceMfa, &[]))
        .collect();
    let run = |previous| {
        plan_of(
            &cfg,
            &scan(3, vec![]),
            proposals.clone(),
            &Exceptions::default(),
            previous,
        )
    };
    assert!(run(None).downgrades.is_empty());
    assert!(run(Some(2)).downgrades.is_empty(), "3 is not over 2 x 2");
    let p = run(Some(1));
    assert_eq!(
        p.downgrades,
        ["circuit breaker: 3 actions planned against 1 in the previous run (factor 2)"]
    );
    assert_eq!(p.mode, Mode::Approval);
}

const EXCEPTION: &str = "identity = \"u1@t.com\"\nreason = \"vendor migration\"\nowner = \"sec-team\"\nexpires = 2027-06-30";

#[test]
fn an_exception_suppresses_the_action_with_its_owner_and_reason() {
    let cfg = config(ROOMY, "");
    let p = plan_of(
        &cfg,
        &scan(2, vec![]),
        vec![
            proposal("plain", 0, ActionKind::DisableUser, &[]),
            proposal("plain", 1, ActionKind::DisableUser, &[]),
        ],
        &exceptions(&[EXCEPTION]),
        None,
    );
    assert_eq!(
        verdicts(&p),
        [
            &Verdict::Excepted(
                "exception until 2027-06-30 (owner sec-team): vendor migration".into()
            ),
            &Verdict::Proceed
        ]
    );
    assert_eq!(p.proceeding(), 1);
}

#[test]
fn an_exception_for_one_rule_does_not_cover_an_action_another_rule_asked_for() {
    let cfg = config(ROOMY, "");
    let for_plain = format!("rule = \"plain\"\n{EXCEPTION}");
    let p = plan_of(
        &cfg,
        &scan(1, vec![]),
        vec![
            proposal("plain", 0, ActionKind::DisableUser, &[]),
            proposal("careful", 0, ActionKind::DisableUser, &[]),
            proposal("plain", 0, ActionKind::EnforceMfa, &[]),
        ],
        &exceptions(&[&for_plain]),
        None,
    );
    assert_eq!(p.actions[0].decision, Verdict::Proceed);
    assert!(matches!(p.actions[1].decision, Verdict::Excepted(_)));
}

#[test]
fn an_expired_exception_no_longer_suppresses() {
    let cfg = config(ROOMY, "");
    let expired = EXCEPTION.replace("2027-06-30", "2026-12-31");
    let p = plan_of(
        &cfg,
        &scan(1, vec![]),
        vec![proposal("plain", 0, ActionKind::DisableUser, &[])],
        &exceptions(&[&expired]),
        None,
    );
    assert_eq!(verdicts(&p), [&Verdict::Proceed]);
}

#[test]
fn protection_refuses_before_any_exception_applies() {
    let cfg = config(&format!("{ROOMY}\n[protected]\nupns = [\"u1@t.com\"]"), "");
    let p = plan_of(
        &cfg,
        &scan(1, vec![]),
        vec![proposal("plain", 0, ActionKind::DisableUser, &[])],
        &exceptions(&[EXCEPTION]),
        None,
    );
    assert_eq!(
        verdicts(&p),
        [&Verdict::Refused(
            "protected: u1@t.com is a protected identity (protected.upns)".into()
        )]
    );
}

#[test]
fn the_plan_keeps_the_last_global_administrator() {
    let cfg = config(ROOMY, "");
    let p = plan_of(
        &cfg,
        &scan(0, vec![ga(1, "a@t.com"), ga(2, "b@t.com")]),
        vec![
            proposal("plain", 0, ActionKind::DisableUser, &[]),
            proposal("plain", 1, ActionKind::RemoveRoleAssignment, &["ga-2"]),
        ],
        &Exceptions::default(),
        None,
    );
    assert_eq!(
        verdicts(&p),
        [
            &Verdict::Proceed,
            &Verdict::Refused("last-global-admin: b@t.com is the last enabled Global Administrator in the scan; the tenant would be left without one".into())
        ]
    );
}
