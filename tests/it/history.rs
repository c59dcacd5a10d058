//! `history` filters and formats, the append-only triggers, and `audit verify`
//! detecting edits, deletions and state changes made behind history's back.

use serde_json::Value;
use sqlx::SqlitePool;

use crate::common::*;

/// Two tenants ("test" and "other"), three rules, one rule error, then one
/// approval and one rejection. The events, by seq:
///
/// 1 run_recorded test · 2 rule_error (r-broken, u2) · 3 action 1 disable u1 ·
/// 4 action 2 revoke u1 · 5 action 3 revoke u2 · 6 run_recorded other ·
/// 7 action 4 disable u3 · 8 action 1 approved by alice · 9 action 3 rejected by bob
fn history_ws() -> Workspace {
    let mut ws = Workspace::new();
    ws.set_top("mode = \"approval\"");
    ws.set_tables("[guardrails]\nmax_actions_percent = 100.0");
    std::fs::create_dir_all(ws.path().join("scans2")).unwrap();
    ws.set_tenant_extra(&format!(
        "{UNREACHABLE_GRAPH}[[tenant]]\nname = \"other\"\ntenant_id = \"{TENANT}\"\nsource = {{ dir = \"scans2\" }}"
    ));
    ws.add_rule(
        "a.rhai",
        &rule("r-disable", "F1", "disable_user(\"stale\")"),
    );
    ws.add_rule(
        "b.rhai",
        &rule("r-revoke", "F2", "revoke_sessions(\"token theft\")"),
    );
    ws.add_rule("c.rhai", &rule("r-broken", "F3", "throw \"boom\""));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![
                ident(1, "u1@contoso.com"),
                ident(2, "u2@contoso.com"),
                ident(5, "spare5@contoso.com"),
                ident(6, "spare6@contoso.com"),
            ],
            vec![
                finding("F1", "high", &[1]),
                finding("F2", "medium", &[1, 2]),
                finding("F3", "low", &[2]),
            ],
        ),
    );
    let other = scan(
        &now_rfc3339(),
        vec![ident(3, "u3@fabrikam.com"), ident(7, "spare7@fabrikam.com")],
        vec![finding("F1", "high", &[3])],
    );
    std::fs::write(
        ws.path().join("scans2/o.json"),
        serde_json::to_vec_pretty(&other).unwrap(),
    )
    .unwrap();
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = ws.cli(&["approvals", "approve", "1", "--by", "alice"]);
    assert_eq!(out.code, 0, "{}", out.all());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = ws.cli(&["approvals", "reject", "3", "--by", "bob"]);
    assert_eq!(out.code, 0, "{}", out.all());

    let got: Vec<(i64, String, String)> = ws
        .events()
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
                e["tenant"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(i64, String, String)> = [
        (1, "run_recorded", "test"),
        (2, "rule_error", "test"),
        (3, "action_recorded", "test"),
        (4, "action_recorded", "test"),
        (5, "action_recorded", "test"),
        (6, "run_recorded", "other"),
        (7, "action_recorded", "other"),
        (8, "state_changed", "test"),
        (9, "state_changed", "test"),
    ]
    .into_iter()
    .map(|(s, k, t)| (s, k.to_string(), t.to_string()))
    .collect();
    assert_eq!(got, want, "unexpected history for the fixture");
    let acts: Vec<(i64, String, String, String)> = ws
        .actions()
        .iter()
        .map(|a| {
            (
                a["id"].as_i64().unwrap(),
                a["kind"].as_str().unwrap().to_string(),
                a["identity_upn"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        acts,
        vec![
            (
                1,
                "disable_user".into(),
                "u1@contoso.com".into(),
                "approved".into()
            ),
            (
                2,
                "revoke_sessions".into(),
                "u1@contoso.com".into(),
                "pending".into()
            ),
            (
                3,
                "revoke_sessions".into(),
                "u2@contoso.com".into(),
                "rejected".into()
            ),
            (
                4,
                "disable_user".into(),
                "u3@fabrikam.com".into(),
                "pending".into()
            ),
        ]
    );
    ws
}

/// `history ARGS --format json`: the seqs of the events printed.
fn seqs(ws: &Workspace, args: &[&str]) -> Vec<i64> {
    let mut full = vec!["history"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--format", "json"]);
    let out = ws.cli(&full);
    assert_eq!(out.code, 0, "{full:?}:\n{}", out.all());
    out.json_lines()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

fn at_of(ws: &Workspace, seq: i64) -> String {
    ws.events()
        .iter()
        .find(|e| e["seq"] == seq)
        .unwrap_or_else(|| panic!("no event {seq}"))["at"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn pool(ws: &Workspace) -> SqlitePool {
    SqlitePool::connect(&format!("sqlite://{}", ws.db_path().display()))
        .await
        .unwrap()
}

fn verify(ws: &Workspace) -> Output {
    ws.cli(&["audit", "verify"])
}

fn assert_intact(ws: &Workspace, events: usize) {
    let out = verify(ws);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        out.stdout,
        format!("history intact: {events} events, hash chain verified\n")
    );
}

/// `audit verify` must exit 1, list exactly these problems, then the summary.
fn assert_tampered(ws: &Workspace, problems: &[&str], events: usize) {
    let out = verify(ws);
    assert_eq!(out.code, 1, "{}", out.all());
    let mut want: String = problems
        .iter()
        .map(|p| format!("TAMPERED: {p}\n"))
        .collect();
    want.push_str(&format!(
        "history NOT intact: {} problem(s) in {events} events\n",
        problems.len()
    ));
    assert_eq!(out.stdout, want);
}

#[test]
fn history_filters_by_tenant() {
    let ws = history_ws();
    assert_eq!(seqs(&ws, &[]), (1..=9).collect::<Vec<_>>());
    assert_eq!(seqs(&ws, &["--tenant", "other"]), vec![6, 7]);
    assert_eq!(seqs(&ws, &["--tenant", "test"]), vec![1, 2, 3, 4, 5, 8, 9]);
    assert_eq!(seqs(&ws, &["--tenant", "nobody"]), Vec::<i64>::new());
}

#[test]
fn history_filters_by_identity_object_id_or_upn() {
    let ws = history_ws();
    assert_eq!(seqs(&ws, &["--identity", &guid(1)]), vec![3, 4, 8]);
    assert_eq!(seqs(&ws, &["--identity", "u1@contoso.com"]), vec![3, 4, 8]);
    assert_eq!(
        seqs(&ws, &["--identity", "U1@Contoso.COM"]),
        vec![3, 4, 8],
        "UPNs are case-insensitive"
    );
    assert_eq!(seqs(&ws, &["--identity", &guid(3)]), vec![7]);
    assert_eq!(seqs(&ws, &["--identity", "u3@fabrikam.com"]), vec![7]);
    assert_eq!(seqs(&ws, &["--identity", &guid(2)]), vec![2, 5, 9]);
    assert_eq!(
        seqs(&ws, &["--identity", "nobody@x.com"]),
        Vec::<i64>::new()
    );
}

#[test]
fn history_by_upn_includes_the_identitys_rule_errors_like_by_object_id() {
    let ws = history_ws();
    // Event 2 is a rule error for u2 (identity_id set, no action): asking by UPN
    // must find the same events as asking by object id.
    assert_eq!(seqs(&ws, &["--identity", &guid(2)]), vec![2, 5, 9]);
    assert_eq!(seqs(&ws, &["--identity", "u2@contoso.com"]), vec![2, 5, 9]);
}

#[test]
fn history_filters_by_action_state_rule_and_run() {
    let ws = history_ws();
    assert_eq!(seqs(&ws, &["--action", "disable_user"]), vec![3, 7, 8]);
    assert_eq!(seqs(&ws, &["--action", "revoke_sessions"]), vec![4, 5, 9]);
    assert_eq!(seqs(&ws, &["--action", "enforce_mfa"]), Vec::<i64>::new());

    assert_eq!(seqs(&ws, &["--state", "pending"]), vec![3, 4, 5, 7]);
    assert_eq!(seqs(&ws, &["--state", "approved"]), vec![8]);
    assert_eq!(seqs(&ws, &["--state", "rejected"]), vec![9]);
    assert_eq!(seqs(&ws, &["--state", "expired"]), Vec::<i64>::new());

    assert_eq!(seqs(&ws, &["--rule", "r-disable"]), vec![3, 7, 8]);
    assert_eq!(seqs(&ws, &["--rule", "r-revoke"]), vec![4, 5, 9]);
    assert_eq!(seqs(&ws, &["--rule", "r-broken"]), vec![2]);
    assert_eq!(seqs(&ws, &["--rule", "r"]), Vec::<i64>::new());

    let other_run = ws.actions()[3]["run_id"].as_str().unwrap().to_string();
    assert_eq!(seqs(&ws, &["--run", &other_run]), vec![6, 7]);

    // Filters combine with AND.
    assert_eq!(
        seqs(&ws, &["--tenant", "test", "--action", "disable_user"]),
        vec![3, 8]
    );
    assert_eq!(
        seqs(&ws, &["--identity", "u1@contoso.com", "--state", "pending"]),
        vec![3, 4]
    );
    assert_eq!(
        seqs(&ws, &["--rule", "r-revoke", "--state", "rejected"]),
        vec![9]
    );
}

#[test]
fn history_rule_filter_matches_the_name_not_a_pattern() {
    let ws = history_ws();
    // Rule names are lowercase letters, digits and '-': "r_disable" and "r%" name
    // no rule, so they must not match "r-disable" as SQL LIKE patterns would.
    assert_eq!(seqs(&ws, &["--rule", "r_disable"]), Vec::<i64>::new());
    assert_eq!(seqs(&ws, &["--rule", "r%"]), Vec::<i64>::new());
    assert_eq!(seqs(&ws, &["--rule", "%"]), Vec::<i64>::new());
}

#[test]
fn history_filters_by_time_and_limit() {
    let ws = history_ws();
    let run_at = at_of(&ws, 1);
    let approved_at = at_of(&ws, 8);
    let rejected_at = at_of(&ws, 9);
    assert!(run_at < approved_at && approved_at < rejected_at);
    assert_eq!(seqs(&ws, &["--since", &approved_at]), vec![8, 9]);
    assert_eq!(
        seqs(&ws, &["--until", &approved_at]),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&ws, &["--since", &run_at, "--until", &rejected_at]),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(seqs(&ws, &["--since", &rejected_at]), vec![9]);
    // Another offset means the same instant.
    let t = chrono::DateTime::parse_from_rfc3339(&approved_at)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    assert_eq!(seqs(&ws, &["--since", &t]), vec![8, 9]);
    assert_eq!(
        seqs(&ws, &["--since", "2099-01-01T00:00:00Z"]),
        Vec::<i64>::new()
    );

    // --limit keeps the newest N, in order, after the other filters.
    assert_eq!(seqs(&ws, &["--limit", "3"]), vec![7, 8, 9]);
    assert_eq!(seqs(&ws, &["--limit", "1"]), vec![9]);
    assert_eq!(seqs(&ws, &["--limit", "100"]), (1..=9).collect::<Vec<_>>());
    assert_eq!(seqs(&ws, &["--tenant", "test", "--limit", "2"]), vec![8, 9]);
    assert_eq!(
        seqs(&ws, &["--state", "pending", "--limit", "2"]),
        vec![5, 7]
    );

    let bad = ws.cli(&["history", "--since", "yesterday"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr
            .contains("--since \"yesterday\" is not an RFC 3339 time"),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stdout, "");
}

#[test]
fn history_prints_json_lines_with_every_field() {
    let ws = history_ws();
    let out = ws.cli(&["history", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let events = out.json_lines();
    assert_eq!(events.len(), 9);
    let fields = [
        "seq",
        "at",
        "tenant",
        "run_id",
        "action_id",
        "identity_id",
        "action_kind",
        "rule",
        "kind",
        "actor",
        "state",
        "detail",
        "prev_hash",
        "hash",
    ];
    for e in &events {
        let obj = e.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        let mut want = fields.to_vec();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(e["hash"].as_str().unwrap().len(), 64);
    }
    // The chain: each prev_hash is the previous event's hash.
    assert_eq!(events[0]["prev_hash"], "0".repeat(64));
    for w in events.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
    let e8 = &events[7];
    assert_eq!(e8["action_id"], 1);
    assert_eq!(e8["actor"], "alice");
    assert_eq!(e8["state"], "approved");
    assert_eq!(e8["identity_id"], guid(1));
    assert_eq!(events[1]["rule"], "r-broken");
    assert_eq!(events[1]["action_id"], Value::Null);
}

#[test]
fn history_prints_csv_with_a_header_and_one_row_per_event() {
    let ws = history_ws();
    let out = ws.cli(&["history", "--format", "csv"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let mut rdr = csv::Reader::from_reader(out.stdout.as_bytes());
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        vec![
            "seq",
            "at",
            "tenant",
            "kind",
            "action_id",
            "action_kind",
            "identity_id",
            "rule",
            "state",
            "actor",
            "detail"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 9);
    let seq: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(seq, vec!["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let r8 = &rows[7];
    assert_eq!(&r8[2], "test");
    assert_eq!(&r8[3], "state_changed");
    assert_eq!(&r8[4], "1");
    assert_eq!(&r8[5], "disable_user");
    assert_eq!(&r8[6], guid(1));
    assert_eq!(&r8[8], "approved");
    assert_eq!(&r8[9], "alice");
    // The JSON detail (commas and quotes) survives CSV quoting.
    let d: Value = serde_json::from_str(&r8[10]).unwrap();
    assert_eq!(d["decision"], "approve");
    // Filters apply to CSV too.
    let out = ws.cli(&["history", "--tenant", "other", "--format", "csv"]);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
}

#[test]
fn history_prints_a_table_with_an_uppercase_header() {
    let ws = history_ws();
    let out = ws.cli(&["history"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 10, "{}", out.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        vec![
            "SEQ",
            "AT",
            "TENANT",
            "KIND",
            "ACTION_ID",
            "ACTION_KIND",
            "IDENTITY_ID",
            "RULE",
            "STATE",
            "ACTOR",
            "DETAIL"
        ]
    );
    for (line, seq) in lines[1..].iter().zip(1..) {
        assert!(line.starts_with(&format!("{seq} ")), "{line}");
    }
    assert!(lines[8].contains("state_changed"), "{}", lines[8]);
    assert!(lines[8].contains(" alice "), "{}", lines[8]);
    // Only the header when nothing matches.
    let empty = ws.cli(&["history", "--tenant", "nobody"]);
    assert_eq!(empty.stdout.lines().count(), 1);
}

#[test]
fn audit_verify_passes_on_intact_history() {
    let ws = history_ws();
    assert_intact(&ws, 9);
}

#[test]
fn audit_verify_passes_on_an_empty_history() {
    let ws = Workspace::new();
    // `audit verify` no longer creates a store: `execute` (nothing to do) does.
    assert_eq!(ws.cli(&["execute"]).code, 0);
    assert_intact(&ws, 0);
}

#[tokio::test]
async fn history_rows_cannot_be_updated_or_deleted_in_sql() {
    let ws = history_ws();
    let before = ws.events();
    let db = pool(&ws).await;
    let attempts: [(&str, &str); 8] = [
        (
            "UPDATE events SET detail = 'edited' WHERE seq = 3",
            "history is append-only: events cannot be updated",
        ),
        (
            "UPDATE events SET actor = 'mallory'",
            "history is append-only: events cannot be updated",
        ),
        (
            "DELETE FROM events WHERE seq = 9",
            "history is append-only: events cannot be deleted",
        ),
        (
            "DELETE FROM events",
            "history is append-only: events cannot be deleted",
        ),
        (
            "UPDATE approvals SET approver = 'mallory'",
            "history is append-only: approvals cannot be updated",
        ),
        (
            "DELETE FROM approvals",
            "history is append-only: approvals cannot be deleted",
        ),
        (
            "DELETE FROM actions WHERE id = 2",
            "history is append-only: actions cannot be deleted",
        ),
        (
            "UPDATE actions SET kind = 'enforce_mfa' WHERE id = 2",
            "history is append-only: only an action's state may change",
        ),
    ];
    for (sql, message) in attempts {
        let err = match sqlx::query(sql).execute(&db).await {
            Ok(r) => panic!(
                "{sql} should be refused, changed {} row(s)",
                r.rows_affected()
            ),
            Err(e) => e,
        };
        assert!(
            err.to_string().contains(message),
            "{sql}: {err} should say {message:?}"
        );
    }
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(runs, 2);
    let err = sqlx::query("DELETE FROM runs")
        .execute(&db)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("history is append-only: runs cannot be deleted"),
        "{err}"
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 9);
    db.close().await;
    assert_eq!(ws.events(), before);
    assert_intact(&ws, 9);
}

#[tokio::test]
async fn audit_verify_detects_an_edited_event() {
    let ws = history_ws();
    let db = pool(&ws).await;
    sqlx::query("DROP TRIGGER events_no_update")
        .execute(&db)
        .await
        .unwrap();
    let r = sqlx::query(
        "UPDATE events SET detail = '{\"decision\":\"approve\",\"comment\":\"forged\",\"bulk\":false}' WHERE seq = 8",
    )
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(r.rows_affected(), 1);
    db.close().await;
    assert_tampered(
        &ws,
        &[
            "event 8: content does not match its hash (edited)",
            // Event 8 records alice's approval, which the chain no longer backs.
            "approval row (approve of action 1 by \"alice\"): does not match its event 8",
        ],
        9,
    );
}

#[tokio::test]
async fn audit_verify_detects_an_edited_actor_even_with_a_recomputed_looking_hash() {
    let ws = history_ws();
    let db = pool(&ws).await;
    sqlx::query("DROP TRIGGER events_no_update")
        .execute(&db)
        .await
        .unwrap();
    // Change who approved, and copy another event's hash over this one.
    sqlx::query(
        "UPDATE events SET actor = 'mallory', hash = (SELECT hash FROM events WHERE seq = 2) WHERE seq = 8",
    )
    .execute(&db)
    .await
    .unwrap();
    db.close().await;
    assert_tampered(
        &ws,
        &[
            "event 8: content does not match its hash (edited)",
            "event 9: prev_hash does not match the previous event's hash",
            // Event 8 records alice's approval, which the chain no longer backs.
            "approval row (approve of action 1 by \"alice\"): does not match its event 8",
        ],
        9,
    );
}

#[tokio::test]
async fn audit_verify_detects_a_deleted_event() {
    let ws = history_ws();
    let db = pool(&ws).await;
    sqlx::query("DROP TRIGGER events_no_delete")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM events WHERE seq = 4")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    assert_tampered(
        &ws,
        &[
            "event 5: expected event 4 here: events are missing",
            "event 5: prev_hash does not match the previous event's hash",
            "action 2: has no history events",
        ],
        8,
    );
}

#[tokio::test]
async fn audit_verify_detects_a_deleted_last_event() {
    let ws = history_ws();
    let db = pool(&ws).await;
    sqlx::query("DROP TRIGGER events_no_delete")
        .execute(&db)
        .await
        .unwrap();
    // The newest event (action 3 rejected by bob) leaves no gap in the chain, but
    // the action's state no longer matches its history.
    sqlx::query("DELETE FROM events WHERE seq = 9")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    assert_tampered(
        &ws,
        &[
            "action 3: state is rejected but history last recorded pending",
            // The deleted event recorded bob's rejection.
            "approval row (reject of action 3 by \"bob\"): its event 9 does not exist",
        ],
        8,
    );
}

#[tokio::test]
async fn audit_verify_detects_a_state_change_made_behind_historys_back() {
    let ws = history_ws();
    let db = pool(&ws).await;
    // The triggers allow the state column to change (decisions do it), so this
    // succeeds in SQL; but no event records it.
    let r = sqlx::query("UPDATE actions SET state = 'approved' WHERE id = 4")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 1);
    db.close().await;
    assert_tampered(
        &ws,
        &["action 4: state is approved but history last recorded pending"],
        9,
    );
}
