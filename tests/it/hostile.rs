//! Hostile input: malformed scans, configs and rule files (the corpus in
//! `tests/fixtures/hostile/`, plus huge and deeply nested ones generated here)
//! each give a clear error naming the file and the place, or for a rule that
//! misbehaves while it runs, a rule error recorded against rule and identity;
//! never a panic, never output that echoes megabytes, never an action.
//!
//! Every case runs in enforce mode against a fake tenant with a rule that would
//! disable everyone, so anything that slipped through would reach the fake.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_entra::{FakeTenant, User};
use serde_json::{Value, json};

use crate::common::*;

const CLIENT: &str = "00000000-0000-0000-0000-0000000000b0";
const SECRET: &str = "hostile-test-secret-7d2c91";
/// Enough for any clear message; hostile values are megabytes.
const MAX_STDERR: usize = 16 * 1024;
/// Generated huge values.
const HUGE: usize = 8 * 1024 * 1024;

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/hostile")
}

/// An enforce-mode workspace against a fake tenant with users 1 and 2.
struct Env {
    fake: FakeTenant,
    ws: Workspace,
}

/// The rule every case has unless it replaces the rules: disables everyone.
fn disable_everyone() -> String {
    rule("disable-everyone", "F1", "disable_user(\"hostile test\")")
}

/// A fresh, valid scan of users 1 and 2 with finding F1 over both.
fn good_scan() -> Value {
    scan(
        &now_rfc3339(),
        vec![ident(1, "a@t.com"), ident(2, "b@t.com")],
        vec![finding("F1", "high", &[1, 2])],
    )
}

async fn env() -> Env {
    let fake = FakeTenant::start(TENANT).await;
    fake.register_app_secret(CLIENT, SECRET);
    for n in [1, 2] {
        fake.add_user(User {
            id: guid(n),
            user_principal_name: format!("u{n}@t.com"),
            display_name: format!("u{n}"),
            user_type: "Member".into(),
            account_enabled: true,
        });
    }
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables("[guardrails]\nmax_actions_percent = 100.0\n");
    ws.write("secret", SECRET);
    ws.set_graph(&graph_table(&fake.base_url(), CLIENT, "secret", ""));
    ws.add_rule("disable-everyone.rhai", &disable_everyone());
    Env { fake, ws }
}

impl Env {
    async fn cli(&self, args: &[&str]) -> Output {
        self.cli_timeout(args, Duration::from_secs(120)).await
    }

    /// Runs the binary; kills it (and fails) if it takes longer than `limit`.
    async fn cli_timeout(&self, args: &[&str], limit: Duration) -> Output {
        let dir = self.ws.path().to_path_buf();
        let cfg = self.ws.config_path();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || run_limited(&dir, &cfg, &args, limit, None))
            .await
            .unwrap()
    }

    /// Writes the fake received (anything but reads, tokens and `$batch` envelopes).
    fn writes(&self) -> Vec<String> {
        self.fake
            .requests()
            .into_iter()
            .filter(is_write)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// History as JSON lines; empty when no store was ever created.
    async fn events(&self) -> Vec<Value> {
        if !self.ws.db_path().exists() {
            return Vec::new();
        }
        let out = self.cli(&["history", "--format", "json"]).await;
        assert_eq!(out.code, 0, "history: {}", out.all());
        out.json_lines()
    }

    /// Nothing was acted on: no action rows in history, no write at the fake.
    async fn assert_nothing_done(&self, what: &str) {
        let events = self.events().await;
        let actions: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] == "action_recorded")
            .collect();
        assert!(actions.is_empty(), "{what}: actions recorded: {actions:?}");
        assert!(
            self.writes().is_empty(),
            "{what}: the fake received writes: {:?}",
            self.writes()
        );
    }
}

/// Runs the binary in `dir` with `--config cfg`, killing it after `limit`;
/// `address_space` caps its virtual memory (RLIMIT_AS, bytes).
fn run_limited(
    dir: &Path,
    cfg: &Path,
    args: &[String],
    limit: Duration,
    address_space: Option<u64>,
) -> Output {
    let out_path = dir.join(format!("out-{}.txt", uuid::Uuid::new_v4().simple()));
    let err_path = dir.join(format!("err-{}.txt", uuid::Uuid::new_v4().simple()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_entra-remediator"));
    cmd.arg("--config")
        .arg(cfg)
        .args(args)
        .current_dir(dir)
        .env_remove("ENTRA_REMEDIATOR_CONFIG")
        .env_remove("ENTRA_REMEDIATOR_LOG")
        .env("USER", "tester")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    if let Some(bytes) = address_space {
        // Keep the baseline the same on any machine: glibc reserves address
        // space per malloc arena and tokio starts a worker per core.
        cmd.env("MALLOC_ARENA_MAX", "2")
            .env("TOKIO_WORKER_THREADS", "2");
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} still running after {limit:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| {
        let mut b = Vec::new();
        std::fs::File::open(p).unwrap().read_to_end(&mut b).unwrap();
        let _ = std::fs::remove_file(p);
        String::from_utf8_lossy(&b).into_owned()
    };
    Output {
        // A signal (SIGABRT on a failed allocation, SIGSEGV on a stack
        // overflow) reads as its negative number.
        code: status.code().unwrap_or_else(|| {
            -std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        }),
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// A clear refusal: one of `codes` (never 101 or a signal), no panic, short
/// output, and every needle in stderr.
fn assert_refused(out: &Output, codes: &[i32], what: &str, needles: &[&str]) {
    assert!(
        codes.contains(&out.code),
        "{what}: exit {} (wanted {codes:?}): {}",
        out.code,
        short(&out.all())
    );
    assert!(
        !out.all().contains("panicked"),
        "{what}: {}",
        short(&out.all())
    );
    assert!(
        out.stderr.len() <= MAX_STDERR,
        "{what}: {} bytes on stderr: {}",
        out.stderr.len(),
        short(&out.stderr)
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "{what}: {n:?} missing from: {}",
            short(&out.stderr)
        );
    }
}

fn short(s: &str) -> String {
    if s.len() <= 4000 {
        s.to_string()
    } else {
        let mut i = 4000;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        format!("{}... ({} bytes)", &s[..i], s.len())
    }
}

/// A scan refused: exit 2, "scan refused" naming the file and the place, the
/// refusal recorded (and short), nothing acted on.
async fn assert_scan_refused(e: &Env, out: &Output, what: &str, needles: &[&str]) {
    let mut all = vec!["scan refused, nothing planned"];
    all.extend_from_slice(needles);
    assert_refused(out, &[2], what, &all);
    let events = e.events().await;
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["kind"] == "scan_rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{what}: {events:?}");
    let detail = rejected[0]["detail"].as_str().unwrap();
    assert!(
        detail.len() <= MAX_STDERR,
        "{what}: {} bytes recorded",
        detail.len()
    );
    for n in needles {
        assert!(
            detail.contains(n),
            "{what}: {n:?} not recorded: {}",
            short(detail)
        );
    }
    e.assert_nothing_done(what).await;
}

/// Each scan fixture: (file, place as `line:column` or JSON path, message).
const SCANS: &[(&str, &str, &str)] = &[
    ("truncated.json", ":19:33", "EOF while parsing a string"),
    ("empty.json", ":1:0", "EOF while parsing a value"),
    ("not-json.json", ":1:1", "expected value"),
    ("bom.json", ":1:1", "expected value"),
    ("trailing-garbage.json", ":42:1", "trailing characters"),
    (
        "wrong-type-account-enabled.json",
        ":12:30",
        "invalid type: string \"yes\", expected a boolean",
    ),
    (
        "wrong-type-identities.json",
        ":6:16: at identities",
        "invalid type: map, expected a sequence",
    ),
    (
        "wrong-type-schema-version.json",
        ":2:23: at schema_version",
        "expected u32",
    ),
    (
        "huge-number.json",
        ":13:25: at identities[0].risk_score",
        "number out of range",
    ),
    (
        "duplicate-top-level-key.json",
        ":5:15",
        "duplicate field `tenant_name`",
    ),
    (
        "duplicate-identity-key.json",
        ":21:20: at identities[1]",
        "duplicate field `display_name`",
    ),
    (
        "unknown-identity.json",
        ": at findings[0].affected_identities[1]",
        "names identity 00000000-0000-0000-0000-0000000000ff, which is not in the scan's identities",
    ),
    (
        "non-utf8-in-string.json",
        ":20:25: at identities[1].display_name",
        "invalid unicode code point",
    ),
    ("non-utf8-between-tokens.json", ":28:15", "expected value"),
    ("control-character.json", ":10:26", "control character"),
    ("lone-surrogate.json", ":10:32", "hex escape"),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_malformed_scan_in_the_corpus_is_refused_with_its_file_and_place_from_a_directory_or_a_file()
 {
    let listed: Vec<String> = std::fs::read_dir(fixtures().join("scans"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in &listed {
        assert!(
            SCANS.iter().any(|(name, ..)| name == f),
            "fixture {f} has no expectation in SCANS"
        );
    }
    for (name, place, message) in SCANS {
        let src = fixtures().join("scans").join(name);
        // From the tenant's scan directory (the newest scan is picked first).
        let e = env().await;
        std::fs::copy(&src, e.ws.path().join("scans").join(name)).unwrap();
        let out = e.cli(&["run", "--once"]).await;
        // Choosing the newest scan reads only `scanned_at`, so a malformed file
        // is named with its line and column but not always its JSON path.
        let at = format!("{name}{}", place.split(": at ").next().unwrap());
        assert_scan_refused(&e, &out, &format!("{name} in scans/"), &[&at, message]).await;
        // Given with --scan FILE.
        let e = env().await;
        let file = e.ws.path().join(name);
        std::fs::copy(&src, &file).unwrap();
        let out = e
            .cli(&["run", "--once", "--scan", file.to_str().unwrap()])
            .await;
        assert_scan_refused(
            &e,
            &out,
            &format!("--scan {name}"),
            &[&format!("{}{place}", file.display()), message],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_values_in_a_scan_are_refused_with_a_short_message_that_still_names_the_place() {
    let big = |c: char| c.to_string().repeat(HUGE);
    let mut cases: Vec<(&str, Value, &str, &str)> = Vec::new();
    let mut s = good_scan();
    s["tenant_id"] = json!(big('A'));
    cases.push(("huge-tenant-id", s, "at tenant_id", "is not a GUID"));
    let mut s = good_scan();
    s["identities"][1]["user_type"] = json!(big('C'));
    cases.push((
        "huge-enum",
        s,
        "at identities[1].user_type",
        "expected `Member` or `Guest`",
    ));
    let mut s = good_scan();
    s["identities"][0]["x".repeat(HUGE)] = json!(1);
    cases.push(("huge-key", s, "at identities[0]", "unknown field"));
    let mut s = good_scan();
    s["findings"][0]["id"] = json!(big('E'));
    let dup = s["findings"][0].clone();
    s["findings"].as_array_mut().unwrap().push(dup);
    cases.push((
        "huge-duplicate-id",
        s,
        "at findings[1].id",
        "duplicate finding id",
    ));
    for (name, s, place, message) in cases {
        let e = env().await;
        e.ws.add_scan(&format!("{name}.json"), &s);
        let out = e.cli(&["run", "--once"]).await;
        assert_scan_refused(&e, &out, name, &[place, message, "bytes cut]"]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_nesting_is_refused_or_kept_opaque_and_never_overflows_the_stack() {
    let deep =
        |open: &str, close: &str| format!("{}{}", open.repeat(100_000), close.repeat(100_000));
    // A file that is nothing but 100,000 nested arrays.
    let e = env().await;
    e.ws.write("scans/deep.json", &deep("[", "]"));
    let out = e.cli(&["run", "--once"]).await;
    assert_scan_refused(&e, &out, "deep file", &["deep.json:1:", "invalid type"]).await;
    let out = e
        .cli(&["run", "--once", "--force", "--scan", "scans/deep.json"])
        .await;
    assert_refused(
        &out,
        &[2],
        "deep file given",
        &["deep.json:1:", "invalid type"],
    );
    // Deep nesting where a finding belongs.
    let e = env().await;
    let text = good_scan().to_string().replacen(
        "\"findings\":[",
        &format!("\"findings\":[{},", deep("[", "]")),
        1,
    );
    e.ws.write("scans/deep.json", &text);
    let out = e.cli(&["run", "--once", "--scan", "scans/deep.json"]).await;
    assert_scan_refused(
        &e,
        &out,
        "deep finding",
        &["at findings[0]", "invalid type"],
    )
    .await;
    // Deep nesting inside an identity's opaque `attributes`: the scan loads (the
    // loader keeps them as text), and a rule that reads them gets a rule error.
    let e = env().await;
    let text = good_scan().to_string().replacen(
        "\"groups\":[]",
        &format!(
            "\"groups\":[],\"attributes\":{{\"a\":{},\"b\":{}}}",
            deep("[", "]"),
            deep("{\"x\":", "}").replacen("{\"x\":}", "{\"x\":1}", 1)
        ),
        1,
    );
    e.ws.write("scans/deep.json", &text);
    e.ws.add_rule(
        "disable-everyone.rhai",
        &rule(
            "disable-everyone",
            "F1",
            "let a = identity.attributes; disable_user(\"hostile test\")",
        ),
    );
    let out = e.cli(&["run", "--once"]).await;
    assert_refused(
        &out,
        &[0],
        "deep attributes",
        &["rule error: disable-everyone"],
    );
    let events = e.events().await;
    let errors: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["kind"] == "rule_error")
        .collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    assert_eq!(errors[0]["rule"], "disable-everyone");
    assert_eq!(errors[0]["identity_id"], guid(1));
    assert!(
        errors[0]["detail"]
            .as_str()
            .unwrap()
            .contains("recursion limit exceeded"),
        "{}",
        errors[0]["detail"]
    );
    // The other identity has no attributes and is planned as usual.
    let planned: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["kind"] == "action_recorded")
        .collect();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0]["identity_id"], guid(2));
}

/// Serves one HTTP answer per connection: `head`, then `body` (at most
/// `repeat` times, 0 = until the client hangs up), then holds the connection.
async fn hostile_http(head: &'static str, body: &'static [u8], repeat: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut sent = 0;
                while repeat == 0 || sent < repeat {
                    if sock.write_all(body).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                // Little data, then silence: a loader that waits for the
                // promised gigabyte would hang here.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    format!("http://{addr}/scan")
}

async fn url_source_env(url: &str, max_scan_bytes: u64) -> Env {
    let mut e = env().await;
    e.ws.set_top(&format!(
        "mode = \"enforce\"\nmax_scan_bytes = {max_scan_bytes}"
    ));
    let cfg = std::fs::read_to_string(e.ws.config_path())
        .unwrap()
        .replace(
            "source = { dir = \"scans\" }",
            &format!("source = {{ url = \"{url}\" }}"),
        );
    std::fs::write(e.ws.config_path(), cfg).unwrap();
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_source_claiming_a_gigabyte_is_refused_by_max_scan_bytes_without_allocating_it() {
    let url = hostile_http(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n",
        b"{\"schema_version\": 1, \"identities\": [",
        1,
    )
    .await;
    let e = url_source_env(&url, 64 * 1024 * 1024).await;
    let dir = e.ws.path().to_path_buf();
    let cfg = e.ws.config_path();
    let started = Instant::now();
    // With 768 MiB of address space, allocating the claimed gigabyte cannot
    // succeed (it aborts the process), nor can waiting for it (the body never
    // comes): the refusal must come from the header.
    let out = tokio::task::spawn_blocking(move || {
        run_limited(
            &dir,
            &cfg,
            &["run".into(), "--once".into()],
            Duration::from_secs(60),
            Some(768 * 1024 * 1024),
        )
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited {:?} for the body",
        started.elapsed()
    );
    assert_scan_refused(
        &e,
        &out,
        "1 GB Content-Length",
        &[
            &url,
            "scan is 1073741824 bytes, over the limit of 67108864 bytes (max_scan_bytes)",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_source_streaming_without_end_is_cut_off_at_max_scan_bytes() {
    // No Content-Length: the body streams until the client hangs up.
    let url = hostile_http(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        &[b'['; 64 * 1024],
        0,
    )
    .await;
    let e = url_source_env(&url, 1024 * 1024).await;
    let out = e
        .cli_timeout(&["run", "--once"], Duration::from_secs(60))
        .await;
    assert_scan_refused(
        &e,
        &out,
        "endless body",
        &[&url, "over the limit of 1048576 bytes (max_scan_bytes)"],
    )
    .await;
}

/// Each config fixture: (file, what the message must say: place and problem).
const CONFIGS: &[(&str, &[&str])] = &[
    ("wrong-type-mode.toml", &["line 2, column 8", "mode = 5"]),
    (
        "wrong-type-store-url.toml",
        &[
            "line 6, column 7",
            "invalid type: sequence, expected a string",
        ],
    ),
    (
        "wrong-type-max-scan-bytes.toml",
        &[
            "line 4, column 18",
            "invalid type: string \"512 MiB\", expected u64",
        ],
    ),
    (
        "unknown-top-level-key.toml",
        &["line 4, column 1", "unknown field `mdoe`"],
    ),
    (
        "unknown-nested-key.toml",
        &["line 16, column 1", "unknown field `batch_szie`"],
    ),
    (
        "integer-overflow.toml",
        &["line 4, column 18", "expected u64"],
    ),
    (
        "negative-integer.toml",
        &[
            "line 4, column 18",
            "invalid value: integer `-1`, expected u64",
        ],
    ),
    (
        "huge-batch-size.toml",
        &["tenant[0].graph.batch_size", "must be 1 to 20"],
    ),
    (
        "approval-ttl-overflow.toml",
        &["approval_ttl", "must be at most 100 years"],
    ),
    (
        "duration-overflow.toml",
        &["line 4, column 16", "invalid duration"],
    ),
    (
        "lease-overflow.toml",
        &["daemon.lease_secs", "must be at most 31536000"],
    ),
    (
        "nan-guardrail.toml",
        &["guardrails.circuit_breaker_factor", "must be at least 1"],
    ),
    (
        "infinite-guardrail.toml",
        &["guardrails.max_actions_percent", "at most 100"],
    ),
    ("duplicate-key.toml", &["line 4, column 1", "duplicate key"]),
    (
        "tenant-not-an-array.toml",
        &["line 8, column 1", "expected a sequence"],
    ),
    ("truncated.toml", &["line 5, column 5", "unclosed table"]),
    (
        "non-utf8-comment.toml",
        &["line 1, column 11: not UTF-8 text"],
    ),
    (
        "non-utf8-value.toml",
        &["line 9, column 10: not UTF-8 text"],
    ),
    (
        "bad-schedule.toml",
        &["daemon.schedule", "is not a cron schedule"],
    ),
    (
        "bad-tenant-name.toml",
        &["tenant[0].name", "must be non-empty letters, digits"],
    ),
    (
        "webhook-not-a-url.toml",
        &["notify.webhook[0].url", "must be an http(s) URL"],
    ),
];

/// A bad config refuses `config check`, `run --once` and `daemon` alike: exit 1,
/// the file and place named, no store created, nothing sent.
async fn assert_config_refused(e: &Env, text: &[u8], what: &str, needles: &[&str]) {
    std::fs::write(e.ws.config_path(), text).unwrap();
    let cfg = e.ws.config_path().display().to_string();
    let mut all = vec![cfg.as_str()];
    all.extend_from_slice(needles);
    for args in [
        &["config", "check"][..],
        &["run", "--once"][..],
        &["daemon"][..],
        &["execute"][..],
    ] {
        let out = e.cli_timeout(args, Duration::from_secs(30)).await;
        assert_refused(&out, &[1], &format!("{what} ({args:?})"), &all);
        assert!(
            !e.ws.db_path().exists(),
            "{what} ({args:?}): a bad config created the store"
        );
    }
    e.assert_nothing_done(what).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_malformed_config_in_the_corpus_is_refused_by_every_command_with_its_place() {
    let listed: Vec<String> = std::fs::read_dir(fixtures().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in &listed {
        assert!(
            CONFIGS.iter().any(|(name, _)| name == f),
            "fixture {f} has no expectation in CONFIGS"
        );
    }
    let e = env().await;
    e.ws.add_scan("s.json", &good_scan());
    for (name, needles) in CONFIGS {
        let text = std::fs::read(fixtures().join("configs").join(name)).unwrap();
        assert_config_refused(&e, &text, name, needles).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_and_deeply_nested_configs_are_refused_with_a_short_message() {
    let e = env().await;
    e.ws.add_scan("s.json", &good_scan());
    let good = std::fs::read_to_string(e.ws.config_path()).unwrap();
    let cases = [
        (
            "huge key",
            format!("{} = 1\n{good}", "k".repeat(HUGE)),
            vec!["line 1, column 1", "unknown field", "bytes cut]"],
        ),
        (
            "huge value",
            good.replace(
                "mode = \"enforce\"",
                &format!("mode = \"{}\"", "A".repeat(HUGE)),
            ),
            vec!["line 1, column 8", "unknown variant", "bytes cut]"],
        ),
        (
            "huge tenant name",
            good.replace(
                "name = \"test\"",
                &format!("name = \"{}!\"", "b".repeat(HUGE)),
            ),
            vec!["tenant[0].name", "must be non-empty letters", "bytes cut]"],
        ),
        (
            "deep arrays",
            format!("x = {}{}\n{good}", "[".repeat(100_000), "]".repeat(100_000)),
            vec!["line 1, column", "max recursion depth"],
        ),
        (
            "deep tables",
            format!(
                "x = {}1{}\n{good}",
                "{a=".repeat(100_000),
                "}".repeat(100_000)
            ),
            vec!["line 1, column", "max recursion depth"],
        ),
    ];
    for (what, text, needles) in cases {
        assert_config_refused(&e, text.as_bytes(), what, &needles).await;
    }
}

/// Rule files refused as a set: (file, `line:column`, message).
const COMPILE: &[(&str, &str, &str)] = &[
    ("eval.rhai", "4:5", "reserved keyword 'eval' is disabled"),
    ("import.rhai", "4:5", "'import' is a reserved keyword"),
    ("truncated.rhai", "5:1", "Expecting"),
    (
        "unknown-function.rhai",
        "4:5",
        "unknown function or action \"system\"",
    ),
    (
        "metadata-loops.rhai",
        "2:1",
        "metadata() failed: too many operations",
    ),
    (
        "metadata-throws.rhai",
        "2:17",
        "metadata() failed: Runtime error: no metadata for you",
    ),
    (
        "metadata-garbage.rhai",
        "2:1",
        "metadata() must return a map",
    ),
    (
        "duplicate-metadata-key.rhai",
        "2:33",
        "Duplicated property for object map literal: name",
    ),
    (
        "top-level-statement.rhai",
        "2:1",
        "top-level statements are not run",
    ),
    ("non-utf8.rhai", "4:11", "not UTF-8 text"),
];

/// A rule set refused: `policy check` and `run --once` exit 1 naming the file
/// and place, the refusal is recorded, nothing is planned or sent.
async fn assert_rules_refused(e: &Env, file: &str, text: &[u8], place: &str, message: &str) {
    let dir = e.ws.path().join("policies");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "rhai") {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::write(dir.join(file), text).unwrap();
    let at = format!("policies/{file}:{place}:");
    for args in [&["policy", "check"][..], &["run", "--once", "--force"][..]] {
        let out = e.cli(args).await;
        assert_refused(&out, &[1], &format!("{file} ({args:?})"), &[&at, message]);
    }
    let events = e.events().await;
    let refused = events
        .iter()
        .rev()
        .find(|ev| ev["kind"] == "rule_set_refused")
        .unwrap_or_else(|| panic!("{file}: no rule_set_refused in {events:?}"));
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains(&at), "{file}: {}", short(detail));
    assert!(detail.len() <= MAX_STDERR, "{file}: {} bytes", detail.len());
    e.assert_nothing_done(file).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_files_that_cannot_be_trusted_refuse_the_rule_set_with_file_line_and_column() {
    let listed: Vec<String> = std::fs::read_dir(fixtures().join("rules/compile"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in &listed {
        assert!(
            COMPILE.iter().any(|(name, ..)| name == f),
            "fixture {f} has no expectation in COMPILE"
        );
    }
    let e = env().await;
    e.ws.add_scan("s.json", &good_scan());
    for (file, place, message) in COMPILE {
        let text = std::fs::read(fixtures().join("rules/compile").join(file)).unwrap();
        assert_rules_refused(&e, file, &text, place, message).await;
    }
    // Generated: a 8 MB identifier, a 100,000-deep expression, a 8 MB literal.
    let huge_ident = rule("huge-ident", "F1", &format!("{}(1)", "y".repeat(HUGE)));
    assert_rules_refused(
        &e,
        "huge-ident.rhai",
        huge_ident.as_bytes(),
        "2:42",
        "unknown function or action",
    )
    .await;
    let deep = rule(
        "deep",
        "F1",
        &format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
    );
    assert_rules_refused(
        &e,
        "deep.rhai",
        deep.as_bytes(),
        "2:56",
        "maximum complexity",
    )
    .await;
    let literal = rule(
        "literal",
        "F1",
        &format!("let s = \"{}\"; ()", "x".repeat(HUGE)),
    );
    assert_rules_refused(
        &e,
        "literal.rhai",
        literal.as_bytes(),
        "2:50",
        "exceeds the maximum limit",
    )
    .await;
}

/// Rules that misbehave while they run: (file, what the rule error says).
const RUNTIME: &[(&str, &str)] = &[
    ("loop.rhai", "limit"),
    ("while-true.rhai", "limit"),
    (
        "recursion.rhai",
        "nested too deep (limit: rules.max_call_depth)",
    ),
    (
        "closure-recursion.rhai",
        "nested too deep (limit: rules.max_call_depth)",
    ),
    ("string-doubling.rhai", "limit"),
    ("string-pad.rhai", "limit"),
    ("array-growth.rhai", "limit"),
    ("array-pad.rhai", "limit"),
    ("map-growth.rhai", "limit"),
    (
        "throw-string.rhai",
        "Runtime error: boom from a hostile rule",
    ),
    ("throw-map.rhai", "Runtime error"),
    (
        "returns-integer.rhai",
        "evaluate must return an action, an array of actions or (), not a i64",
    ),
    (
        "returns-map.rhai",
        "evaluate must return an action, an array of actions or (), not a map",
    ),
    (
        "returns-string.rhai",
        "evaluate must return an action, an array of actions or (), not a string",
    ),
    (
        "returns-mixed-array.rhai",
        "evaluate returned an array whose item 1 is a i64, not an action",
    ),
    (
        "returns-function.rhai",
        "evaluate must return an action, an array of actions or (), not a Fn",
    ),
    ("sleep-int.rhai", "sleep is not available in rules"),
    ("sleep-float.rhai", "sleep is not available in rules"),
    ("call-eval-by-name.rhai", "'eval' is a reserved keyword"),
    ("bad-attribute.rhai", "no_such_property"),
    ("index-out-of-range.rhai", "out of bounds"),
    ("divide-by-zero.rhai", "Division by zero"),
];

#[tokio::test(flavor = "multi_thread")]
async fn rules_that_loop_recurse_allocate_throw_or_return_garbage_are_rule_errors_per_identity_and_act_on_nothing()
 {
    let listed: Vec<String> = std::fs::read_dir(fixtures().join("rules/runtime"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in &listed {
        assert!(
            RUNTIME.iter().any(|(name, _)| name == f),
            "fixture {f} has no expectation in RUNTIME"
        );
    }
    let e = env().await;
    // Only the hostile rules: any action would come from one of them.
    std::fs::remove_file(e.ws.path().join("policies/disable-everyone.rhai")).unwrap();
    for (file, _) in RUNTIME {
        std::fs::copy(
            fixtures().join("rules/runtime").join(file),
            e.ws.path().join("policies").join(file),
        )
        .unwrap();
    }
    // A rule throwing a value as large as the sandbox allows.
    e.ws.add_rule(
        "throw-huge.rhai",
        &rule(
            "throw-huge",
            "F1",
            "let s = \"x\"; for i in 0..15 { s += s; } throw s",
        ),
    );
    e.ws.add_scan("s.json", &good_scan());
    let out = e.cli(&["run", "--once"]).await;
    // The run itself is fine: rule errors are recorded, the other rules go on.
    assert_eq!(out.code, 0, "{}", short(&out.all()));
    assert!(!out.all().contains("panicked"), "{}", short(&out.all()));
    assert!(
        out.stderr
            .contains(&format!("{} rule error(s)", 2 * (RUNTIME.len() + 1))),
        "{}",
        short(&out.stderr)
    );
    let events = e.events().await;
    let errors: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["kind"] == "rule_error")
        .collect();
    let mut expected: Vec<(String, String)> = RUNTIME
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    expected.push(("throw-huge.rhai".into(), "bytes cut]".into()));
    for (file, message) in &expected {
        let name = file.trim_end_matches(".rhai");
        for n in [1, 2] {
            let err = errors
                .iter()
                .find(|ev| ev["rule"] == name && ev["identity_id"] == guid(n))
                .unwrap_or_else(|| panic!("no rule error for {name} and identity {n}"));
            let detail = err["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("policies/{file}")) && detail.contains(message),
                "{name}: {message:?} not in {}",
                short(detail)
            );
            assert!(
                detail.len() <= 4096,
                "{name}: {} bytes recorded",
                detail.len()
            );
        }
    }
    assert_eq!(errors.len(), 2 * expected.len());
    e.assert_nothing_done("hostile rules").await;
    let out = e.cli(&["audit", "verify"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
}
