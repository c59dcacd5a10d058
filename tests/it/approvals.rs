//! `approvals list|show|approve|reject`: who may decide, four eyes, expiry, bulk
//! approval of a run, and refusals that change nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::*;

/// User Administrator role template id.
const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

/// A workspace whose guardrails never downgrade a run; `top` and `tables` are extra config.
fn workspace(top: &str, tables: &str) -> Workspace {
    let mut ws = Workspace::new();
    ws.set_top(top);
    ws.set_tables(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\n{tables}"
    ));
    ws
}

fn run_once(ws: &Workspace) -> Output {
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "run --once failed:\n{}", out.all());
    out
}

/// One `disable_user` action per identity u1..u3 (ids 1..=3), recorded under `top`.
fn three_disables_with(top: &str, tables: &str) -> Workspace {
    let ws = workspace(top, tables);
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![
                ident(1, "u1@contoso.com"),
                ident(2, "u2@contoso.com"),
                ident(3, "u3@contoso.com"),
            ],
            vec![finding("F1", "high", &[1, 2, 3])],
        ),
    );
    run_once(&ws);
    ws
}

/// Approval mode, three pending `disable_user` actions with ids 1, 2, 3.
fn three_pending(tables: &str) -> Workspace {
    let ws = three_disables_with("mode = \"approval\"", tables);
    assert_eq!(
        states(&ws),
        vec![
            (1, "pending".to_string()),
            (2, "pending".to_string()),
            (3, "pending".to_string())
        ]
    );
    ws
}

/// Adds an active role assignment of any role.
fn with_role(mut v: Value, assignment: &str, role_id: &str, role_name: &str) -> Value {
    v["roles"].as_array_mut().unwrap().push(json!({
        "assignment_id": assignment,
        "role_definition_id": role_id,
        "role_name": role_name,
        "directory_scope_id": "/",
        "assignment_type": "active"
    }));
    v
}

/// Approval mode, one run with: disable_user for u1, u2, u3, and for u3 also a
/// remove_role_assignment (User Administrator) and a remove_group_membership (Sales).
fn mixed_run(tables: &str) -> Workspace {
    let ws = workspace("mode = \"approval\"", tables);
    ws.add_rule(
        "a.rhai",
        &rule("a-disable", "F1", "disable_user(\"stale\")"),
    );
    ws.add_rule(
        "b.rhai",
        &rule(
            "b-role",
            "F1",
            "let ids = identity.active_role_assignments(\"User Administrator\"); \
             if ids.len() > 0 { remove_role_assignment(ids, \"standing admin role\") }",
        ),
    );
    ws.add_rule(
        "c.rhai",
        &rule(
            "c-group",
            "F1",
            "let ids = identity.group_ids(\"Sales\"); \
             if ids.len() > 0 { remove_group_membership(ids, \"left sales\") }",
        ),
    );
    let u3 = with_group(
        with_role(
            ident(3, "u3@contoso.com"),
            "ra-3",
            USER_ADMIN,
            "User Administrator",
        ),
        100,
        "Sales",
        false,
        false,
    );
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u1@contoso.com"), ident(2, "u2@contoso.com"), u3],
            vec![finding("F1", "high", &[1, 2, 3])],
        ),
    );
    run_once(&ws);
    let acts = ws.actions();
    assert_eq!(acts.len(), 5, "{acts:#?}");
    assert!(acts.iter().all(|a| a["state"] == "pending"), "{acts:#?}");
    ws
}

/// The id of the only action of this kind for this UPN.
fn id_of(ws: &Workspace, kind: &str, upn: &str) -> i64 {
    let found: Vec<i64> = ws
        .actions()
        .iter()
        .filter(|a| a["kind"] == kind && a["identity_upn"] == upn)
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{kind} for {upn}: {found:?}");
    found[0]
}

/// (id, state) of every action, in id order.
fn states(ws: &Workspace) -> Vec<(i64, String)> {
    ws.actions()
        .iter()
        .map(|a| {
            (
                a["id"].as_i64().unwrap(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn state_of(ws: &Workspace, id: i64) -> String {
    states(ws)
        .into_iter()
        .find(|(i, _)| *i == id)
        .unwrap_or_else(|| panic!("no action {id}"))
        .1
}

/// `approvals show ID --format json`, parsed.
fn show(ws: &Workspace, id: i64) -> Value {
    let out = ws.cli(&["approvals", "show", &id.to_string(), "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let mut lines = out.json_lines();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    lines.remove(0)
}

/// Everything a decision could change: events, actions, and every action's approvals.
fn snapshot(ws: &Workspace) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let actions = ws.actions();
    let approvals = actions
        .iter()
        .map(|a| show(ws, a["id"].as_i64().unwrap())["approvals"].clone())
        .collect();
    (ws.events(), actions, approvals)
}

fn cli_ok(ws: &Workspace, args: &[&str]) -> Output {
    let out = ws.cli(args);
    assert_eq!(out.code, 0, "{args:?} failed:\n{}", out.all());
    out
}

/// Runs a command that must be refused: exit 1, the message on stderr, nothing changed.
fn refused(ws: &Workspace, args: &[&str], message: &str) {
    let before = snapshot(ws);
    let out = ws.cli(args);
    assert_eq!(out.code, 1, "{args:?} should fail:\n{}", out.all());
    assert!(
        out.stderr.contains(message),
        "{args:?}: stderr should contain {message:?}:\n{}",
        out.stderr
    );
    assert_eq!(out.stdout, "", "{args:?} printed on stdout");
    let after = snapshot(ws);
    assert_eq!(before.0, after.0, "{args:?} changed the history events");
    assert_eq!(before.1, after.1, "{args:?} changed the actions");
    assert_eq!(before.2, after.2, "{args:?} changed the recorded approvals");
}

fn detail(e: &Value) -> Value {
    serde_json::from_str(e["detail"].as_str().unwrap())
        .unwrap_or_else(|err| panic!("detail is not JSON: {e}: {err}"))
}

/// Events of one action with a given kind.
fn events_of(ws: &Workspace, id: i64, kind: &str) -> Vec<Value> {
    ws.events()
        .into_iter()
        .filter(|e| e["action_id"] == id && e["kind"] == kind)
        .collect()
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// Sleeps until every pending action's expiry has passed. Reads the expiry from
/// history, because listing actions would itself expire them.
fn wait_until_expired(ws: &Workspace) {
    let latest = ws
        .events()
        .iter()
        .filter(|e| e["kind"] == "action_recorded")
        .filter_map(|e| detail(e)["expires_at"].as_str().map(parse_time))
        .max()
        .expect("no action has an expiry");
    let wait = (latest - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    std::thread::sleep(wait);
}

#[test]
fn approving_one_action_records_who_when_and_the_comment() {
    let ws = three_pending("");
    let events_before = ws.events();
    let started = Utc::now();
    let out = cli_ok(
        &ws,
        &[
            "approvals",
            "approve",
            "2",
            "--by",
            "alice",
            "--comment",
            "checked with HR, left in May",
        ],
    );
    let finished = Utc::now();
    assert_eq!(
        out.stdout,
        "action 2: disable_user approve for u2@contoso.com: now approved\n"
    );
    assert_eq!(
        states(&ws),
        vec![
            (1, "pending".to_string()),
            (2, "approved".to_string()),
            (3, "pending".to_string())
        ]
    );
    let a2 = show(&ws, 2);
    assert_eq!(a2["state_reason"], "approve by alice");

    // Exactly one new event: the state change, by the approver, with the comment.
    let events = ws.events();
    assert_eq!(events.len(), events_before.len() + 1);
    assert_eq!(events[..events_before.len()], events_before[..]);
    let e = events.last().unwrap();
    assert_eq!(e["kind"], "state_changed");
    assert_eq!(e["action_id"], 2);
    assert_eq!(e["action_kind"], "disable_user");
    assert_eq!(e["identity_id"], guid(2));
    assert_eq!(e["tenant"], "test");
    assert_eq!(e["state"], "approved");
    assert_eq!(e["actor"], "alice");
    assert_eq!(
        detail(e),
        json!({"decision": "approve", "comment": "checked with HR, left in May", "bulk": false, "interface": "cli", "os_user": cli_os_user()})
    );
    let at = parse_time(e["at"].as_str().unwrap());
    assert!(
        at >= started - chrono::Duration::milliseconds(1)
            && at <= finished + chrono::Duration::milliseconds(1),
        "event time {at} is not between {started} and {finished}"
    );

    // The approval row: who, when, the comment.
    let approvals = a2["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["approver"], "alice");
    assert_eq!(approvals[0]["decision"], "approve");
    assert_eq!(approvals[0]["comment"], "checked with HR, left in May");
    assert_eq!(approvals[0]["at"], e["at"]);
    assert_eq!(approvals[0]["action_id"], 2);
    // show's history holds the action's own events: recorded, then approved.
    let hist: Vec<(&str, &str)> = a2["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["kind"].as_str().unwrap(), h["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        hist,
        vec![
            ("action_recorded", "pending"),
            ("state_changed", "approved")
        ]
    );

    // The table view names the approver, decision and comment.
    let table = cli_ok(&ws, &["approvals", "show", "2"]).stdout;
    assert!(table.contains("state          approved\n"), "{table}");
    assert!(
        table.contains(&format!(
            "approvals:\n  alice approve at {} (via cli, OS user {}): checked with HR, left in May\n",
            e["at"].as_str().unwrap(),
            cli_os_user()
        )),
        "{table}"
    );
    assert!(table.contains("state_changed approved by alice"), "{table}");

    // `approvals list` shows only what is still pending.
    let pending: Vec<i64> = cli_ok(&ws, &["approvals", "list", "--format", "json"])
        .json_lines()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(pending, vec![1, 3]);
}

#[test]
fn approvals_list_table_and_csv_show_pending_actions_with_their_expiry() {
    let ws = three_pending("");
    cli_ok(&ws, &["approvals", "reject", "1", "--by", "bob"]);
    let table = cli_ok(&ws, &["approvals", "list"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID  TENANT  STATE    ACTION        IDENTITY_UPN"),
        "{table}"
    );
    assert!(lines[1].starts_with("2   test    pending  disable_user  u2@contoso.com"));
    assert!(lines[2].starts_with("3   test    pending  disable_user  u3@contoso.com"));
    let csv = cli_ok(&ws, &["approvals", "list", "--all", "--format", "csv"]).stdout;
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        vec![
            "id",
            "tenant",
            "state",
            "action",
            "identity_upn",
            "targets",
            "rules",
            "expires_at"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][2], "rejected");
    assert_eq!(&rows[1][2], "pending");
    assert_eq!(&rows[1][6], "r");
    // The default approval_ttl is 24 hours from when the run recorded the action.
    let a = &ws.actions()[1];
    let ttl = parse_time(a["expires_at"].as_str().unwrap())
        - parse_time(a["created_at"].as_str().unwrap());
    assert_eq!(ttl, chrono::Duration::hours(24));
    assert_eq!(&rows[1][7], a["expires_at"].as_str().unwrap());
}

#[test]
fn approving_twice_is_refused_and_changes_nothing() {
    let ws = three_pending("");
    cli_ok(&ws, &["approvals", "approve", "1", "--by", "alice"]);
    refused(
        &ws,
        &["approvals", "approve", "1", "--by", "alice"],
        "error: action 1 is approved, not pending: it cannot be approved or rejected",
    );
    refused(
        &ws,
        &[
            "approvals",
            "approve",
            "1",
            "--by",
            "bob",
            "--comment",
            "me too",
        ],
        "action 1 is approved, not pending",
    );
    refused(
        &ws,
        &["approvals", "reject", "1", "--by", "bob"],
        "action 1 is approved, not pending",
    );
    assert_eq!(show(&ws, 1)["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(events_of(&ws, 1, "state_changed").len(), 1);
}

#[test]
fn naming_the_same_id_twice_in_one_request_records_at_most_one_decision() {
    let ws = three_pending("");
    let before = ws.events().len();
    let out = ws.cli(&["approvals", "approve", "1", "1", "--by", "alice"]);
    let approvals = show(&ws, 1)["approvals"].as_array().unwrap().len();
    let changes = events_of(&ws, 1, "state_changed").len();
    if out.code == 0 {
        // Accepted: the duplicate is one decision.
        assert_eq!(state_of(&ws, 1), "approved");
        assert_eq!((approvals, changes), (1, 1), "{}", out.all());
        assert_eq!(ws.events().len(), before + 1);
    } else {
        // Refused: nothing changed.
        assert_eq!(state_of(&ws, 1), "pending");
        assert_eq!((approvals, changes), (0, 0), "{}", out.all());
        assert_eq!(ws.events().len(), before);
    }
}

#[test]
fn approving_a_rejected_action_is_refused_and_changes_nothing() {
    let ws = three_pending("");
    cli_ok(
        &ws,
        &["approvals", "reject", "3", "--by", "bob", "--comment", "no"],
    );
    refused(
        &ws,
        &["approvals", "approve", "3", "--by", "alice"],
        "error: action 3 is rejected, not pending: it cannot be approved or rejected",
    );
    refused(
        &ws,
        &["approvals", "reject", "3", "--by", "alice"],
        "action 3 is rejected, not pending",
    );
    assert_eq!(state_of(&ws, 3), "rejected");
}

#[test]
fn an_unknown_id_is_refused_with_its_number_and_changes_nothing() {
    let ws = three_pending("");
    refused(
        &ws,
        &["approvals", "approve", "99", "--by", "alice"],
        "error: action 99 does not exist",
    );
    refused(
        &ws,
        &["approvals", "reject", "42", "--by", "alice"],
        "error: action 42 does not exist",
    );
    refused(
        &ws,
        &["approvals", "show", "77"],
        "error: action 77 does not exist",
    );
}

#[test]
fn several_ids_are_approved_all_or_nothing() {
    let ws = three_pending("");
    // One unknown id: none of the valid ones is approved.
    refused(
        &ws,
        &["approvals", "approve", "1", "2", "99", "--by", "alice"],
        "error: action 99 does not exist",
    );
    // One id not pending: none of the others is approved.
    cli_ok(&ws, &["approvals", "reject", "2", "--by", "bob"]);
    refused(
        &ws,
        &["approvals", "approve", "1", "2", "3", "--by", "alice"],
        "action 2 is rejected, not pending",
    );
    assert_eq!(
        states(&ws),
        vec![
            (1, "pending".to_string()),
            (2, "rejected".to_string()),
            (3, "pending".to_string())
        ]
    );
    // All valid: all approved, each with its own event and approval row.
    let before = ws.events().len();
    let out = cli_ok(
        &ws,
        &[
            "approvals",
            "approve",
            "3",
            "1",
            "--by",
            "alice",
            "--comment",
            "batch ok",
        ],
    );
    assert_eq!(
        out.stdout,
        "action 3: disable_user approve for u3@contoso.com: now approved\n\
         action 1: disable_user approve for u1@contoso.com: now approved\n"
    );
    assert_eq!(
        states(&ws),
        vec![
            (1, "approved".to_string()),
            (2, "rejected".to_string()),
            (3, "approved".to_string())
        ]
    );
    let events = ws.events();
    assert_eq!(events.len(), before + 2);
    for (e, id) in events[before..].iter().zip([3, 1]) {
        assert_eq!(e["kind"], "state_changed");
        assert_eq!(e["action_id"], id);
        assert_eq!(e["state"], "approved");
        assert_eq!(e["actor"], "alice");
        assert_eq!(
            detail(e),
            json!({"decision": "approve", "comment": "batch ok", "bulk": false, "interface": "cli", "os_user": cli_os_user()})
        );
    }
    for id in [1, 3] {
        let aps = show(&ws, id)["approvals"].clone();
        assert_eq!(aps.as_array().unwrap().len(), 1);
        assert_eq!(aps[0]["approver"], "alice");
        assert_eq!(aps[0]["comment"], "batch ok");
    }
}

#[test]
fn rejecting_with_a_comment_marks_the_action_rejected() {
    let ws = three_pending("");
    let before = ws.events().len();
    let out = cli_ok(
        &ws,
        &[
            "approvals",
            "reject",
            "1",
            "--by",
            "bob",
            "--comment",
            "false positive: service account",
        ],
    );
    assert_eq!(
        out.stdout,
        "action 1: disable_user reject for u1@contoso.com: now rejected\n"
    );
    assert_eq!(
        states(&ws),
        vec![
            (1, "rejected".to_string()),
            (2, "pending".to_string()),
            (3, "pending".to_string())
        ]
    );
    let a1 = show(&ws, 1);
    assert_eq!(a1["state_reason"], "reject by bob");
    assert_eq!(a1["approvals"][0]["approver"], "bob");
    assert_eq!(a1["approvals"][0]["decision"], "reject");
    assert_eq!(
        a1["approvals"][0]["comment"],
        "false positive: service account"
    );
    let events = ws.events();
    assert_eq!(events.len(), before + 1);
    let e = &events[before];
    assert_eq!(
        (&e["kind"], &e["action_id"], &e["state"], &e["actor"]),
        (
            &json!("state_changed"),
            &json!(1),
            &json!("rejected"),
            &json!("bob")
        )
    );
    assert_eq!(
        detail(e),
        json!({"decision": "reject", "comment": "false positive: service account", "bulk": false, "interface": "cli", "os_user": cli_os_user()})
    );
}

#[test]
fn pending_actions_past_the_approval_ttl_expire_and_are_never_approved() {
    let ws = three_pending_with_ttl("1s");
    // History, unlike `approvals`, does not expire anything.
    let before = ws.events();
    let recorded: Vec<&Value> = before
        .iter()
        .filter(|e| e["kind"] == "action_recorded")
        .collect();
    assert_eq!(recorded.len(), 3);
    for e in &recorded {
        assert_eq!(e["state"], "pending");
        let ttl = parse_time(detail(e)["expires_at"].as_str().unwrap())
            - parse_time(e["at"].as_str().unwrap());
        assert_eq!(ttl, chrono::Duration::seconds(1));
    }
    wait_until_expired(&ws);

    // Nothing is pending any more.
    let out = cli_ok(&ws, &["approvals", "list", "--format", "json"]);
    assert_eq!(out.stdout, "");
    let acts = ws.actions();
    assert_eq!(acts.len(), 3);
    for a in &acts {
        assert_eq!(a["state"], "expired", "{a}");
        assert_eq!(
            a["state_reason"],
            "approval window passed without a decision"
        );
    }

    // Exactly one expiry event per action, by the system; nothing approved.
    let events = ws.events();
    assert_eq!(events[..before.len()], before[..]);
    let new = &events[before.len()..];
    assert_eq!(new.len(), 3, "{new:#?}");
    for (e, id) in new.iter().zip(1..) {
        assert_eq!(e["kind"], "state_changed");
        assert_eq!(e["action_id"], id);
        assert_eq!(e["state"], "expired");
        assert_eq!(e["actor"], "system");
        assert!(
            e["detail"]
                .as_str()
                .unwrap()
                .ends_with("without a decision"),
            "{e}"
        );
    }

    // Expired items cannot be approved or rejected.
    refused(
        &ws,
        &["approvals", "approve", "1", "--by", "alice"],
        "error: action 1 is expired, not pending: it cannot be approved or rejected",
    );
    refused(
        &ws,
        &["approvals", "reject", "2", "--by", "alice"],
        "action 2 is expired, not pending",
    );
    assert!(
        ws.events().iter().all(|e| e["state"] != "approved"),
        "an expired item was approved"
    );
    // Expiry is recorded once: listing again adds nothing.
    cli_ok(&ws, &["approvals", "list"]);
    assert_eq!(ws.events().len(), events.len());
}

/// Three pending `disable_user` actions that expire after `ttl`; `disable_user`
/// needs two approvers, so a first approval leaves an action pending.
fn three_pending_with_ttl(ttl: &str) -> Workspace {
    three_disables_with(
        &format!("mode = \"approval\"\napproval_ttl = \"{ttl}\""),
        "[approvals]\nfour_eyes = [\"disable_user\"]",
    )
}

#[test]
fn a_half_approved_four_eyes_action_expires_instead_of_being_approved() {
    let ws = three_pending_with_ttl("4s");
    let out = cli_ok(&ws, &["approvals", "approve", "1", "--by", "alice"]);
    assert!(
        out.stdout.contains("now pending (first approval recorded"),
        "{}",
        out.stdout
    );
    assert_eq!(state_of(&ws, 1), "pending");
    wait_until_expired(&ws);
    refused(
        &ws,
        &["approvals", "approve", "1", "--by", "bob"],
        "action 1 is expired, not pending",
    );
    assert_eq!(
        states(&ws),
        vec![
            (1, "expired".to_string()),
            (2, "expired".to_string()),
            (3, "expired".to_string())
        ]
    );
    let kinds: Vec<(String, String, String)> = ws
        .events()
        .iter()
        .filter(|e| e["action_id"] == 1)
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["state"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "action_recorded".to_string(),
                "pending".to_string(),
                "cli:tester".to_string()
            ),
            (
                "approval_recorded".to_string(),
                "pending".to_string(),
                "alice".to_string()
            ),
            (
                "state_changed".to_string(),
                "expired".to_string(),
                "system".to_string()
            ),
        ]
    );
}

#[test]
fn bulk_approval_of_a_run_approves_bulk_actions_and_skips_removals() {
    let ws = mixed_run("");
    let run_id = ws.actions()[0]["run_id"].as_str().unwrap().to_string();
    let role = id_of(&ws, "remove_role_assignment", "u3@contoso.com");
    let group = id_of(&ws, "remove_group_membership", "u3@contoso.com");
    let disables: Vec<i64> = (1..=3)
        .map(|n| id_of(&ws, "disable_user", &format!("u{n}@contoso.com")))
        .collect();
    let before = ws.events().len();

    let out = cli_ok(
        &ws,
        &[
            "approvals",
            "approve",
            "--run",
            &run_id,
            "--by",
            "alice",
            "--comment",
            "weekly review",
        ],
    );
    assert!(
        out.stderr.contains(&format!(
            "skipped action {role} (remove_role_assignment for u3@contoso.com): single-identity actions must be approved on their own"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "skipped action {group} (remove_group_membership for u3@contoso.com): single-identity actions must be approved on their own"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    for id in &disables {
        assert!(
            out.stdout
                .contains(&format!("action {id}: disable_user approve for")),
            "{}",
            out.stdout
        );
        assert_eq!(state_of(&ws, *id), "approved");
    }
    assert_eq!(state_of(&ws, role), "pending");
    assert_eq!(state_of(&ws, group), "pending");

    // Three events, one per approved action, marked as bulk.
    let events = ws.events();
    assert_eq!(events.len(), before + 3);
    let mut approved: Vec<i64> = events[before..]
        .iter()
        .map(|e| {
            assert_eq!(e["kind"], "state_changed");
            assert_eq!(e["state"], "approved");
            assert_eq!(e["actor"], "alice");
            assert_eq!(
                detail(e),
                json!({"decision": "approve", "comment": "weekly review", "bulk": true, "interface": "cli", "os_user": cli_os_user()})
            );
            e["action_id"].as_i64().unwrap()
        })
        .collect();
    approved.sort();
    assert_eq!(approved, disables);

    // Only removals left: bulk approval has nothing to do and changes nothing.
    refused(
        &ws,
        &["approvals", "approve", "--run", &run_id, "--by", "alice"],
        &format!("run {run_id} has no pending actions that can be decided in bulk"),
    );

    // Each removal is approved on its own.
    let out = cli_ok(
        &ws,
        &["approvals", "approve", &role.to_string(), "--by", "alice"],
    );
    assert_eq!(
        out.stdout,
        format!("action {role}: remove_role_assignment approve for u3@contoso.com: now approved\n")
    );
    cli_ok(
        &ws,
        &["approvals", "approve", &group.to_string(), "--by", "bob"],
    );
    assert!(
        ws.actions().iter().all(|a| a["state"] == "approved"),
        "{:#?}",
        ws.actions()
    );
}

#[test]
fn a_removal_action_cannot_be_approved_together_with_other_ids() {
    let ws = mixed_run("");
    let role = id_of(&ws, "remove_role_assignment", "u3@contoso.com");
    let group = id_of(&ws, "remove_group_membership", "u3@contoso.com");
    let d1 = id_of(&ws, "disable_user", "u1@contoso.com");
    refused(
        &ws,
        &[
            "approvals",
            "approve",
            &d1.to_string(),
            &role.to_string(),
            "--by",
            "alice",
        ],
        &format!(
            "error: action {role} (remove_role_assignment) is a single-identity action and must be approved on its own"
        ),
    );
    refused(
        &ws,
        &[
            "approvals",
            "approve",
            &group.to_string(),
            &d1.to_string(),
            "--by",
            "alice",
        ],
        &format!(
            "error: action {group} (remove_group_membership) is a single-identity action and must be approved on its own"
        ),
    );
    refused(
        &ws,
        &[
            "approvals",
            "approve",
            &role.to_string(),
            &group.to_string(),
            "--by",
            "alice",
        ],
        "is a single-identity action and must be approved on its own",
    );
    assert!(ws.actions().iter().all(|a| a["state"] == "pending"));

    // Alone, it is approved, and nothing else is.
    cli_ok(
        &ws,
        &["approvals", "approve", &group.to_string(), "--by", "alice"],
    );
    let now: Vec<(i64, String)> = states(&ws);
    for (id, st) in now {
        let want = if id == group { "approved" } else { "pending" };
        assert_eq!(st, want, "action {id}");
    }
}

#[test]
fn rejecting_a_run_rejects_every_pending_action_including_removals() {
    let ws = mixed_run("");
    let run_id = ws.actions()[0]["run_id"].as_str().unwrap().to_string();
    let before = ws.events().len();
    let out = cli_ok(
        &ws,
        &[
            "approvals",
            "reject",
            "--run",
            &run_id,
            "--by",
            "bob",
            "--comment",
            "scanner bug",
        ],
    );
    assert_eq!(out.stderr, "", "rejecting skips nothing");
    assert_eq!(out.stdout.lines().count(), 5);
    assert!(ws.actions().iter().all(|a| a["state"] == "rejected"));
    assert_eq!(ws.events().len(), before + 5);
}

#[test]
fn only_configured_approvers_may_approve_or_reject() {
    let ws = three_pending("[approvals]\napprovers = [\"alice\", \"bob\"]");
    refused(
        &ws,
        &["approvals", "approve", "1", "--by", "mallory"],
        "error: \"mallory\" is not in approvals.approvers and may not approve or reject",
    );
    refused(
        &ws,
        &["approvals", "reject", "1", "--by", "mallory"],
        "\"mallory\" is not in approvals.approvers",
    );
    // Names are exact: a different spelling is someone else.
    refused(
        &ws,
        &["approvals", "approve", "1", "--by", "Alice"],
        "\"Alice\" is not in approvals.approvers",
    );
    refused(
        &ws,
        &["approvals", "approve", "1", "--by", ""],
        "error: --by must name who approves",
    );
    let out = cli_ok(&ws, &["approvals", "approve", "1", "--by", "bob"]);
    assert!(out.stdout.contains("now approved"), "{}", out.stdout);
    assert_eq!(state_of(&ws, 1), "approved");
    assert_eq!(events_of(&ws, 1, "state_changed")[0]["actor"], "bob");
}

#[test]
fn four_eyes_actions_need_two_distinct_approvers() {
    // Both approvals come from this test's one OS user: names alone are tested
    // here (h3.rs tests that one OS user cannot approve twice by default).
    let ws = mixed_run(
        "[approvals]\nfour_eyes = [\"remove_role_assignment\"]\ndistinct_os_users = false",
    );
    let role = id_of(&ws, "remove_role_assignment", "u3@contoso.com");
    let group = id_of(&ws, "remove_group_membership", "u3@contoso.com");
    let d1 = id_of(&ws, "disable_user", "u1@contoso.com");
    let rid = role.to_string();

    // First approval: recorded, still pending.
    let before = ws.events().len();
    let out = cli_ok(
        &ws,
        &[
            "approvals",
            "approve",
            &rid,
            "--by",
            "alice",
            "--comment",
            "looks right",
        ],
    );
    assert_eq!(
        out.stdout,
        format!(
            "action {role}: remove_role_assignment approve for u3@contoso.com: now pending (first approval recorded; a second approver is required)\n"
        )
    );
    assert_eq!(state_of(&ws, role), "pending");
    let events = ws.events();
    assert_eq!(events.len(), before + 1);
    let e = &events[before];
    assert_eq!(e["kind"], "approval_recorded");
    assert_eq!(e["action_id"], role);
    assert_eq!(e["state"], "pending");
    assert_eq!(e["actor"], "alice");
    let d = e["detail"].as_str().unwrap();
    assert!(d.contains("\"comment\":\"looks right\""), "{d}");
    assert!(
        d.contains("a second approver is required (four eyes)"),
        "{d}"
    );

    // The same person again is refused.
    refused(
        &ws,
        &["approvals", "approve", &rid, "--by", "alice"],
        &format!(
            "error: action {role} was already approved by \"alice\"; a second approval must come from someone else"
        ),
    );

    // A second, distinct approver approves it.
    let out = cli_ok(
        &ws,
        &[
            "approvals",
            "approve",
            &rid,
            "--by",
            "bob",
            "--comment",
            "agreed",
        ],
    );
    assert_eq!(
        out.stdout,
        format!("action {role}: remove_role_assignment approve for u3@contoso.com: now approved\n")
    );
    assert_eq!(state_of(&ws, role), "approved");
    let changed = events_of(&ws, role, "state_changed");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["actor"], "bob");
    assert_eq!(changed[0]["state"], "approved");
    let aps: Vec<(String, String)> = show(&ws, role)["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["approver"].as_str().unwrap().to_string(),
                a["comment"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        aps,
        vec![
            ("alice".to_string(), "looks right".to_string()),
            ("bob".to_string(), "agreed".to_string())
        ]
    );

    // Actions not listed in four_eyes need one approval.
    for id in [group, d1] {
        cli_ok(
            &ws,
            &["approvals", "approve", &id.to_string(), "--by", "alice"],
        );
        assert_eq!(state_of(&ws, id), "approved");
    }
}

#[test]
fn dry_run_actions_are_planned_and_cannot_be_approved() {
    let ws = three_disables_with("", "");
    assert_eq!(
        states(&ws),
        vec![
            (1, "planned".to_string()),
            (2, "planned".to_string()),
            (3, "planned".to_string())
        ]
    );
    let out = cli_ok(&ws, &["approvals", "list", "--format", "json"]);
    assert_eq!(
        out.stdout, "",
        "dry-run actions are not waiting for approval"
    );
    refused(
        &ws,
        &["approvals", "approve", "1", "--by", "alice"],
        "error: action 1 is planned, not pending: it cannot be approved or rejected",
    );
    refused(
        &ws,
        &["approvals", "approve", "1", "2", "3", "--by", "alice"],
        "action 1 is planned, not pending",
    );
    let run_id = ws.actions()[0]["run_id"].as_str().unwrap().to_string();
    refused(
        &ws,
        &["approvals", "approve", "--run", &run_id, "--by", "alice"],
        &format!("run {run_id} has no pending actions that can be decided in bulk"),
    );
}
