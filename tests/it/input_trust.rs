//! Issue 12, items 9, 10, 12, 13 and 20: future-dated scans, exceptions that
//! cannot apply, the rule call-depth bound and rule threads' stack, pending
//! approvals carried over, and the places rule errors and warnings name.

use serde_json::Value;

use crate::common::*;

/// An RFC 3339 time `hours` from now (negative: in the past).
fn hours_from_now(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

/// A workspace with one rule revoking sessions for finding F1 of identity 1.
fn revoke_ws() -> Workspace {
    let ws = Workspace::new();
    ws.add_rule(
        "r.rhai",
        &rule("revoke", "F1", "revoke_sessions(\"risky\")"),
    );
    ws
}

fn one_finding_scan(at: &str) -> Value {
    scan(
        at,
        vec![ident(1, "a@x.test"), ident(2, "b@x.test")],
        vec![finding("F1", "high", &[1])],
    )
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

// ---- item 9: scans dated in the future -------------------------------------

#[test]
fn future_dated_scan_is_refused_and_the_newest_valid_scan_is_used() {
    let ws = revoke_ws();
    ws.add_scan("good.json", &one_finding_scan(&hours_from_now(-1)));
    ws.add_scan("typo.json", &one_finding_scan("2099-11-20T06:00:00Z"));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("typo.json") && out.stderr.contains("in the future"),
        "the refused newer file is reported: {}",
        out.stderr
    );
    let events = ws.events();
    let rejected = of_kind(&events, "scan_rejected");
    assert_eq!(rejected.len(), 1, "{events:#?}");
    let why = rejected[0]["detail"].as_str().unwrap();
    assert!(
        why.contains("typo.json") && why.contains("2099") && why.contains("good.json"),
        "{why}"
    );
    let runs = of_kind(&events, "run_recorded");
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0]["detail"].as_str().unwrap().contains("good.json"),
        "the valid scan is processed: {}",
        runs[0]["detail"]
    );

    // A later valid scan is processed too (not skipped as older than 2099).
    ws.add_scan("later.json", &one_finding_scan(&hours_from_now(0)));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let events = ws.events();
    let runs = of_kind(&events, "run_recorded");
    assert_eq!(runs.len(), 2, "{events:#?}");
    assert!(runs[1]["detail"].as_str().unwrap().contains("later.json"));
}

#[test]
fn only_future_dated_scans_are_refused_with_the_reason() {
    let ws = revoke_ws();
    ws.add_scan("typo.json", &one_finding_scan("2099-11-20T06:00:00Z"));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 2, "scan refused: {}", out.all());
    assert!(out.stderr.contains("in the future"), "{}", out.stderr);
    let events = ws.events();
    assert!(of_kind(&events, "run_recorded").is_empty());
    let rejected = of_kind(&events, "scan_rejected");
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0]["detail"].as_str().unwrap().contains("2099"));

    // The same through --scan FILE.
    let file = ws.path().join("scans/typo.json");
    let out = ws.cli(&["plan", "--scan", file.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("in the future"), "{}", out.stderr);
}

#[test]
fn clock_skew_allowance_is_configurable() {
    let mut ws = revoke_ws();
    ws.add_scan("soon.json", &one_finding_scan(&hours_from_now(1)));
    let out = ws.cli(&["plan"]);
    assert_eq!(
        out.code,
        2,
        "an hour ahead is beyond 5 minutes: {}",
        out.all()
    );
    ws.set_top("max_clock_skew = \"2h\"");
    let out = ws.cli(&["plan"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn newest_scan_older_than_the_last_processed_one_is_reported() {
    let ws = revoke_ws();
    let newer = ws.add_scan("newer.json", &one_finding_scan(&hours_from_now(-1)));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    std::fs::remove_file(newer).unwrap();
    ws.add_scan("older.json", &one_finding_scan(&hours_from_now(-3)));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr
            .contains("older than the scan the last run processed"),
        "{}",
        out.stderr
    );
    let events = ws.events();
    let older = of_kind(&events, "scan_older_than_processed");
    assert_eq!(older.len(), 1, "{events:#?}");
    assert!(older[0]["detail"].as_str().unwrap().contains("older.json"));
}

// ---- item 10: exceptions that cannot apply are errors -----------------------

#[test]
fn exception_naming_an_unknown_rule_is_an_error_everywhere() {
    let ws = revoke_ws();
    ws.add_scan("s.json", &one_finding_scan(&hours_from_now(-1)));
    ws.write(
        "policies/exceptions.toml",
        "[[exception]]\nidentity = \"a@x.test\"\nrule = \"revokee\"\nreason = \"vip\"\nowner = \"sec\"\nexpires = \"2099-01-01\"\n",
    );
    for args in [
        &["config", "check"][..],
        &["policy", "check"],
        &["plan"],
        &["run", "--once"],
    ] {
        let out = ws.cli(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.all());
        assert!(
            out.stderr.contains("exceptions.toml:3:8")
                && out.stderr.contains("\"revokee\"")
                && out.stderr.contains("does not exist"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // Nothing was planned or recorded for the person the exception protects.
    let events = ws.events();
    assert!(of_kind(&events, "run_recorded").is_empty(), "{events:#?}");
    assert_eq!(of_kind(&events, "rule_set_refused").len(), 1);
}

#[test]
fn configured_exceptions_file_that_is_missing_is_an_error() {
    let mut ws = revoke_ws();
    ws.add_scan("s.json", &one_finding_scan(&hours_from_now(-1)));
    // The default file is optional: absent, there are no exceptions.
    let out = ws.cli(&["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.all());
    ws.set_top("exceptions_file = \"policies/exeptions.toml\"");
    for args in [
        &["config", "check"][..],
        &["policy", "check"],
        &["plan"],
        &["run", "--once"],
    ] {
        let out = ws.cli(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.all());
        assert!(
            out.stderr.contains("exeptions.toml does not exist")
                && out.stderr.contains("config.toml"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn the_daemon_reload_path_refuses_exceptions_that_cannot_apply() {
    // The daemon loads (and reloads) rules and exceptions through service::run::load_rules.
    let mut ws = revoke_ws();
    ws.write(
        "policies/exceptions.toml",
        "[[exception]]\nidentity = \"a@x.test\"\nrule = \"nope\"\nreason = \"vip\"\nowner = \"sec\"\nexpires = \"2099-01-01\"\n",
    );
    let cfg = entra_remediator::config::Config::load(&ws.config_path()).unwrap();
    let err = entra_remediator::service::run::load_rules(&cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("exceptions.toml:3:8") && err.contains("\"nope\""),
        "{err}"
    );
    std::fs::remove_file(ws.path().join("policies/exceptions.toml")).unwrap();
    assert!(entra_remediator::service::run::load_rules(&cfg).is_ok());
    ws.set_top("exceptions_file = \"gone.toml\"");
    let cfg = entra_remediator::config::Config::load(&ws.config_path()).unwrap();
    let err = entra_remediator::service::run::load_rules(&cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("gone.toml does not exist"), "{err}");
}

// ---- item 12: max_call_depth is bounded and rules run on a big stack --------

#[test]
fn max_call_depth_beyond_the_bound_is_a_config_error_naming_key_and_line() {
    let mut ws = revoke_ws();
    ws.set_tables("[rules]\nmax_call_depth = 1000\n");
    let out = ws.cli(&["config", "check"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("max_call_depth") && out.stderr.contains("line 6"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("at most") || out.stderr.contains("1 to 256"));
}

#[test]
fn recursion_at_the_max_allowed_depth_is_a_rule_error_not_a_crash() {
    let mut ws = Workspace::new();
    ws.set_tables(&format!(
        "[rules]\nmax_call_depth = {}\nmax_operations = 100000000\ntimeout_ms = 60000\n",
        entra_remediator::config::MAX_CALL_DEPTH
    ));
    // Each level calls itself inside nested expressions, the costliest form.
    ws.add_rule(
        "deep.rhai",
        r#"fn metadata() { #{ name: "deep", description: "recurses without end" } }
fn down(n) { if n <= 0 { 0 } else { (1 + (1 + (1 + (1 + (1 + (1 + (1 + (1 + (1 + (1 + down(n - 1))))))))))) } }
fn evaluate(finding, identity, tenant) { let d = down(1000000); revoke_sessions("deep") }
"#,
    );
    ws.add_scan("s.json", &one_finding_scan(&hours_from_now(-1)));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "no crash: {}", out.all());
    assert!(
        out.stderr
            .contains("nested too deep (limit: rules.max_call_depth)"),
        "{}",
        out.stderr
    );
    let events = ws.events();
    let errors = of_kind(&events, "rule_error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    let detail = errors[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("deep.rhai:3:1: function calls nested too deep"),
        "{detail}"
    );
}

// ---- item 13: still-pending approvals are carried over ----------------------

#[test]
fn still_pending_action_is_carried_over_not_queued_again() {
    let mut ws = revoke_ws();
    ws.set_top("mode = \"approval\"");
    ws.add_scan("s1.json", &one_finding_scan(&hours_from_now(-2)));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let first = ws.actions();
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0]["state"], "pending");
    let first_id = first[0]["id"].as_i64().unwrap();

    ws.add_scan("s2.json", &one_finding_scan(&hours_from_now(-1)));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("1 action(s) carried over"),
        "{}",
        out.stderr
    );

    let pending = ws
        .cli(&["approvals", "list", "--format", "json"])
        .json_lines();
    assert_eq!(pending.len(), 1, "one copy for the approver: {pending:#?}");
    assert_eq!(pending[0]["id"].as_i64(), Some(first_id));

    let events = ws.events();
    assert_eq!(of_kind(&events, "run_recorded").len(), 2);
    let recorded = of_kind(&events, "action_recorded");
    assert_eq!(recorded.len(), 2, "{events:#?}");
    assert_eq!(recorded[1]["state"], "carried_over");
    let why = recorded[1]["detail"].as_str().unwrap();
    assert!(
        why.contains(&format!("still pending as action {first_id}")),
        "linked to the pending one: {why}"
    );

    // Another identity's action in the same approval queue is queued as usual.
    ws.add_scan(
        "s3.json",
        &scan(
            &hours_from_now(0),
            vec![ident(1, "a@x.test"), ident(2, "b@x.test")],
            vec![finding("F1", "high", &[1, 2])],
        ),
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let pending = ws
        .cli(&["approvals", "list", "--format", "json"])
        .json_lines();
    assert_eq!(pending.len(), 2, "{pending:#?}");
}

// ---- item 20: rule errors name their place, one format; unknown properties --

#[test]
fn rule_limit_hits_and_runtime_errors_name_file_line_column() {
    let mut ws = Workspace::new();
    ws.set_tables("[rules]\nmax_string_size = 100\ntimeout_ms = 60000\n");
    ws.add_rule(
        "loop.rhai",
        "fn metadata() { #{ name: \"loop\", description: \"loops\" } }\nfn evaluate(finding, identity, tenant) {\n    let n = 0;\n    loop { n += 1; }\n}\n",
    );
    ws.add_rule(
        "big.rhai",
        "fn metadata() { #{ name: \"big\", description: \"grows\" } }\nfn evaluate(finding, identity, tenant) {\n    let s = \"x\";\n    while true { s += s; }\n}\n",
    );
    ws.add_rule(
        "thrown.rhai",
        "fn metadata() { #{ name: \"thrown\", description: \"throws\" } }\nfn evaluate(finding, identity, tenant) {\n    throw \"no\";\n}\n",
    );
    ws.add_rule(
        "returns.rhai",
        "fn metadata() { #{ name: \"returns\", description: \"returns a number\" } }\n\nfn evaluate(finding, identity, tenant) {\n    42\n}\n",
    );
    ws.add_scan("s.json", &one_finding_scan(&hours_from_now(-1)));
    let out = ws.cli(&["plan"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let err = &out.stderr;
    for want in [
        "policies/loop.rhai:2:1: too many operations",
        "too many operations",
        "policies/big.rhai:2:1: Length of string too large",
        "too large",
        "policies/thrown.rhai:3:5: ",
        "policies/returns.rhai:3:1: evaluate must return",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    assert!(
        !err.contains(": line "),
        "one place format (file:L:C), not 'file: line L:C': {err}"
    );
    for line in err.lines().filter(|l| l.contains("rule error:")) {
        assert!(
            line.contains(".rhai:"),
            "every rule error names file:line:col: {line}"
        );
    }
}

#[test]
fn policy_check_warns_about_unknown_properties_with_their_place() {
    let ws = Workspace::new();
    ws.add_rule(
        "typo.rhai",
        r#"fn metadata() { #{ name: "typo", description: "misspelt keys" } }
fn evaluate(finding, identity, tenant) {
    for r in identity.roles {
        if r.assignment_typ == "active" { return revoke_sessions("x"); }
    }
    let gs = identity.groups;
    for g in gs { if g["display_nam"] == "x" { return revoke_sessions("y"); } }
    if finding.severty == "high" || identity.upn == "" || tenant.nam == "" { return (); }
    let attrs = identity.attributes;
    if attrs.anything == 1 && identity.attributes.department == "x" { return (); }
    ()
}
"#,
    );
    let out = ws.cli(&["policy", "check"]);
    assert_eq!(
        out.code,
        0,
        "warnings do not refuse the rule: {}",
        out.all()
    );
    let err = &out.stderr;
    for want in [
        "policies/typo.rhai:4:14: unknown property \"assignment_typ\" of a role assignment",
        "policies/typo.rhai:7:24: unknown property \"display_nam\" of a group membership",
        "policies/typo.rhai:8:16: unknown property \"severty\" of a finding",
        "unknown property \"nam\" of a tenant",
    ] {
        assert!(err.contains(want), "missing {want:?} in {}", out.all());
    }
    assert_eq!(
        err.matches("warning:").count(),
        4,
        "free-form attributes and known properties are not flagged: {err}"
    );
    // The shipped rules have no such typos.
    let out = run_bin(
        &repo(),
        &["--config", "/nonexistent", "policy", "check", "policies"],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.stderr.contains("warning:"), "{}", out.stderr);
}
