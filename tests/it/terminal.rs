//! What reaches a person's terminal and scripts: control characters from scans
//! are escaped, exit codes mean what the README says, logs carry no colour
//! codes into files, and a preview promises no ids it never recorded.

use serde_json::json;

use crate::common::*;

/// A workspace whose rule disables every identity of finding F1.
fn disabling(upn: &str) -> Workspace {
    let ws = Workspace::new();
    ws.add_rule("d.rhai", &rule("d", "F1", r#"disable_user("finding F1")"#));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, upn), ident(2, "plain@t.com")],
            vec![finding("F1", "high", &[1, 2])],
        ),
    );
    ws
}

const HOSTILE_UPN: &str = "evil@t.com\r\u{1b}[2Kadmin@t.com\u{202e}";

fn assert_no_control(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || *c == '\u{202e}')
        .collect();
    assert!(
        bad.is_empty(),
        "{what} printed control characters {bad:?}: {text:?}"
    );
}

#[test]
fn a_upn_with_control_characters_cannot_rewrite_plan_or_approvals_output() {
    let mut ws = disabling(HOSTILE_UPN);
    ws.set_top("mode = \"approval\"");
    let out = ws.cli(&["plan"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_no_control("plan (table)", &out.stdout);
    assert!(
        out.stdout
            .contains("evil@t.com\\r\\x1b[2Kadmin@t.com\\u{202e}"),
        "{}",
        out.stdout
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_no_control("run --once", &out.all());
    for format in ["table", "csv"] {
        let out = ws.cli(&["approvals", "list", "--format", format]);
        assert_eq!(out.code, 0, "{}", out.all());
        assert_no_control(&format!("approvals list --format {format}"), &out.stdout);
        assert!(out.stdout.contains("\\x1b[2K"), "{}", out.stdout);
    }
    let out = ws.cli(&["history", "--format", "csv"]);
    assert_no_control("history --format csv", &out.stdout);
    // JSON keeps the exact value (escaped by JSON itself) for scripts.
    let actions = ws.actions();
    assert!(
        actions
            .iter()
            .any(|a| a["identity_upn"] == json!(HOSTILE_UPN)),
        "{actions:?}"
    );
    let id = actions[0]["id"].to_string();
    let out = ws.cli(&["approvals", "show", &id]);
    assert_no_control("approvals show", &out.stdout);
}

#[test]
fn bad_arguments_exit_1_not_the_scan_refused_code() {
    let ws = disabling("a@t.com");
    for args in [
        &["run"][..],
        &["history", "--limit", "many"],
        &["no-such-command"],
        &["approvals", "approve", "1"],
    ] {
        let out = ws.cli(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.all());
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = ws.cli(&["--help"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = ws.cli(&["--version"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn a_scanned_at_matching_no_scan_is_an_error_and_is_not_recorded_as_a_refused_scan() {
    let ws = disabling("a@t.com");
    let out = ws.cli(&["run", "--once", "--scanned-at", "2026-01-01T00:00:00Z"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no scan in"), "{}", out.stderr);
    assert!(!out.stderr.contains("scan refused"), "{}", out.stderr);
    let events = ws.events();
    assert!(
        events.iter().all(|e| e["kind"] != json!("scan_rejected")),
        "{events:?}"
    );
    // A real refusal still exits 2 and is recorded.
    ws.add_scan("s.json", &json!({"schema_version": 1}));
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        ws.events()
            .iter()
            .any(|e| e["kind"] == json!("scan_rejected"))
    );
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let ws = disabling("a@t.com");
    ws.add_scan("s.json", &json!({"schema_version": 1}));
    let out = ws.cli(&["--log", "debug", "plan"]);
    assert!(
        out.stderr.contains("WARN"),
        "expected a logged warning: {}",
        out.stderr
    );
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
}

#[test]
fn a_plan_preview_shows_no_action_or_run_ids() {
    let ws = disabling("a@t.com");
    let out = ws.cli(&["plan", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    for l in &lines {
        assert!(l.get("id").is_none() && l.get("run_id").is_none(), "{l}");
        assert_eq!(l["action"], json!("disable_user"));
    }
    assert!(
        out.stderr.contains("preview, nothing recorded"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(" run "), "{}", out.stderr);
    // A recorded run shows both, and they are real.
    let out = ws.cli(&["run", "--once", "--format", "json"]);
    let lines = out.json_lines();
    assert!(
        lines
            .iter()
            .all(|l| l["id"].is_i64() && l["run_id"].is_string()),
        "{}",
        out.stdout
    );
}
