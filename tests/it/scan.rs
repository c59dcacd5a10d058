//! Scan loading: the schema and the loader agree, bad scans are refused with
//! their place named and recorded, sources pick the right scan.

use std::path::Path;

use entra_remediator::scan::Scan;
use serde_json::{Value, json};

use crate::common::*;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_slice(&std::fs::read(repo().join("schemas/scan-v1.schema.json")).unwrap())
            .unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn schema_and_loader_agree_on_every_fixture() {
    let v = validator();
    let base = repo().join("tests/fixtures/scans");
    let mut checked = 0;
    for f in files(&base.join("valid")) {
        let bytes = std::fs::read(&f).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            v.is_valid(&doc),
            "schema rejects valid fixture {}",
            f.display()
        );
        Scan::from_slice(&bytes, &f.display().to_string())
            .unwrap_or_else(|e| panic!("loader rejects valid fixture: {e}"));
        checked += 1;
    }
    for f in files(&base.join("invalid-schema")) {
        let bytes = std::fs::read(&f).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(!v.is_valid(&doc), "schema accepts {}", f.display());
        let err = Scan::from_slice(&bytes, &f.display().to_string())
            .err()
            .unwrap_or_else(|| panic!("loader accepts {}", f.display()));
        assert!(
            err.to_string().starts_with(&f.display().to_string()),
            "error does not name the file: {err}"
        );
        checked += 1;
    }
    for f in files(&base.join("invalid-semantic")) {
        let bytes = std::fs::read(&f).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v.is_valid(&doc), "schema should accept {}", f.display());
        let err = Scan::from_slice(&bytes, "x.json").unwrap_err().to_string();
        assert!(
            err.contains("at identities[") || err.contains("at findings["),
            "{err}"
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} fixtures checked");
}

#[test]
fn the_bundled_example_scan_is_valid_against_schema_and_loader() {
    let bytes = std::fs::read(repo().join("examples/scans/contoso-2026-11-20.json")).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(validator().is_valid(&doc));
    let scan = Scan::from_slice(&bytes, "example").unwrap();
    assert!(scan.identities.len() >= 25, "{}", scan.identities.len());
    assert!(scan.identities.iter().any(|i| i.is_guest()));
    assert!(
        scan.identities
            .iter()
            .any(|i| i.groups.iter().any(|g| g.dynamic))
    );
}

#[test]
fn errors_name_the_json_path_and_line() {
    let text = "{\n \"schema_version\": 1,\n \"tenant_id\": \"11111111-2222-3333-4444-555555555555\",\n \"tenant_name\": \"t\",\n \"scanned_at\": \"2026-11-20T06:00:00Z\",\n \"identities\": [{\"id\": \"00000000-0000-0000-0000-000000000001\", \"user_principal_name\": \"a@b\", \"display_name\": \"a\", \"user_type\": \"Member\", \"account_enabled\": true, \"last_sign_in\": null, \"risk_score\": 300, \"roles\": [], \"groups\": []}],\n \"findings\": []\n}";
    let err = Scan::from_slice(text.as_bytes(), "scan.json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("scan.json:6:"), "{err}");
    assert!(err.contains("identities[0].risk_score"), "{err}");
    let err = Scan::from_slice(b"{\"schema_version\": 1, ", "t.json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.json:1:"), "{err}");
    let err = Scan::from_slice(&[0xff, 0xfe, b'{'], "bin.json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("bin.json:1:"), "{err}");
}

fn fresh_scan() -> Value {
    scan(
        &now_rfc3339(),
        vec![ident(1, "a@t.com"), ident(2, "b@t.com")],
        vec![finding("F1", "high", &[1, 2])],
    )
}

fn disabling_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.add_rule(
        "r.rhai",
        &rule("disable-all", "F1", r#"disable_user("finding F1")"#),
    );
    ws
}

fn rejected_and_nothing_planned(ws: &Workspace, out: &Output, needle: &str) {
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("scan refused"), "{}", out.stderr);
    assert!(out.stderr.contains(needle), "{}", out.stderr);
    let events = ws.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "scan_rejected");
    assert!(events[0]["detail"].as_str().unwrap().contains(needle));
    assert!(ws.actions().is_empty());
}

#[test]
fn a_malformed_scan_is_refused_recorded_and_plans_nothing() {
    let ws = disabling_workspace();
    let mut s = fresh_scan();
    s["identities"][1]["user_type"] = json!("member");
    let path = ws.add_scan("bad.json", &s);
    let out = ws.cli(&["run", "--once"]);
    rejected_and_nothing_planned(&ws, &out, &path.display().to_string());
    assert!(
        out.stderr.contains("identities[1].user_type"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_finding_naming_an_unknown_identity_is_refused() {
    let ws = disabling_workspace();
    let mut s = fresh_scan();
    s["findings"][0]["affected_identities"] = json!([guid(1), guid(99)]);
    ws.add_scan("s.json", &s);
    let out = ws.cli(&["run", "--once"]);
    rejected_and_nothing_planned(&ws, &out, "findings[0].affected_identities[1]");
}

#[test]
fn duplicate_identity_ids_are_refused() {
    let ws = disabling_workspace();
    let s = scan(
        &now_rfc3339(),
        vec![ident(1, "a@t.com"), ident(1, "b@t.com")],
        vec![finding("F1", "high", &[1])],
    );
    ws.add_scan("s.json", &s);
    let out = ws.cli(&["run", "--once"]);
    rejected_and_nothing_planned(&ws, &out, "duplicate identity id");
}

#[test]
fn a_scan_for_another_tenant_is_refused() {
    let ws = disabling_workspace();
    let mut s = fresh_scan();
    s["tenant_id"] = json!("99999999-2222-3333-4444-555555555555");
    ws.add_scan("s.json", &s);
    let out = ws.cli(&["run", "--once"]);
    rejected_and_nothing_planned(&ws, &out, "99999999-2222-3333-4444-555555555555");
}

#[test]
fn a_stale_scan_is_refused() {
    let ws = disabling_workspace();
    let mut s = fresh_scan();
    s["scanned_at"] = json!("2020-01-01T00:00:00Z");
    ws.add_scan("s.json", &s);
    let out = ws.cli(&["run", "--once"]);
    rejected_and_nothing_planned(&ws, &out, "older than max_scan_age");
}

#[test]
fn a_scan_over_the_size_limit_is_refused() {
    let mut ws = disabling_workspace();
    ws.set_top("max_scan_bytes = 200");
    ws.add_scan("s.json", &fresh_scan());
    let out = ws.cli(&["run", "--once"]);
    rejected_and_nothing_planned(&ws, &out, "over the limit of 200 bytes");
}

#[test]
fn the_newest_scan_by_scanned_at_wins_and_scanned_at_picks_another() {
    let ws = disabling_workspace();
    let newer = chrono::Utc::now() - chrono::Duration::hours(1);
    let older = newer - chrono::Duration::hours(5);
    // The file names sort the other way round: the choice must be by scanned_at.
    let mut a = fresh_scan();
    a["scanned_at"] = json!(newer.to_rfc3339());
    a["identities"][0]["user_principal_name"] = json!("newest@t.com");
    ws.add_scan("a.json", &a);
    let mut b = fresh_scan();
    b["scanned_at"] = json!(older.to_rfc3339());
    b["identities"][0]["user_principal_name"] = json!("older@t.com");
    ws.add_scan("z.json", &b);

    let out = ws.cli(&["plan", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let upns: Vec<String> = out
        .json_lines()
        .iter()
        .map(|a| a["upn"].as_str().unwrap().to_string())
        .collect();
    assert!(upns.contains(&"newest@t.com".to_string()), "{upns:?}");

    let out = ws.cli(&[
        "plan",
        "--format",
        "json",
        "--scanned-at",
        &older.to_rfc3339(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let upns: Vec<String> = out
        .json_lines()
        .iter()
        .map(|a| a["upn"].as_str().unwrap().to_string())
        .collect();
    assert!(upns.contains(&"older@t.com".to_string()), "{upns:?}");

    let out = ws.cli(&["plan", "--scanned-at", "2026-01-01T00:00:00Z"]);
    // A time that matches no scan is a mistake in the command (exit 1), not a refused scan (2).
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("no scan in"), "{}", out.stderr);
}

#[test]
fn plan_writes_nothing() {
    let ws = disabling_workspace();
    ws.add_scan("s.json", &fresh_scan());
    let out = ws.cli(&["plan"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("disable_user"), "{}", out.stdout);
    assert!(out.stderr.contains("nothing recorded"), "{}", out.stderr);
    assert!(!ws.db_path().exists(), "plan created the history database");
}

#[test]
fn a_scan_already_processed_is_skipped_unless_forced() {
    let ws = disabling_workspace();
    ws.add_scan("s.json", &fresh_scan());
    assert_eq!(ws.cli(&["run", "--once"]).code, 0);
    let before = ws.actions().len();
    assert_eq!(before, 2);
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("already processed"), "{}", out.stderr);
    assert_eq!(ws.actions().len(), before);
    let out = ws.cli(&["run", "--once", "--force"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(ws.actions().len(), before * 2);
}

#[test]
fn an_explicit_scan_file_is_used_instead_of_the_directory() {
    let ws = disabling_workspace();
    let mut s = fresh_scan();
    s["identities"][0]["user_principal_name"] = json!("picked@t.com");
    let p = ws.write("elsewhere.json", &s.to_string());
    let out = ws.cli(&["plan", "--format", "json", "--scan", p.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("picked@t.com"));
}

#[test]
fn a_malformed_file_in_the_scan_directory_blocks_and_is_named() {
    let ws = disabling_workspace();
    ws.add_scan("good.json", &fresh_scan());
    let bad = ws.write("scans/broken.json", "{\"scanned_at\": ");
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains(&bad.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(ws.actions().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_source_sends_the_bearer_token_and_refuses_errors() {
    use axum::http::{HeaderMap, StatusCode};
    let body = fresh_scan().to_string();
    let app = axum::Router::new().route(
        "/scan",
        axum::routing::get(move |headers: HeaderMap| {
            let body = body.clone();
            async move {
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Bearer s3cret-token") => (StatusCode::OK, body),
                    _ => (StatusCode::UNAUTHORIZED, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let ws = disabling_workspace();
    // Replace the directory source by the URL source.
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "source = { dir = \"scans\" }",
        &format!("source = {{ url = \"http://{addr}/scan\", token_file = \"token\" }}"),
    );
    std::fs::write(ws.config_path(), cfg).unwrap();
    ws.write("token", "s3cret-token\n");
    let ws_path = ws.path().to_path_buf();
    let cfg_path = ws.config_path();
    let out = tokio::task::spawn_blocking(move || {
        run_bin(
            &ws_path,
            &["--config", cfg_path.to_str().unwrap(), "run", "--once"],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("a@t.com"), "{}", out.stdout);
    assert!(!out.all().contains("s3cret-token"));

    ws.write("token", "wrong");
    let ws_path = ws.path().to_path_buf();
    let cfg_path = ws.config_path();
    let out = tokio::task::spawn_blocking(move || {
        run_bin(
            &ws_path,
            &[
                "--config",
                cfg_path.to_str().unwrap(),
                "run",
                "--once",
                "--force",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("401"), "{}", out.stderr);
}
