//! Secrets never leak: the client secret, the certificate's private key (and the
//! client assertion signed with it), the API token, webhook URLs, the scan
//! source's token and the Graph access tokens appear in no log (`--log debug`),
//! no history (`history`, `approvals`), no error, no `--help`, no webhook or API
//! answer, and nowhere in the database files (with the WAL, read while the
//! daemon runs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_entra::{FakeTenant, Fault, Group, User};
use serde_json::{Value, json};

use crate::common::*;

const CLIENT: &str = "00000000-0000-0000-0000-00000000d00d";
/// Entra secrets use `~ . _ -`; `+ / = !` check the encoded forms too.
const CLIENT_SECRET: &str = "cs~Q8+x/Zk=Wv_9z.Lm-Tq!sEcReT-4c1e";
const WRONG_SECRET: &str = "wrong~Secret.value_7f00+a/b=";
const ENV_SECRET: &str = "env~Secret.value_3b1a+c/d=";
const API_TOKEN: &str = "api-token-9b8f7e6d5c4b3a2910ffee";
const WRONG_TOKEN: &str = "not-the-api-token-0a0b0c0d0e";
const SOURCE_TOKEN: &str = "scan-source-token-1f2e3d4c5b6a";
const HOOK_PATH: &str = "services/T0SECRET01/B0SECRET02/hookSecretPart8f7e6d5c";
const DEAD_HOOK_PATH: &str = "services/T0SECRET03/B0SECRET04/deadHookSecret3a2b1c";

/// The forms a secret could take in output: as is, percent-encoded (a form
/// body or URL), base64 (a basic-auth header).
fn forms(secret: &str) -> Vec<String> {
    let pct: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let mut v = vec![secret.to_string(), pct, b64];
    v.dedup();
    v
}

/// Everything a run left behind that a person or a log shipper could read.
#[derive(Default)]
struct Haystack {
    items: Vec<(String, Vec<u8>)>,
}

impl Haystack {
    fn add(&mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.items.push((name.into(), bytes.into()));
    }

    fn output(&mut self, name: &str, out: &Output) {
        self.add(format!("{name}: stdout"), out.stdout.clone());
        self.add(format!("{name}: stderr"), out.stderr.clone());
    }

    /// The database and its WAL and shared-memory files, as they are now.
    fn database(&mut self, db: &Path, when: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(b) = std::fs::read(&p) {
                self.add(format!("{} ({when})", p.display()), b);
            }
        }
    }

    /// Panics naming the first place any form of any secret appears.
    fn assert_clean(&self, secrets: &[(&str, String)]) {
        assert!(!self.items.is_empty());
        for (what, secret) in secrets {
            assert!(secret.len() >= 12, "{what}: too short to search for");
            for form in forms(secret) {
                for (name, bytes) in &self.items {
                    if let Some(i) = find(bytes, form.as_bytes()) {
                        let from = i.saturating_sub(200);
                        let to = (i + form.len() + 200).min(bytes.len());
                        panic!(
                            "the {what} ({form:?}) is in {name}:\n...{}...",
                            String::from_utf8_lossy(&bytes[from..to])
                        );
                    }
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn user(n: u32) -> User {
    User {
        id: guid(n),
        user_principal_name: format!("u{n}@t.com"),
        display_name: format!("u{n}"),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

/// Runs the binary with `--log debug` and extra environment.
async fn cli(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = ws.path().to_path_buf();
    let cfg = ws.config_path();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
            .arg("--config")
            .arg(&cfg)
            .arg("--log")
            .arg("debug")
            .args(&args)
            .current_dir(&dir)
            .env_remove("ENTRA_REMEDIATOR_CONFIG")
            .env_remove("ENTRA_REMEDIATOR_LOG")
            .env("USER", "tester")
            .envs(env)
            .output()
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// What a run left in history: every format of `history`, every action shown.
async fn collect_history(ws: &Workspace, hay: &mut Haystack) {
    for format in ["json", "csv", "table"] {
        let out = cli(ws, &["history", "--format", format], &[]).await;
        assert_eq!(out.code, 0, "{}", out.all());
        hay.output(&format!("history --format {format}"), &out);
    }
    let out = cli(ws, &["approvals", "list", "--all", "--format", "json"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    hay.output("approvals list", &out);
    for a in out.json_lines() {
        let id = a["id"].to_string();
        for format in ["json", "table"] {
            let out = cli(ws, &["approvals", "show", &id, "--format", format], &[]).await;
            hay.output(&format!("approvals show {id}"), &out);
        }
    }
    let out = cli(ws, &["audit", "verify"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    hay.output("audit verify", &out);
}

/// Serves the scan at `/scan` to callers presenting SOURCE_TOKEN.
async fn scan_server(scan: Value) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let body = scan.to_string();
    let app = axum::Router::new().route(
        "/scan",
        axum::routing::get(move |headers: HeaderMap| {
            let body = body.clone();
            async move {
                let want = format!("Bearer {SOURCE_TOKEN}");
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some(h) if h == want => (StatusCode::OK, body),
                    _ => (StatusCode::UNAUTHORIZED, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/scan")
}

/// Webhook notices received: (path, body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// Accepts webhook notices on any path under `/hooks/`.
async fn webhook_server() -> (String, Received) {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hooks/{*rest}",
        axum::routing::post(
            move |axum::extract::Path(rest): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<Value>| {
                let g = g.clone();
                async move {
                    g.lock().unwrap().push((rest, body));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hooks"), got)
}

/// Bearer tokens the fake issued, as clients presented them.
fn access_tokens(fake: &FakeTenant) -> Vec<String> {
    let mut v: Vec<String> = fake
        .requests()
        .iter()
        .flat_map(|r| r.headers.clone())
        .filter(|(k, _)| k == "authorization")
        .filter_map(|(_, v)| v.strip_prefix("Bearer ").map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A workspace whose tenant reads its scan from an HTTP source with a token,
/// acts through the fake with a client secret from a file, and has an API
/// token and two webhooks (one alive, one dead) configured.
async fn secret_workspace(fake: &FakeTenant, mode: &str, tables: &str) -> (Workspace, Received) {
    let (hooks, got) = webhook_server().await;
    let ids: Vec<u32> = (1..=4).collect();
    let mut i1 = with_group(ident(1, "u1@t.com"), 70, "Finance", false, false);
    i1["display_name"] = json!("u1");
    let url = scan_server(scan(
        &now_rfc3339(),
        vec![
            i1,
            ident(2, "u2@t.com"),
            ident(3, "u3@t.com"),
            ident(4, "u4@t.com"),
        ],
        vec![finding("F1", "high", &ids)],
    ))
    .await;
    let mut ws = Workspace::new();
    ws.write("client.secret", &format!("{CLIENT_SECRET}\n"));
    ws.write("api.token", &format!("{API_TOKEN}\n"));
    ws.write("source.token", &format!("{SOURCE_TOKEN}\n"));
    ws.write("hook.url", &format!("{hooks}/{HOOK_PATH}\n"));
    ws.write(
        "dead-hook.url",
        &format!("http://127.0.0.1:9/hooks/{DEAD_HOOK_PATH}\n"),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [
            "client.secret",
            "api.token",
            "source.token",
            "hook.url",
            "dead-hook.url",
        ] {
            std::fs::set_permissions(ws.path().join(f), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
    }
    ws.set_top(&format!("mode = \"{mode}\""));
    ws.set_tables(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\n\
         [api]\nenabled = true\n\
         [[api.tokens]]\nname = \"alice\"\nfile = \"api.token\"\nroles = [\"operator\", \"approver\"]\n\
         [[notify.webhook]]\nname = \"alive\"\nurl_file = \"hook.url\"\nformat = \"slack\"\n\
         [[notify.webhook]]\nname = \"dead\"\nurl_file = \"dead-hook.url\"\nmax_attempts = 1\n\
         {tables}"
    ));
    ws.set_graph(&graph_table(&fake.base_url(), CLIENT, "client.secret", ""));
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "source = { dir = \"scans\" }",
        &format!("source = {{ url = \"{url}\", token_file = \"source.token\" }}"),
    );
    std::fs::write(ws.config_path(), cfg).unwrap();
    ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "let a = [disable_user(\"stale\"), revoke_sessions(\"stale\"), enforce_mfa(\"no MFA\")]; if identity.member_of(\"Finance\") { a.push(remove_group_membership(identity.group_ids(\"Finance\"), \"stale\")); } a",
        ),
    );
    (ws, got)
}

fn secret_fake_setup(fake: &FakeTenant) {
    fake.register_app_secret(CLIENT, CLIENT_SECRET);
    fake.register_app_secret(CLIENT, ENV_SECRET);
    for n in 1..=4 {
        fake.add_user(user(n));
    }
    fake.add_group(Group {
        id: guid(70),
        display_name: "Finance".into(),
        dynamic: false,
        mail_enabled: false,
        security_enabled: true,
        on_premises_sync_enabled: false,
        is_assignable_to_role: false,
    });
    fake.add_member(&guid(70), &guid(1));
    fake.set_ca_read_throttling(false);
}

/// Every subcommand path, found by walking `--help`.
fn subcommands(ws: &Workspace, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut args = prefix.to_vec();
    args.push("--help".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let help = run_bin(ws.path(), &refs);
    assert_eq!(help.code, 0, "{refs:?}: {}", help.all());
    out.push(prefix.to_vec());
    let mut in_commands = false;
    for line in help.stdout.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            let Some(name) = line.split_whitespace().next() else {
                break;
            };
            if !line.starts_with("  ") {
                break;
            }
            if name != "help" {
                let mut p = prefix.to_vec();
                p.push(name.to_string());
                subcommands(ws, &p, out);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enforce_run_with_a_client_secret_file_leaks_no_secret_to_logs_history_database_errors_or_help()
 {
    let fake = FakeTenant::start(TENANT).await;
    secret_fake_setup(&fake);
    // Some failures, so that error paths log and record too.
    fake.inject(Fault::ServerError {
        matching: format!("PATCH /v1.0/users/{}", guid(3)),
        count: 10,
        status: 403,
    });
    fake.inject(Fault::Throttle {
        matching: "revokeSignInSessions".into(),
        count: 1,
        retry_after: Some(0.1),
    });
    let (ws, _) = secret_workspace(&fake, "enforce", "").await;
    let mut hay = Haystack::default();
    let env = [("ENTRA_TEST_ENV_SECRET", ENV_SECRET)];

    let out = cli(&ws, &["config", "check"], &env).await;
    assert_eq!(out.code, 0, "{}", out.all());
    hay.output("config check", &out);
    let out = cli(&ws, &["policy", "check"], &env).await;
    hay.output("policy check", &out);
    let out = cli(&ws, &["plan"], &env).await;
    assert_eq!(out.code, 0, "{}", out.all());
    hay.output("plan", &out);
    let out = cli(&ws, &["run", "--once"], &env).await;
    // One account is refused by a 403: the run reports a failure.
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("DEBUG"), "debug logging is on");
    hay.output("run --once", &out);
    assert!(
        !fake.user(&guid(1)).unwrap().account_enabled,
        "the run acted"
    );
    let out = cli(&ws, &["execute"], &env).await;
    hay.output("execute", &out);
    hay.database(&ws.db_path(), "after the run");
    collect_history(&ws, &mut hay).await;

    // Error paths: a wrong secret, a missing secret file, a secret from the
    // environment, a source token refused.
    ws.write("client.secret", WRONG_SECRET);
    let out = cli(&ws, &["run", "--once", "--force"], &env).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("token request refused"),
        "{}",
        out.stderr
    );
    hay.output("run with a wrong secret", &out);
    std::fs::remove_file(ws.path().join("client.secret")).unwrap();
    let out = cli(&ws, &["run", "--once", "--force"], &env).await;
    assert_eq!(out.code, 1, "{}", out.all());
    hay.output("run with a missing secret file", &out);
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap();
    std::fs::write(
        ws.config_path(),
        cfg.replace(
            "client_secret_file = \"client.secret\"",
            "client_secret_env = \"ENTRA_TEST_ENV_SECRET\"",
        ),
    )
    .unwrap();
    let out = cli(&ws, &["run", "--once", "--force"], &env).await;
    hay.output("run with the secret from the environment", &out);
    ws.write("source.token", "a-token-the-source-refuses");
    let out = cli(&ws, &["run", "--once", "--force"], &env).await;
    assert_eq!(out.code, 2, "{}", out.all());
    hay.output("run with a refused source token", &out);
    hay.database(&ws.db_path(), "after the errors");
    collect_history(&ws, &mut hay).await;

    // --help of every subcommand, with secrets in the environment.
    let mut paths = Vec::new();
    subcommands(&ws, &[], &mut paths);
    assert!(paths.len() >= 14, "{paths:?}");
    for p in paths {
        let mut args: Vec<&str> = p.iter().map(String::as_str).collect();
        args.push("--help");
        let out = cli(&ws, &args, &env).await;
        assert_eq!(out.code, 0, "{args:?}: {}", out.all());
        hay.output(&format!("{args:?}"), &out);
    }
    let out = cli(&ws, &["--version"], &env).await;
    hay.output("--version", &out);

    let tokens = access_tokens(&fake);
    assert!(!tokens.is_empty());
    let mut secrets: Vec<(&str, String)> = vec![
        ("client secret", CLIENT_SECRET.into()),
        ("wrong client secret", WRONG_SECRET.into()),
        ("client secret from the environment", ENV_SECRET.into()),
        ("API token", API_TOKEN.into()),
        ("scan source token", SOURCE_TOKEN.into()),
        ("webhook URL", HOOK_PATH.into()),
        ("dead webhook URL", DEAD_HOOK_PATH.into()),
    ];
    for t in &tokens {
        secrets.push(("Graph access token", t.clone()));
    }
    hay.assert_clean(&secrets);
}

/// The base64 lines of a PEM's body (what a leak of the key would contain).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_authentication_leaks_neither_the_private_key_nor_the_signed_assertion() {
    let certs = repo().join("tests/fixtures/certs");
    let cert = std::fs::read_to_string(certs.join("app-cert.pem")).unwrap();
    let key = std::fs::read_to_string(certs.join("app-key.pem")).unwrap();
    let other_key = std::fs::read_to_string(certs.join("other-key.pem")).unwrap();
    let fake = FakeTenant::start(TENANT).await;
    secret_fake_setup(&fake);
    fake.register_app_certificate(CLIENT, &cert);
    let (mut ws, _) = secret_workspace(&fake, "enforce", "").await;
    ws.write("app-key.pem", &key);
    ws.write("other-key.pem", &other_key);
    std::fs::copy(certs.join("app-cert.pem"), ws.path().join("app-cert.pem")).unwrap();
    let cfg_with = |key_file: &str, alg: &str| {
        format!(
            "[tenant.graph]\nauthority = \"{b}\"\ngraph_url = \"{b}\"\nclient_id = \"{CLIENT}\"\ncertificate_file = \"app-cert.pem\"\nprivate_key_file = \"{key_file}\"\nassertion_algorithm = \"{alg}\"\n",
            b = fake.base_url()
        )
    };
    let source_line = std::fs::read_to_string(ws.config_path())
        .unwrap()
        .lines()
        .find(|l| l.starts_with("source = "))
        .unwrap()
        .to_string();
    let write_graph = |ws: &mut Workspace, graph: String| {
        ws.set_graph(&graph);
        let cfg = std::fs::read_to_string(ws.config_path())
            .unwrap()
            .replace("source = { dir = \"scans\" }", &source_line);
        std::fs::write(ws.config_path(), cfg).unwrap();
    };
    let mut hay = Haystack::default();
    write_graph(&mut ws, cfg_with("app-key.pem", "PS256"));
    let out = cli(&ws, &["run", "--once"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        !fake.user(&guid(1)).unwrap().account_enabled,
        "the run acted"
    );
    hay.output("run --once (PS256)", &out);
    write_graph(&mut ws, cfg_with("app-key.pem", "RS256"));
    let out = cli(&ws, &["run", "--once", "--force"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    hay.output("run --once (RS256)", &out);
    // A key that does not match the certificate: refused, and not echoed.
    write_graph(&mut ws, cfg_with("other-key.pem", "PS256"));
    let out = cli(&ws, &["run", "--once", "--force"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("token request refused"),
        "{}",
        out.stderr
    );
    hay.output("run --once (wrong key)", &out);
    // A file that is not a key at all: its content is not echoed either.
    ws.write("garbage-key.pem", "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZSBrZXkgbWF0ZXJpYWwgdGhhdCBtdXN0IG5vdCBsZWFr\n-----END PRIVATE KEY-----\n");
    write_graph(&mut ws, cfg_with("garbage-key.pem", "PS256"));
    let out = cli(&ws, &["run", "--once", "--force"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    hay.output("run --once (garbage key)", &out);
    hay.database(&ws.db_path(), "after the runs");
    collect_history(&ws, &mut hay).await;

    let mut secrets: Vec<(&str, String)> = vec![
        ("private key", key.clone()),
        ("other private key", other_key.clone()),
        (
            "garbage key",
            "Z2FyYmFnZSBrZXkgbWF0ZXJpYWwgdGhhdCBtdXN0IG5vdCBsZWFr".into(),
        ),
        ("PEM marker", "PRIVATE KEY-----".into()),
    ];
    for l in pem_body_lines(&key)
        .into_iter()
        .chain(pem_body_lines(&other_key))
    {
        secrets.push(("private key line", l));
    }
    // The signed client assertions and their signatures.
    let assertions: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("/oauth2/"))
        .filter_map(|r| {
            r.body.as_ref()?["client_assertion"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(assertions.len() >= 3, "{assertions:?}");
    for a in &assertions {
        secrets.push(("client assertion", a.clone()));
        secrets.push((
            "client assertion signature",
            a.rsplit('.').next().unwrap().to_string(),
        ));
    }
    for t in access_tokens(&fake) {
        secrets.push(("Graph access token", t));
    }
    hay.assert_clean(&secrets);
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_with_the_api_and_webhooks_leaks_no_token_secret_or_webhook_url() {
    let fake = FakeTenant::start(TENANT).await;
    secret_fake_setup(&fake);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (ws, got) = secret_workspace(
        &fake,
        "approval",
        "[daemon]\nschedule = \"0 0 0 1 1 *\"\nexecute_interval_secs = 1\nshutdown_grace_secs = 10\nlog_format = \"json\"\n[approvals]\napprovers = [\"token:alice\"]\n",
    )
    .await;
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "[api]\nenabled = true\n",
        &format!("[api]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    std::fs::write(ws.config_path(), cfg).unwrap();
    let stdout_path = ws.path().join("daemon.stdout");
    let stderr_path = ws.path().join("daemon.stderr");
    let daemon = Daemon {
        child: Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
            .arg("--config")
            .arg(ws.config_path())
            .args(["--log", "debug", "daemon"])
            .current_dir(ws.path())
            .env_remove("ENTRA_REMEDIATOR_CONFIG")
            .env_remove("ENTRA_REMEDIATOR_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    };
    let logs = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut hay = Haystack::default();
    let mut answers = Vec::new();
    // Catch-up runs the tenant at start: wait for its pending actions.
    let started = Instant::now();
    let pending = loop {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "no pending actions; daemon logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(r) = http
            .get(format!("{base}/v1/approvals"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
        else {
            continue;
        };
        let text = r.text().await.unwrap();
        answers.push(("GET /v1/approvals".to_string(), text.clone()));
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let items = v["actions"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            break items;
        }
    };
    // Approve the first through the API: it is executed through Graph.
    let id = pending[0]["id"].as_i64().unwrap();
    let r = http
        .post(format!("{base}/v1/actions/{id}/approve"))
        .bearer_auth(API_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    answers.push((format!("POST /v1/actions/{id}/approve"), text));
    // A wrong token, a token in the query, and the metrics.
    for (what, req) in [
        (
            "wrong token",
            http.get(format!("{base}/v1/approvals"))
                .bearer_auth(WRONG_TOKEN),
        ),
        (
            "token in the query",
            http.get(format!("{base}/v1/approvals?access_token={WRONG_TOKEN}")),
        ),
        (
            "metrics",
            http.get(format!("{base}/metrics")).bearer_auth(API_TOKEN),
        ),
        (
            "run trigger",
            http.post(format!("{base}/v1/runs"))
                .bearer_auth(API_TOKEN)
                .json(&json!({"force": true})),
        ),
    ] {
        let r = req.send().await.unwrap();
        answers.push((what.to_string(), r.text().await.unwrap()));
    }
    // Wait for the approved action to be executed and the webhook notified.
    let started = Instant::now();
    while fake
        .requests()
        .iter()
        .all(|r| r.method == "GET" || r.path.contains("/oauth2/") || r.path.ends_with("$batch"))
        || got.lock().unwrap().is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "nothing executed or notified; daemon logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The database as it is while the daemon runs: WAL and shared memory too.
    hay.database(&ws.db_path(), "while the daemon runs");
    let ok = Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut daemon = daemon;
    let started = Instant::now();
    let code = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "daemon did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, Some(0), "{}", logs());
    let received = got.lock().unwrap().clone();
    assert!(received.iter().all(|(p, _)| p == HOOK_PATH), "{received:?}");
    for (p, body) in &received {
        hay.add(format!("webhook notice to {p}"), body.to_string());
    }
    for (what, text) in answers {
        hay.add(format!("API answer: {what}"), text);
    }
    let log_text = logs();
    assert!(log_text.contains("DEBUG"), "debug logging is on");
    assert!(
        log_text.contains("webhook delivery failed"),
        "the dead webhook was tried: {log_text}"
    );
    hay.add("daemon stdout and stderr", log_text);
    hay.database(&ws.db_path(), "after the daemon stopped");
    collect_history(&ws, &mut hay).await;
    let mut secrets: Vec<(&str, String)> = vec![
        ("client secret", CLIENT_SECRET.into()),
        ("API token", API_TOKEN.into()),
        ("wrong API token", WRONG_TOKEN.into()),
        ("scan source token", SOURCE_TOKEN.into()),
        ("webhook URL", HOOK_PATH.into()),
        ("dead webhook URL", DEAD_HOOK_PATH.into()),
    ];
    for t in access_tokens(&fake) {
        secrets.push(("Graph access token", t));
    }
    hay.assert_clean(&secrets);
}
