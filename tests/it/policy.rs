//! Rules: the sandbox holds, errors name file and place, one failing rule never
//! stops the others, `policy check` and `policy test` work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use entra_remediator::config::RuleLimits;
use entra_remediator::policy::{PolicyError, RuleSet};
use entra_remediator::scan::Scan;

use crate::common::*;

fn load(files: &[(&str, String)]) -> Result<RuleSet, PolicyError> {
    load_with(files, &RuleLimits::default())
}

fn load_with(files: &[(&str, String)], limits: &RuleLimits) -> Result<RuleSet, PolicyError> {
    RuleSet::from_sources(
        files
            .iter()
            .map(|(n, t)| (PathBuf::from(format!("policies/{n}")), t.clone()))
            .collect(),
        limits,
    )
}

fn small_scan() -> Arc<Scan> {
    let s = scan(
        "2026-11-20T06:00:00Z",
        vec![ident(1, "a@t.com"), {
            let mut g = guest(2, "g_x.com#EXT#@t.com");
            g["last_sign_in"] = serde_json::json!("2026-05-01T06:00:00Z");
            g
        }],
        vec![finding("F1", "high", &[1, 2])],
    );
    Arc::new(Scan::from_slice(s.to_string().as_bytes(), "test").unwrap())
}

fn invalid(e: PolicyError) -> String {
    match e {
        PolicyError::Invalid(v) => v
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let text = "fn metadata() { #{ name: \"x\", description: \"d\" } }\nfn evaluate(finding, identity, tenant) {\n  let x = ;\n}\n";
    let err = invalid(load(&[("bad.rhai", text.into())]).err().unwrap());
    assert!(err.starts_with("policies/bad.rhai:3:"), "{err}");
}

#[test]
fn a_misspelt_action_is_caught_by_check_with_its_place() {
    let text = rule("x", "F1", "disable_usr(\"typo\")");
    let err = invalid(load(&[("typo.rhai", text)]).err().unwrap());
    assert!(err.contains("policies/typo.rhai:2:"), "{err}");
    assert!(
        err.contains("unknown function or action \"disable_usr\""),
        "{err}"
    );
    assert!(
        err.contains("disable_user"),
        "lists the real action names: {err}"
    );
}

#[test]
fn metadata_problems_are_reported() {
    let cases = [
        (
            "fn evaluate(finding, identity, tenant) { () }",
            "missing fn metadata()",
        ),
        (
            "fn metadata() { #{ name: \"x\", description: \"d\" } }",
            "missing fn evaluate",
        ),
        (
            "fn metadata() { #{ name: \"Bad Name\", description: \"d\" } }\nfn evaluate(f, i, t) { () }",
            "must be lowercase",
        ),
        (
            "fn metadata() { #{ name: \"x\" } }\nfn evaluate(f, i, t) { () }",
            "needs a non-empty description",
        ),
        (
            "fn metadata() { #{ name: \"x\", description: \"d\", mode: \"yolo\" } }\nfn evaluate(f, i, t) { () }",
            "metadata mode \"yolo\"",
        ),
        (
            "fn metadata() { #{ name: \"x\", description: \"d\", colour: 1 } }\nfn evaluate(f, i, t) { () }",
            "unknown metadata key \"colour\"",
        ),
        (
            "let x = 1;\nfn metadata() { #{ name: \"x\", description: \"d\" } }\nfn evaluate(f, i, t) { () }",
            "top-level statements are not run",
        ),
    ];
    for (text, needle) in cases {
        let err = invalid(load(&[("m.rhai", text.into())]).err().unwrap());
        assert!(err.contains(needle), "for {text:?}: {err}");
    }
}

#[test]
fn two_rules_with_one_name_are_refused() {
    let err = invalid(
        load(&[
            ("a.rhai", rule("same", "F1", "()")),
            ("b.rhai", rule("same", "F1", "()")),
        ])
        .err()
        .unwrap(),
    );
    assert!(err.contains("already used by policies/a.rhai"), "{err}");
}

#[test]
fn eval_and_import_are_not_available() {
    let e = load(&[("e.rhai", rule("e", "F1", "eval(\"1\")"))])
        .err()
        .unwrap();
    assert!(invalid(e).contains("policies/e.rhai"));
    let text = format!("import \"os\" as os;\n{}", rule("i", "F1", "()"));
    assert!(load(&[("i.rhai", text)]).is_err());
}

/// Default limits, but a wall clock far away: tests of the other limits must not
/// depend on how busy the machine is.
fn no_clock() -> RuleLimits {
    RuleLimits {
        timeout_ms: 60_000,
        ..RuleLimits::default()
    }
}

fn eval_one(body: &str, limits: &RuleLimits) -> (usize, Vec<String>, u128) {
    let rules = load_with(
        &[
            ("bad.rhai", rule("bad", "F1", body)),
            ("good.rhai", rule("good", "F1", "disable_user(\"ok\")")),
        ],
        limits,
    )
    .unwrap();
    let start = Instant::now();
    let eval = rules.evaluate(&small_scan(), None).unwrap();
    let ms = start.elapsed().as_millis();
    let msgs = eval
        .failures
        .iter()
        .map(|f| format!("{} {}: {}", f.rule, f.identity_id, f.message))
        .collect();
    (
        eval.proposals.iter().filter(|p| p.rule == "good").count(),
        msgs,
        ms,
    )
}

#[test]
fn an_infinite_loop_hits_the_operation_limit_and_other_rules_go_on() {
    let (good, failures, _) = eval_one("loop { }", &no_clock());
    assert_eq!(good, 2, "the good rule still ran for both identities");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].starts_with("bad 00000000-0000-0000-0000-000000000001: policies/bad.rhai"),
        "{failures:?}"
    );
    assert!(failures[0].contains("many operations"), "{failures:?}");
}

#[test]
fn a_slow_rule_hits_the_wall_clock_limit() {
    let limits = RuleLimits {
        max_operations: u64::MAX / 2,
        timeout_ms: 50,
        ..RuleLimits::default()
    };
    let (good, failures, _) = eval_one("let x = 0; loop { x += 1; }", &limits);
    assert_eq!(good, 2);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("wall-clock limit of 50 ms"),
        "{failures:?}"
    );
}

#[test]
fn sleep_is_not_callable() {
    let (good, failures, _) = eval_one("sleep(5); disable_user(\"x\")", &no_clock());
    assert_eq!(good, 2);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("sleep is not available"),
        "{failures:?}"
    );
}

#[test]
fn huge_allocations_and_deep_recursion_hit_their_limits() {
    let (_, f, _) = eval_one("let s = \"x\"; loop { s += s; }", &no_clock());
    assert!(
        f[0].contains("Length of string too large (limits: rules.max_string_size"),
        "{f:?}"
    );
    let (_, f, _) = eval_one("let a = []; loop { a.push(1); }", &no_clock());
    assert!(f[0].contains("Size of array"), "{f:?}");
    let rec = "fn deep(n) { deep(n + 1) }\nfn metadata() { #{ name: \"bad\", description: \"d\" } }\nfn evaluate(f, i, t) { deep(0) }";
    let rules = load_with(&[("bad.rhai", rec.into())], &no_clock()).unwrap();
    let eval = rules.evaluate(&small_scan(), None).unwrap();
    assert_eq!(eval.failures.len(), 2);
    assert!(
        eval.failures[0].message.contains("nested too deep"),
        "{}",
        eval.failures[0].message
    );
}

#[test]
fn a_wrong_return_value_or_a_throw_is_a_rule_error() {
    let (_, f, _) = eval_one("42", &no_clock());
    assert!(f[0].contains("must return an action"), "{f:?}");
    let (_, f, _) = eval_one("[disable_user(\"x\"), 3]", &no_clock());
    assert!(f[0].contains("item 1 is a i64"), "{f:?}");
    let (_, f, _) = eval_one("throw \"boom\"", &no_clock());
    assert!(f[0].contains("boom"), "{f:?}");
    let (_, f, _) = eval_one("disable_user(\"\")", &no_clock());
    assert!(f[0].contains("non-empty reason"), "{f:?}");
    let (_, f, _) = eval_one("remove_group_membership([], \"x\")", &no_clock());
    assert!(f[0].contains("at least one group id"), "{f:?}");
}

#[test]
fn helpers_see_the_identity_as_the_scan_reports_it() {
    let body = r#"
        let out = [];
        if identity.is_guest() && identity.days_since_sign_in() == 203 && identity.risk_score == () {
            out.push(disable_user("guest stale " + identity.days_since_sign_in()));
        }
        if !identity.is_guest() && identity.days_since_sign_in() == 1 && finding.severity_at_least("medium")
            && !finding.severity_at_least("critical") && tenant.id == "11111111-2222-3333-4444-555555555555" {
            out.push(revoke_sessions("member " + identity.upn));
        }
        out
    "#;
    let rules = load(&[("h.rhai", rule("h", "F1", body))]).unwrap();
    let eval = rules.evaluate(&small_scan(), None).unwrap();
    assert!(eval.failures.is_empty(), "{:?}", eval.failures);
    let got: Vec<(usize, String, String)> = eval
        .proposals
        .iter()
        .map(|p| (p.identity, p.kind.to_string(), p.reason.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "revoke_sessions".into(), "member a@t.com".into()),
            (1, "disable_user".into(), "guest stale 203".into())
        ]
    );
}

#[test]
fn rules_only_see_the_findings_they_name_and_disabled_rules_do_nothing() {
    let off = "fn metadata() { #{ name: \"off\", description: \"d\", enabled: false } }\nfn evaluate(f, i, t) { disable_user(\"x\") }";
    let rules = load(&[
        ("other.rhai", rule("other", "F2", "disable_user(\"x\")")),
        ("off.rhai", off.into()),
    ])
    .unwrap();
    let eval = rules.evaluate(&small_scan(), None).unwrap();
    assert!(eval.proposals.is_empty());
    assert_eq!(eval.calls, 0);
}

#[test]
fn the_rule_set_hash_changes_with_any_rule_file() {
    let a = load(&[("a.rhai", rule("a", "F1", "()"))]).unwrap();
    let b = load(&[("a.rhai", rule("a", "F1", "() "))]).unwrap();
    let c = load(&[("a.rhai", rule("a", "F1", "()"))]).unwrap();
    assert_ne!(a.hash, b.hash);
    assert_eq!(a.hash, c.hash);
}

#[test]
fn the_shipped_policies_pass_check_and_their_tests() {
    let out = run_bin(
        &repo(),
        &["--config", "config.example.toml", "policy", "check"],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let out = run_bin(
        &repo(),
        &["--config", "config.example.toml", "policy", "test"],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains(" passed, 0 failed"), "{}", out.stdout);
    // One realistic rule per action, each tested.
    for action in [
        "disable_user(",
        "revoke_sessions(",
        "enforce_mfa(",
        "enforce_phishing_resistant_mfa(",
        "remove_role_assignment(",
        "remove_group_membership(",
    ] {
        let found = std::fs::read_dir(repo().join("policies"))
            .unwrap()
            .any(|e| {
                let p = e.unwrap().path();
                p.extension().is_some_and(|x| x == "rhai")
                    && std::fs::read_to_string(&p).unwrap().contains(action)
            });
        assert!(found, "no shipped rule uses {action}");
    }
}

#[test]
fn policy_test_fails_on_a_mismatch_and_says_what_differs() {
    let ws = Workspace::new();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    let s = scan(
        "2026-11-20T06:00:00Z",
        vec![ident(1, "a@t.com")],
        vec![finding("F1", "high", &[1])],
    );
    let t = serde_json::json!({
        "description": "wrong expectation",
        "scan": s,
        "expect": [{"identity": guid(1), "action": "revoke_sessions", "rule": "r"}]
    });
    ws.write("policies/tests/t.json", &t.to_string());
    let out = run_bin(ws.path(), &["policy", "test", "policies"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .contains("expected but not proposed: revoke_sessions"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("proposed but not expected: disable_user"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("0 passed, 1 failed"), "{}", out.stdout);
}

#[test]
fn policy_check_reports_every_bad_file() {
    let ws = Workspace::new();
    ws.add_rule("a.rhai", &rule("a", "F1", "disable_usr(\"x\")"));
    ws.add_rule("b.rhai", "fn metadata() {");
    ws.add_rule("c.rhai", &rule("c", "F1", "()"));
    let out = run_bin(ws.path(), &["policy", "check", "policies"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("2 invalid rule file(s)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("policies/a.rhai:2:"), "{}", out.stderr);
    assert!(out.stderr.contains("policies/b.rhai:1:"), "{}", out.stderr);
}

#[test]
fn a_broken_rule_set_refuses_the_run_and_records_why() {
    let ws = Workspace::new();
    ws.add_rule("a.rhai", &rule("a", "F1", "disable_usr(\"x\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "a@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("policies/a.rhai:2:"), "{}", out.stderr);
    let events = ws.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "rule_set_refused");
    assert!(ws.actions().is_empty());
}

#[test]
fn a_rule_error_is_recorded_against_rule_and_identity() {
    let ws = Workspace::new();
    ws.add_rule("bad.rhai", &rule("bad", "F1", "loop {}"));
    ws.add_rule("good.rhai", &rule("good", "F1", "disable_user(\"x\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "a@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let errs: Vec<_> = ws
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "rule_error")
        .collect();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["rule"], "bad");
    assert_eq!(errs[0]["identity_id"], guid(1));
    assert_eq!(ws.actions().len(), 1);
}

#[test]
fn a_rule_whose_metadata_is_past_line_65535_loads_and_errors_name_the_real_line() {
    // Found by fuzzing (fuzz/regressions/rule_eval/metadata-on-line-65536): Rhai
    // positions are 16-bit, and the metadata's line used to wrap to 0 and panic.
    let pad = "\n".repeat(65_535);
    let ok = format!("{pad}{}", rule("far", "F1", "disable_user(\"x\")"));
    let rules = load(&[("far.rhai", ok)]).unwrap();
    assert_eq!(rules.rules[0].name, "far");
    let bad =
        format!("{pad}fn metadata() {{ #{{ name: \"far\" }} }}\nfn evaluate(f, i, t) {{ () }}\n");
    let err = invalid(load(&[("far.rhai", bad)]).err().unwrap());
    assert!(err.starts_with("policies/far.rhai:65536:1:"), "{err}");
    assert!(err.contains("needs a non-empty description"), "{err}");
}
