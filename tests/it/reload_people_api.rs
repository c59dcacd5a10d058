//! Issue 12, items 8, 11, 15 and 18, through the real binary: one reload per
//! rule edit, SIGHUP and the API token, who decided (OS user, interface) and
//! undo under the approver list, and API connections that cannot pile up.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_entra::{FakeTenant, User};
use serde_json::{Value, json};

use crate::common::*;

/// The daemon as a child process, killed if a test fails.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(ws: &Workspace) -> Daemon {
        Self::start_with_fd_limit(ws, None)
    }

    /// Starts the daemon, with at most `nofile` open files when given (as
    /// systemd's LimitNOFILE would).
    fn start_with_fd_limit(ws: &Workspace, nofile: Option<u32>) -> Daemon {
        let bin = env!("CARGO_BIN_EXE_entra-remediator");
        let cfg = ws.config_path();
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
                c
            }
            None => Command::new(bin),
        };
        let log = std::fs::File::create(ws.path().join(format!(
            "daemon-{}.log",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )))
        .unwrap();
        let child = cmd
            .args(["--config", cfg.to_str().unwrap(), "--log", "info", "daemon"])
            .current_dir(ws.path())
            .stdout(Stdio::null())
            .stderr(log)
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

fn daemon_logs(ws: &Workspace) -> String {
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
    logs
}

/// History (read with the CLI while the daemon runs) once `pred` holds for it.
async fn wait_history(ws: &Workspace, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let dir = ws.path().to_path_buf();
        let cfg = ws.path().join("reader.toml");
        let cfg = if cfg.exists() { cfg } else { ws.config_path() };
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
            if pred(&events) {
                return events;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "timed out waiting for {what}; daemon logs:\n{}",
            daemon_logs(ws)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

fn detail(e: &Value) -> Value {
    serde_json::from_str(e["detail"].as_str().unwrap())
        .unwrap_or_else(|err| panic!("detail is not JSON: {e}: {err}"))
}

/// A workspace whose schedule never fires on its own.
fn quiet_ws(extra_tables: &str) -> Workspace {
    let mut ws = Workspace::new();
    ws.set_tables(&format!(
        "[daemon]\nschedule = \"0 0 0 1 1 *\"\ncatch_up = false\n{extra_tables}"
    ));
    ws
}

/// A loopback port nothing listens on (now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn api_table(port: u16, extra: &str) -> String {
    format!(
        "[api]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"api-token\"\n{extra}\n"
    )
}

/// Status of a GET with a bearer token (bounded by a client timeout).
async fn get_status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

async fn wait_healthy(port: u16) {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/healthz");
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the API never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- item 8

/// Lets the watcher and the daemon see (and act on) anything still pending:
/// the debouncer waits 300 ms, and the old reload loop fired about 3 times a
/// second, so a few seconds show any repetition.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_rule_edit_is_one_reload_and_a_broken_set_is_refused_once_until_fixed() {
    let ws = quiet_ws("");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    let d = Daemon::start(&ws);
    wait_history(&ws, "start", |e| count(e, "daemon_started") == 1).await;

    // One edit: one reload, and it stays one.
    ws.add_rule("r.rhai", &rule("r", "F1", "revoke_sessions(\"edited\")"));
    wait_history(&ws, "the reload", |e| count(e, "rules_reloaded") == 1).await;
    settle().await;
    assert_eq!(count(&ws.events(), "rules_reloaded"), 1);

    // A broken file: refused once, however long it stays broken, and reading
    // it (policy check opens every rule file) is no change.
    ws.add_rule(
        "r.rhai",
        "fn metadata() { #{ name: \"r\", description: \"d\" } }\nfn evaluate(f, i, t) { disable_usr(\"typo\") }\n",
    );
    wait_history(&ws, "the refusal", |e| count(e, "rule_set_refused") == 1).await;
    settle().await;
    let check = ws.cli(&["policy", "check"]);
    assert_ne!(check.code, 0, "the set is broken: {}", check.all());
    settle().await;
    let events = ws.events();
    assert_eq!(count(&events, "rule_set_refused"), 1, "{events:#?}");
    assert_eq!(count(&events, "rules_reloaded"), 1);

    // Fixed: reloaded once.
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"fixed\")"));
    wait_history(&ws, "the second reload", |e| {
        count(e, "rules_reloaded") == 2
    })
    .await;
    settle().await;
    let events = ws.events();
    assert_eq!(count(&events, "rules_reloaded"), 2);
    assert_eq!(count(&events, "rule_set_refused"), 1);
    assert_eq!(d.stop(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_of_the_exceptions_file_alone_is_reloaded_once() {
    let ws = quiet_ws("");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    let d = Daemon::start(&ws);
    wait_history(&ws, "start", |e| count(e, "daemon_started") == 1).await;
    ws.write(
        "policies/exceptions.toml",
        "[[exception]]\nidentity = \"u1@t.com\"\nrule = \"r\"\nreason = \"break-glass\"\nowner = \"secops\"\nexpires = 2999-01-01\n",
    );
    let events = wait_history(&ws, "the reload", |e| count(e, "rules_reloaded") == 1).await;
    let reloaded = events
        .iter()
        .find(|e| e["kind"] == "rules_reloaded")
        .unwrap();
    let d1 = detail(reloaded);
    // The rules themselves did not change; the exceptions did.
    assert_eq!(d1["rule_set_hash"], d1["previous"]);
    settle().await;
    assert_eq!(count(&ws.events(), "rules_reloaded"), 1);
    assert_eq!(d.stop(), 0);
}

// ---------------------------------------------------------------- item 11

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_api_token_and_refuses_a_change_that_needs_a_restart() {
    let port = free_port();
    let approver = "[[api.tokens]]\nname = \"lead\"\nfile = \"lead-token\"\nroles = [\"approver\"]";
    let ws = quiet_ws(&api_table(port, approver));
    ws.write("api-token", "old-token-1234\n");
    ws.write("lead-token", "lead-token-1\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    let d = Daemon::start(&ws);
    wait_history(&ws, "start", |e| count(e, "daemon_started") == 1).await;
    wait_healthy(port).await;
    let url = format!("http://127.0.0.1:{port}/v1/approvals");
    assert_eq!(get_status(&url, "old-token-1234").await, 200);
    assert_eq!(get_status(&url, "lead-token-1").await, 200);

    // Both tokens are rotated and a third is added: after SIGHUP the new ones
    // work and the old ones are refused.
    ws.write("api-token", "new-token-5678\n");
    ws.write("lead-token", "lead-token-2\n");
    ws.write("audit-token", "audit-token-1\n");
    let text = std::fs::read_to_string(ws.config_path()).unwrap();
    std::fs::write(
        ws.config_path(),
        text.replace(
            approver,
            &format!(
                "{approver}\n[[api.tokens]]\nname = \"audit\"\nfile = \"audit-token\"\nroles = [\"viewer\"]"
            ),
        ),
    )
    .unwrap();
    d.signal("HUP");
    let events = wait_history(&ws, "the reload", |e| count(e, "config_reloaded") == 1).await;
    let reloaded = events
        .iter()
        .find(|e| e["kind"] == "config_reloaded")
        .unwrap();
    assert_eq!(detail(reloaded)["api_tokens_changed"], true);
    assert_eq!(get_status(&url, "new-token-5678").await, 200);
    assert_eq!(get_status(&url, "lead-token-2").await, 200);
    assert_eq!(get_status(&url, "audit-token-1").await, 200);
    assert_eq!(get_status(&url, "old-token-1234").await, 401);
    assert_eq!(get_status(&url, "lead-token-1").await, 401);

    // A new listen address needs a restart: the reload is refused, loudly, and
    // nothing of it applies (the API stays where it was, with the same token).
    let text = std::fs::read_to_string(ws.config_path()).unwrap();
    std::fs::copy(ws.config_path(), ws.path().join("reader.toml")).unwrap();
    let other = free_port();
    std::fs::write(
        ws.config_path(),
        text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{other}"))
            .replace(
                "catch_up = false",
                "catch_up = false\nexecute_interval_secs = 7",
            ),
    )
    .unwrap();
    ws.write("api-token", "third-token-9\n");
    d.signal("HUP");
    let events = wait_history(&ws, "the refusal", |e| count(e, "config_refused") == 1).await;
    let refused = detail(
        events
            .iter()
            .find(|e| e["kind"] == "config_refused")
            .unwrap(),
    );
    assert_eq!(refused["settings"], json!(["api.listen"]), "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(message.contains("api.listen"), "{message}");
    assert!(message.contains("restart"), "{message}");
    assert_eq!(count(&events, "config_reloaded"), 1);
    assert_eq!(get_status(&url, "new-token-5678").await, 200);
    assert_eq!(get_status(&url, "third-token-9").await, 401);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "nothing listens on the refused address"
    );
    assert_eq!(d.stop(), 0);
}

// ---------------------------------------------------------------- item 15

/// What `id -un` says: the user running the tests (and so the CLI).
fn me() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn show(ws: &Workspace, id: i64) -> Value {
    let out = ws.cli(&["approvals", "show", &id.to_string(), "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    out.json_lines().remove(0)
}

fn state_of(ws: &Workspace, id: i64) -> String {
    show(ws, id)["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn four_eyes_needs_two_os_users_on_the_cli_and_api_decisions_are_marked() {
    let port = free_port();
    let mut ws = quiet_ws(&format!(
        "[approvals]\nfour_eyes = [\"disable_user\"]\n{}",
        api_table(
            port,
            "[[api.tokens]]\nname = \"bob\"\nfile = \"bob-token\"\nroles = [\"approver\"]"
        )
    ));
    ws.set_top("mode = \"approval\"");
    ws.write("api-token", "tok-15\n");
    ws.write("bob-token", "tok-15-bob\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u1@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(state_of(&ws, 1), "pending");

    // First approval through the CLI: the OS user is recorded beside the name,
    // from the kernel's uid (run_bin sets USER=tester; that is not it).
    let out = ws.cli(&["approvals", "approve", "1", "--by", "alice"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let a = show(&ws, 1);
    let first = &a["approvals"][0];
    assert_eq!(first["approver"], "alice");
    assert_eq!(first["interface"], "cli");
    let os_user = first["os_user"].as_str().unwrap().to_string();
    assert!(os_user.starts_with(&me()), "{os_user} vs {}", me());
    assert_ne!(os_user, "tester");
    let recorded = a["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "approval_recorded")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(recorded.contains("\"interface\":\"cli\""), "{recorded}");
    assert!(
        recorded.contains(&format!("\"os_user\":\"{os_user}\"")),
        "{recorded}"
    );

    // The same OS user claiming a second name is refused; nothing changes.
    let out = ws.cli(&["approvals", "approve", "1", "--by", "bob"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("operating-system user"),
        "{}",
        out.stderr
    );
    assert_eq!(show(&ws, 1)["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(state_of(&ws, 1), "pending");

    // Through the API the second approval counts, and is marked as an API decision.
    let d = Daemon::start(&ws);
    wait_healthy(port).await;
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/actions/1/approve"))
        .bearer_auth("tok-15-bob")
        .json(&json!({}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["state"], "approved", "{body}");
    assert_eq!(d.stop(), 0);
    let a = show(&ws, 1);
    let second = &a["approvals"][1];
    assert_eq!(second["approver"], "token:bob");
    assert_eq!(second["interface"], "api");
    assert_eq!(second["os_user"], Value::Null);
    let changed = a["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "state_changed" && e["state"] == "approved")
        .unwrap()
        .clone();
    assert_eq!(detail(&changed)["interface"], "api");
    assert_eq!(detail(&changed).get("os_user"), None);
}

/// Runs the CLI without holding up the runtime the fake tenant answers on.
fn cli(ws: &Workspace, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| ws.cli(args))
}

const CLIENT: &str = "00000000-0000-0000-0000-00000000c11e";
const SECRET: &str = "h3-test-secret-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn undo_obeys_the_approver_list_and_one_undo_of_an_action_stands_at_a_time() {
    let fake = FakeTenant::start(TENANT).await;
    fake.register_app_secret(CLIENT, SECRET);
    fake.add_user(User {
        id: guid(1),
        user_principal_name: "a@t.com".into(),
        display_name: "a".into(),
        user_type: "Member".into(),
        account_enabled: true,
    });
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables("[guardrails]\nmax_actions_percent = 100.0\n[approvals]\napprovers = [\"alice\", \"bob\"]\n");
    ws.write("secret", SECRET);
    ws.set_graph(&graph_table(&fake.base_url(), CLIENT, "secret", ""));
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "a@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let out = cli(&ws, &["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(state_of(&ws, 1), "done");
    ws.set_top("mode = \"approval\"");
    let undos = |ws: &Workspace| -> Vec<(i64, String)> {
        ws.actions()
            .iter()
            .filter(|a| a["kind"] == "undo")
            .map(|a| {
                (
                    a["id"].as_i64().unwrap(),
                    a["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    // A name not on the approver list may not ask for an undo; nothing is recorded.
    let events = ws.events().len();
    let out = cli(&ws, &["undo", "1", "--by", "mallory"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("\"mallory\" is not in approvals.approvers"),
        "{}",
        out.stderr
    );
    assert!(undos(&ws).is_empty());
    assert_eq!(ws.events().len(), events);

    // An approver may; the OS user is recorded with the request.
    let out = cli(&ws, &["undo", "1", "--by", "alice"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(undos(&ws), vec![(2, "pending".to_string())]);
    let reasons = show(&ws, 2)["reasons"].to_string();
    assert!(
        reasons.contains(&format!(
            "requested by alice (via cli, operating-system user {}",
            me()
        )),
        "{reasons}"
    );

    // A second undo while the first is pending is refused, by anyone.
    let events = ws.events().len();
    let out = cli(&ws, &["undo", "1", "--by", "bob"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("already has an undo, action 2 (pending)"),
        "{}",
        out.stderr
    );
    assert_eq!(undos(&ws).len(), 1);
    assert_eq!(ws.events().len(), events);

    // Rejected, it no longer stands: a new undo may be asked for, and once that
    // one is done, no further one.
    assert_eq!(
        cli(&ws, &["approvals", "reject", "2", "--by", "bob"]).code,
        0
    );
    let out = cli(&ws, &["undo", "1", "--by", "bob"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        undos(&ws),
        vec![(2, "rejected".to_string()), (3, "pending".to_string())]
    );
    assert_eq!(
        cli(&ws, &["approvals", "approve", "3", "--by", "alice"]).code,
        0
    );
    let out = cli(&ws, &["execute"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(state_of(&ws, 3), "done");
    assert!(fake.user(&guid(1)).unwrap().account_enabled);
    let out = cli(&ws, &["undo", "1", "--by", "alice"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("already has an undo, action 3 (done)"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------- item 18

/// Reads until the server closes the connection (bounded); what it sent.
fn read_until_closed(s: &mut std::net::TcpStream, within: Duration) -> String {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&got).into_owned();
            }
            Err(e) => panic!(
                "the server kept the connection open ({e}); got so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_sent_connections_are_closed_and_health_stays_reachable() {
    let port = free_port();
    let ws = quiet_ws(&api_table(
        port,
        "header_timeout = \"1s\"\nbody_timeout = \"1s\"\nmax_connections = 48",
    ));
    ws.write("api-token", "tok-18\n");
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    // As few file descriptors as a small LimitNOFILE: without a connection
    // limit, the idle connections below would use them all up.
    let d = Daemon::start_with_fd_limit(&ws, Some(160));
    wait_history(&ws, "start", |e| count(e, "daemon_started") == 1).await;
    wait_healthy(port).await;

    // 300 connections that send nothing, and 20 that stop in the middle of
    // their headers.
    // (A server that stops accepting may make some of them fail: not counted.)
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let connect = || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok();
    let idle: Vec<std::net::TcpStream> = (0..300).filter_map(|_| connect()).collect();
    let mut half: Vec<std::net::TcpStream> = (0..20)
        .filter_map(|_| {
            let mut s = connect()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .ok()?;
            Some(s)
        })
        .collect();

    // Health still answers (once the timeouts have freed connections).
    let health = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(40))
        .send()
        .await
        .expect("/healthz must answer while idle connections are open");
    assert_eq!(health.status(), 200);

    // The half-sent requests were closed by the server, not answered.
    for s in &mut half {
        let got = read_until_closed(s, Duration::from_secs(30));
        assert!(!got.contains("200 OK"), "{got}");
    }
    // So were the idle ones.
    for mut s in idle.into_iter().take(5) {
        read_until_closed(&mut s, Duration::from_secs(30));
    }

    // A request whose body stops coming is answered 408 and closed.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-18\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"for",
    )
    .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(30));
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("body_timeout"), "{got}");

    let token_ok = get_status(&format!("http://127.0.0.1:{port}/v1/approvals"), "tok-18").await;
    assert_eq!(token_ok, 200);
    assert_eq!(d.stop(), 0);
}

#[test]
fn the_systemd_unit_raises_the_open_file_limit_above_the_connection_limit() {
    let unit = std::fs::read_to_string(repo().join("systemd/entra-remediator.service")).unwrap();
    let limit: usize = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE= is set")
        .trim()
        .parse()
        .unwrap();
    // api.max_connections defaults to 256; leave room for the store, the
    // watcher, Graph and webhook connections.
    assert!(limit >= 256 * 4, "{limit}");
}
