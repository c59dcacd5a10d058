//! The daemon as a process: schedules without overlap, rule hot-reload, SIGHUP,
//! graceful SIGTERM during a Graph call, and two instances sharing one store.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_entra::{FakeTenant, Fault, User};
use serde_json::Value;

use crate::common::*;

const CLIENT: &str = "00000000-0000-0000-0000-00000000c11e";
const SECRET: &str = "daemon-test-secret-0123456789";

fn user(n: u32) -> User {
    User {
        id: guid(n),
        user_principal_name: format!("u{n}@t.com"),
        display_name: format!("u{n}"),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(ws: &Workspace) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
            .args([
                "--config",
                ws.config_path().to_str().unwrap(),
                "--log",
                "info",
                "daemon",
            ])
            .current_dir(ws.path())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(ws.path().join(format!("daemon-{}.log", rand_suffix())))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Daemon { child }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> i32 {
        self.signal("TERM");
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Waits until history has an event satisfying `pred` (reading while the daemon runs).
async fn wait_event(ws: &Workspace, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let dir = ws.path().to_path_buf();
        // A test that breaks config.toml on purpose keeps a good copy to read with.
        let good = ws.path().join("good.toml");
        let cfg = if good.exists() {
            good
        } else {
            ws.config_path()
        };
        let out = tokio::task::spawn_blocking(move || {
            run_bin(
                &dir,
                &[
                    "--config",
                    cfg.to_str().unwrap(),
                    "history",
                    "--format",
                    "json",
                ],
            )
        })
        .await
        .unwrap();
        if out.code == 0 {
            let events = out.json_lines();
            if events.iter().any(&pred) {
                return events;
            }
        }
        if started.elapsed() > Duration::from_secs(45) {
            let mut logs = String::new();
            for e in std::fs::read_dir(ws.path()).unwrap() {
                let p = e.unwrap().path();
                if p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("daemon-")
                {
                    logs.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
            panic!("timed out waiting for {what}; daemon logs:\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn enforce_ws(fake: &FakeTenant, schedule: &str) -> Workspace {
    fake.register_app_secret(CLIENT, SECRET);
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\n[daemon]\nschedule = \"{schedule}\"\nexecute_interval_secs = 1\nshutdown_grace_secs = 20\n"
    ));
    ws.write("secret", SECRET);
    ws.set_graph(&graph_table(&fake.base_url(), CLIENT, "secret", ""));
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_ticks_run_the_tenant_and_never_overlap() {
    let fake = FakeTenant::start(TENANT).await;
    fake.add_user(user(1));
    fake.add_user(user(2));
    // Each run takes longer than the schedule's period.
    fake.inject(Fault::Latency {
        matching: "GET /v1.0/users".into(),
        delay: Duration::from_millis(2500),
    });
    let ws = enforce_ws(&fake, "* * * * * *").await;
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u1@t.com"), ident(2, "u2@t.com")],
            vec![finding("F1", "high", &[1, 2])],
        ),
    );
    let d = Daemon::start(&ws);
    let events = wait_event(&ws, "a skipped tick", |e| e["kind"] == "tick_skipped").await;
    assert!(events.iter().any(|e| e["kind"] == "daemon_started"));
    wait_event(&ws, "both actions done", |e| {
        e["kind"] == "execution_outcome" && e["state"] == "done" && e["action_id"] == 2
    })
    .await;
    assert_eq!(d.stop(), 0);
    // Exactly one run planned the scan, and each account got exactly one PATCH.
    let events = ws.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "run_recorded")
            .count(),
        1
    );
    for n in [1, 2] {
        let patches = fake
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&guid(n)))
            .count();
        assert_eq!(patches, 1, "user {n}");
        assert!(!fake.user(&guid(n)).unwrap().account_enabled);
    }
    let skipped = events.iter().find(|e| e["kind"] == "tick_skipped").unwrap();
    assert!(skipped["detail"].as_str().unwrap().contains("still going"));
    assert!(events.iter().any(|e| e["kind"] == "daemon_stopped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_rule_file_keeps_the_old_rules_and_a_fixed_one_replaces_them() {
    let mut ws = Workspace::new();
    ws.set_tables("[daemon]\nschedule = \"0 0 0 1 1 *\"\ncatch_up = false\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    let d = Daemon::start(&ws);
    wait_event(&ws, "start", |e| e["kind"] == "daemon_started").await;
    // An editor's atomic save: write a temporary file, rename it over the rule.
    let tmp = ws.write("policies/.r.rhai.swp", "fn metadata() {\n  #{ name: \"r\", description: \"d\" }\n}\nfn evaluate(f, i, t) { disable_usr(\"typo\") }\n");
    std::fs::rename(&tmp, ws.path().join("policies/r.rhai")).unwrap();
    let events = wait_event(&ws, "refusal", |e| e["kind"] == "rule_set_refused").await;
    let refused = events
        .iter()
        .find(|e| e["kind"] == "rule_set_refused")
        .unwrap();
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("r.rhai:4:"), "{detail}");
    assert!(detail.contains("disable_usr"), "{detail}");
    let tmp = ws.write(
        "policies/.r.rhai.swp",
        &rule("r", "F1", "revoke_sessions(\"fixed\")"),
    );
    std::fs::rename(&tmp, ws.path().join("policies/r.rhai")).unwrap();
    let events = wait_event(&ws, "reload", |e| e["kind"] == "rules_reloaded").await;
    let reloaded = events
        .iter()
        .find(|e| e["kind"] == "rules_reloaded")
        .unwrap();
    let detail: Value = serde_json::from_str(reloaded["detail"].as_str().unwrap()).unwrap();
    assert_ne!(detail["rule_set_hash"], detail["previous"]);
    assert_eq!(d.stop(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_good_config_and_refuses_a_bad_one() {
    let mut ws = Workspace::new();
    ws.set_tables("[daemon]\nschedule = \"0 0 0 1 1 *\"\ncatch_up = false\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    let d = Daemon::start(&ws);
    wait_event(&ws, "start", |e| e["kind"] == "daemon_started").await;
    let good = std::fs::read_to_string(ws.config_path()).unwrap();
    std::fs::write(ws.path().join("good.toml"), &good).unwrap();
    std::fs::write(ws.config_path(), format!("{good}\nbogus_key = 1\n")).unwrap();
    d.signal("HUP");
    let events = wait_event(&ws, "refusal", |e| e["kind"] == "config_refused").await;
    let refused = events
        .iter()
        .find(|e| e["kind"] == "config_refused")
        .unwrap();
    assert!(refused["detail"].as_str().unwrap().contains("bogus_key"));
    std::fs::write(ws.config_path(), good.replace("0 0 0 1 1 *", "0 0 0 2 1 *")).unwrap();
    d.signal("HUP");
    wait_event(&ws, "reload", |e| e["kind"] == "config_reloaded").await;
    assert_eq!(
        d.stop(),
        0,
        "still running after the refused config, then stops cleanly"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_graph_call_in_flight_finish_and_be_recorded() {
    let fake = FakeTenant::start(TENANT).await;
    fake.add_user(user(1));
    fake.inject(Fault::Latency {
        matching: "PATCH".into(),
        delay: Duration::from_millis(2000),
    });
    let ws = enforce_ws(&fake, "0 0 0 1 1 *").await;
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u1@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    // catch-up runs the tenant at start (no history yet).
    let d = Daemon::start(&ws);
    let started = Instant::now();
    while !fake.requests().iter().any(|r| r.method == "PATCH") {
        assert!(started.elapsed() < Duration::from_secs(30), "no PATCH");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let code = tokio::task::spawn_blocking(move || d.stop()).await.unwrap();
    assert_eq!(code, 0);
    assert!(!fake.user(&guid(1)).unwrap().account_enabled);
    let actions = ws.actions();
    assert_eq!(actions[0]["state"], "done", "{actions:?}");
    let events = ws.events();
    let stop = events
        .iter()
        .position(|e| e["kind"] == "daemon_stopped")
        .unwrap();
    let outcome = events
        .iter()
        .position(|e| e["kind"] == "execution_outcome")
        .unwrap();
    assert!(
        outcome < stop,
        "the outcome is recorded before the daemon stops"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_on_one_postgres_store_execute_each_action_once() {
    let Some(url) = postgres_url("two_daemons_on_one_postgres_store_execute_each_action_once")
    else {
        return;
    };
    let db = format!("er_daemon_{}", rand_suffix());
    create_database(&url, &db).await;
    let db_url = with_database(&url, &db);
    let fake = FakeTenant::start(TENANT).await;
    for n in 1..=30 {
        fake.add_user(user(n));
    }
    fake.inject(Fault::Latency {
        matching: "GET".into(),
        delay: Duration::from_millis(300),
    });
    // The users' reads (two, of 15 ids each, for all 30) are slow too, so passes overlap.
    fake.inject(Fault::Latency {
        matching: "GET /v1.0/users".into(),
        delay: Duration::from_millis(1500),
    });
    let ws = enforce_ws(&fake, "*/2 * * * * *").await;
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "url = \"sqlite://history.db\"",
        &format!("url = \"{db_url}\""),
    );
    std::fs::write(ws.config_path(), cfg).unwrap();
    ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "[disable_user(\"stale\"), revoke_sessions(\"stale\")]",
        ),
    );
    let ids: Vec<u32> = (1..=30).collect();
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            ids.iter()
                .map(|n| ident(*n, &format!("u{n}@t.com")))
                .collect(),
            vec![finding("F1", "high", &ids)],
        ),
    );
    let a = Daemon::start(&ws);
    let b = Daemon::start(&ws);
    wait_event(&ws, "all 60 actions executed", |_| {
        (1..=30).all(|n| {
            !fake
                .user(&guid(n))
                .map(|u| u.account_enabled)
                .unwrap_or(true)
        }) && (1..=30).all(|n| fake.revocations(&guid(n)) >= 1)
    })
    .await;
    // Let both keep ticking a little: nothing more may be sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        tokio::task::spawn_blocking(move || a.stop()).await.unwrap(),
        0
    );
    assert_eq!(
        tokio::task::spawn_blocking(move || b.stop()).await.unwrap(),
        0
    );
    for n in 1..=30 {
        let patches = fake
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&guid(n)))
            .count();
        assert_eq!(patches, 1, "user {n} patched {patches} times");
        assert_eq!(fake.revocations(&guid(n)), 1, "user {n}");
    }
    let events = ws.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "run_recorded")
            .count(),
        1,
        "one instance planned the scan"
    );
    let starters: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e["kind"] == "daemon_started")
        .map(|e| e["actor"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(starters.len(), 2, "two instances ran");
    let out = ws.cli(&["audit", "verify"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

/// The PostgreSQL URL for tests, or None (with a plain message) when it is not
/// set; in CI (`ENTRA_REMEDIATOR_REQUIRE_POSTGRES=1`) a missing URL fails.
fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("ENTRA_REMEDIATOR_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("ENTRA_REMEDIATOR_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{test}: ENTRA_REMEDIATOR_TEST_POSTGRES_URL is not set but PostgreSQL tests are required"
            );
            eprintln!(
                "PostgreSQL test SKIPPED ({test}): set ENTRA_REMEDIATOR_TEST_POSTGRES_URL to run it"
            );
            None
        }
    }
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

async fn create_database(url: &str, db: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut c)
        .await
        .unwrap();
}

#[test]
fn the_systemd_unit_is_rated_ok_by_systemd_analyze() {
    let unit = repo().join("systemd/entra-remediator.service");
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            eprintln!("systemd-analyze not installed: unit rating SKIPPED");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap();
    let score: f64 = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(score <= 2.0, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_approvals_expire_on_the_daemons_timer_without_any_read() {
    let fake = FakeTenant::start(TENANT).await;
    fake.add_user(user(1));
    let mut ws = enforce_ws(&fake, "0 0 0 1 1 *").await;
    ws.set_top("mode = \"approval\"\napproval_ttl = \"2s\"");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u1@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let out = ws.cli_async(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    // Only the daemon runs from here on; `history` is read-only and expires nothing.
    let d = Daemon::start(&ws);
    let events = wait_event(&ws, "the approval expired", |e| {
        e["kind"] == "state_changed" && e["state"] == "expired"
    })
    .await;
    let expired = events.iter().find(|e| e["state"] == "expired").unwrap();
    assert_eq!(expired["actor"], "system");
    assert_eq!(d.stop(), 0);
    assert!(
        fake.user(&guid(1)).unwrap().account_enabled,
        "nothing executed"
    );
}

#[test]
fn an_api_address_that_cannot_be_bound_fails_the_start_and_says_which() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut ws = Workspace::new();
    ws.set_tables(&format!(
        "[api]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"api-token\"\n"
    ));
    ws.write("api-token", "a-token-of-sufficient-length-0123456789");
    let out = ws.cli(&["daemon"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains(&format!("HTTP API on 127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graph_source_makes_each_scheduled_run_scan_the_tenant_and_act_on_that_scan() {
    let fake = FakeTenant::start(TENANT).await;
    let old = |days: i64| (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339();
    for (n, last) in [(1, 200), (2, 1)] {
        fake.add_user(user(n));
        fake.set_user_details(
            &guid(n),
            fake_entra::UserDetails {
                created: Some(old(400)),
                on_premises_sync_enabled: None,
                sign_in: Some(fake_entra::SignIn {
                    last: Some(old(last)),
                    last_non_interactive: None,
                    last_successful: Some(old(last)),
                }),
                registration: Some(fake_entra::Registration::with_methods(&[
                    "microsoftAuthenticatorPush",
                ])),
                risk: None,
            },
        );
    }
    let mut ws = enforce_ws(&fake, "*/2 * * * * *").await;
    ws.set_tenant_extra("source = { dir = \"scans\", graph = { stale_days = 90 } }");
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap();
    std::fs::write(
        ws.config_path(),
        cfg.replacen("source = { dir = \"scans\" }\n", "", 1),
    )
    .unwrap();
    ws.add_rule(
        "stale.rhai",
        &rule("stale", "ER-STALE-003", "disable_user(\"stale\")"),
    );
    let d = Daemon::start(&ws);
    wait_event(&ws, "the stale user disabled", |e| {
        e["kind"] == "execution_outcome" && e["state"] == "done"
    })
    .await;
    assert_eq!(d.stop(), 0);
    let events = ws.events();
    let first_scan = events.iter().position(|e| e["kind"] == "scan_written");
    let first_run = events.iter().position(|e| e["kind"] == "run_recorded");
    assert!(
        first_scan.is_some() && first_scan < first_run,
        "scan, then plan"
    );
    assert!(!fake.user(&guid(1)).unwrap().account_enabled);
    assert!(fake.user(&guid(2)).unwrap().account_enabled, "not stale");
    let written = std::fs::read_dir(ws.path().join("scans")).unwrap().count();
    assert!(written >= 1);
}
