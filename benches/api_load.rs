//! API load test: the real daemon under a bounded load from a second process.
//!
//! This process starts a fake Entra tenant (`fake_entra::FakeTenant`, on
//! 127.0.0.1), writes a config, a rule and a scan of `API_LOAD_ACTIONS` users to a
//! temporary directory, and starts `entra-remediator daemon` (the release binary)
//! with an SQLite store, the HTTP API on 127.0.0.1:<free port> and one tenant in
//! approval mode whose `[tenant.graph]` points at the fake, so approved actions are
//! executed. The schedule never fires (`0 0 0 1 1 *`, `catch_up = false`): the run
//! that plans one pending `disable_user` per user is triggered with `POST /v1/runs`.
//!
//! Then, all on loopback and bounded in count and time:
//!
//! 1. a burst phase: for each of `API_LOAD_BURST_IDS` actions, `API_LOAD_CONCURRENCY`
//!    approvals of that same action are released at once;
//! 2. a mixed phase: at most `API_LOAD_REQUESTS` requests in all (the burst
//!    included) within `API_LOAD_SECS` seconds from `API_LOAD_CONCURRENCY` workers:
//!    `GET /v1/approvals` 5%, `GET /metrics` 20%, `GET /v1/actions/{id}` 35%,
//!    `POST /v1/actions/{id}/approve` 40% (half of them on a small hot set of ids,
//!    so the same ids are approved concurrently many times).
//!
//! It reports requests/s and the latency p50/p90/p99/max per route, counts every
//! answer that is not 2xx (409 is expected, and only from approve), waits for the
//! daemon to execute what was approved, stops it with SIGTERM and checks that
//! nothing was decided or executed twice: at most one 200 per action from the API,
//! at most one approval row and one decision event per action, at most one write
//! intent and outcome per action, at most one `PATCH` per user at the fake, every
//! approved action done, and `audit verify` passing. The figures are printed and
//! written, with the machine and the command, to `benches/api-load-results.md`
//! (`API_LOAD_RESULTS=path`, or `none` to skip). Exits 1 when a check fails.
//!
//! Run: `cargo bench --bench api_load`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use entra_remediator::store::{self, Filter};
use fake_entra::{FakeTenant, User};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT: &str = "00000000-0000-0000-0000-00000000c11e";
const SECRET: &str = "api-load-graph-secret-0123456789";
const TOKEN: &str = "api-load-token-5b1e9d0c7a";
const FINDING: &str = "F-LOAD-STALE";
const APPROVERS: [&str; 3] = ["alice", "bob", "carol"];

/// Every phase's own time limit, so the bench always stops by itself.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SEED_TIMEOUT: Duration = Duration::from_secs(120);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Settings {
    actions: usize,
    requests: usize,
    secs: u64,
    concurrency: usize,
    hot: usize,
    burst_ids: usize,
    seed: u64,
    results: Option<PathBuf>,
}

fn env_num(name: &str, default: u64, min: u64, max: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let n: u64 = v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"));
            assert!(
                (min..=max).contains(&n),
                "{name}={n} is outside {min}..={max} (the load must stay bounded)"
            );
            n
        }
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let results = match std::env::var("API_LOAD_RESULTS") {
            Ok(v) if v == "none" => None,
            Ok(v) => Some(PathBuf::from(v)),
            Err(_) => {
                Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/api-load-results.md"))
            }
        };
        Settings {
            actions: env_num("API_LOAD_ACTIONS", 1_000, 10, 20_000) as usize,
            requests: env_num("API_LOAD_REQUESTS", 20_000, 100, 200_000) as usize,
            secs: env_num("API_LOAD_SECS", 60, 1, 300),
            concurrency: env_num("API_LOAD_CONCURRENCY", 32, 1, 256) as usize,
            hot: env_num("API_LOAD_HOT_IDS", 40, 1, 1_000) as usize,
            burst_ids: env_num("API_LOAD_BURST_IDS", 25, 0, 1_000) as usize,
            seed: env_num("API_LOAD_SEED", 0x5eed_1234, 0, u64::MAX),
            results,
        }
    }
}

/// splitmix64: a small deterministic generator, one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn guid(n: usize) -> String {
    format!("00000000-0000-0000-0000-{n:012x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Approvals,
    Metrics,
    Show,
    Approve,
}

impl Route {
    const ALL: [Route; 4] = [
        Route::Approvals,
        Route::Metrics,
        Route::Show,
        Route::Approve,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::Approvals => "GET /v1/approvals",
            Route::Metrics => "GET /metrics",
            Route::Show => "GET /v1/actions/{id}",
            Route::Approve => "POST /v1/actions/{id}/approve",
        }
    }
}

/// One request's result; `status` 0 is a transport error.
#[derive(Debug, Clone)]
struct Sample {
    route: Route,
    status: u16,
    micros: u64,
    id: Option<i64>,
    /// For an approval answered 200: the state it reported.
    state: Option<String>,
    error: Option<String>,
}

impl Sample {
    /// 2xx, or 409 for an approval of an action already decided.
    fn expected(&self) -> bool {
        (200..300).contains(&self.status) || (self.route == Route::Approve && self.status == 409)
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn request(&self, route: Route, id: Option<i64>, by: &str) -> Sample {
        let url = match route {
            Route::Approvals => format!("{}/v1/approvals", self.base),
            Route::Metrics => format!("{}/metrics", self.base),
            Route::Show => format!("{}/v1/actions/{}", self.base, id.unwrap()),
            Route::Approve => format!("{}/v1/actions/{}/approve", self.base, id.unwrap()),
        };
        let req = match route {
            Route::Approve => self
                .http
                .post(url)
                // The approver is the calling token; the API refuses a typed name.
                .json(&json!({"comment": format!("api load test ({by})")})),
            _ => self.http.get(url),
        };
        let started = Instant::now();
        let result = async {
            let r = req.bearer_auth(TOKEN).send().await?;
            let status = r.status().as_u16();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let micros = started.elapsed().as_micros() as u64;
        match result {
            Ok((status, body)) => {
                let state = (route == Route::Approve && status == 200)
                    .then(|| serde_json::from_slice::<Value>(&body).ok())
                    .flatten()
                    .and_then(|v| v["state"].as_str().map(str::to_string));
                let error = (!(200..300).contains(&status))
                    .then(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
                Sample {
                    route,
                    status,
                    micros,
                    id,
                    state,
                    error,
                }
            }
            Err(e) => Sample {
                route,
                status: 0,
                micros,
                id,
                state: None,
                error: Some(e.to_string()),
            },
        }
    }

    async fn get_json(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }
}

/// What the binary printed.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

async fn cli(dir: &Path, args: &[&str]) -> Out {
    let cfg = dir.join("config.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .current_dir(dir)
        .env_remove("ENTRA_REMEDIATOR_CONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_workspace(dir: &Path, s: &Settings, port: u16, fake_base: &str) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::create_dir_all(dir.join("scans")).unwrap();
    let token = dir.join("api-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let secret = dir.join("graph-secret");
    std::fs::write(&secret, SECRET).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [&token, &secret] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let config = format!(
        r#"mode = "approval"
policies_dir = "policies"
[store]
url = "sqlite://history.db"
[guardrails]
max_actions_per_run = 1000000
max_actions_percent = 100.0
[daemon]
schedule = "0 0 0 1 1 *"
catch_up = false
execute_interval_secs = 1
shutdown_grace_secs = 30
[api]
enabled = true
listen = "127.0.0.1:{port}"
[[api.tokens]]
name = "load"
file = "api-token"
roles = ["admin"]
[[tenant]]
name = "load"
tenant_id = "{TENANT}"
mode = "approval"
source = {{ dir = "scans" }}
[tenant.graph]
authority = "{fake_base}"
graph_url = "{fake_base}"
client_id = "{CLIENT}"
client_secret_file = "graph-secret"
max_retry_secs = 20
"#
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let rule = format!(
        r#"fn metadata() {{
    #{{ name: "load-stale-disable", description: "Disable stale accounts (API load test)", findings: ["{FINDING}"] }}
}}
fn evaluate(finding, identity, tenant) {{
    disable_user("no sign-in for " + identity.days_since_sign_in() + " days (API load test)")
}}
"#
    );
    std::fs::write(dir.join("policies/load-stale-disable.rhai"), rule).unwrap();
    let identities: Vec<Value> = (1..=s.actions)
        .map(|n| {
            json!({
                "id": guid(n),
                "user_principal_name": format!("u{n}@load.example"),
                "display_name": format!("Load User {n}"),
                "user_type": "Member",
                "account_enabled": true,
                "last_sign_in": "2026-01-01T00:00:00Z",
                "roles": [],
                "groups": []
            })
        })
        .collect();
    let scan = json!({
        "schema_version": 1,
        "tenant_id": TENANT,
        "tenant_name": "API load tenant",
        "scanned_at": chrono::Utc::now().to_rfc3339(),
        "identities": identities,
        "findings": [{
            "id": FINDING,
            "title": "Stale accounts",
            "severity": "medium",
            "category": "hygiene",
            "recommendation": "Disable them",
            "affected_identities": (1..=s.actions).map(guid).collect::<Vec<_>>()
        }]
    });
    std::fs::write(
        dir.join("scans/scan.json"),
        serde_json::to_vec(&scan).unwrap(),
    )
    .unwrap();
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .args(["--log", "warn", "daemon"])
            .current_dir(dir)
            .env_remove("ENTRA_REMEDIATOR_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .unwrap()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// SIGTERM, then the exit code (None when it did not stop in time: killed).
    async fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().expect("the daemon is running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {pid} failed");
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => Some(status.unwrap().code().unwrap_or(-1)),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(micros: u64) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

#[derive(Default)]
struct RouteStats {
    count: usize,
    ok: usize,
    conflicts: usize,
    errors: usize,
    latencies: Vec<u64>,
}

/// The checks after the load; each failure is one line.
#[derive(Default)]
struct Checks {
    lines: Vec<(bool, String)>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: String) {
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        self.lines.push((ok, what));
    }

    fn passed(&self) -> bool {
        self.lines.iter().all(|(ok, _)| *ok)
    }
}

/// The 1-, 5- and 15-minute load averages: other work on the machine skews the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    vec![
        ("CPU".into(), cpu),
        ("cores".into(), cores),
        ("memory".into(), mem),
        (
            "kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        ("rustc".into(), rustc),
        (
            "binary".into(),
            "release profile (`cargo bench` builds `target/release/entra-remediator`)".into(),
        ),
    ]
}

fn main() {
    let settings = Settings::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let passed = rt.block_on(run(settings));
    rt.shutdown_timeout(Duration::from_secs(5));
    if !passed {
        eprintln!("api_load: FAILED (see the checks above)");
        std::process::exit(1);
    }
}

async fn run(s: Settings) -> bool {
    let started_at = chrono::Utc::now();
    println!(
        "api_load: {} pending actions, at most {} requests in {} s, concurrency {}",
        s.actions, s.requests, s.secs, s.concurrency
    );

    // The fake tenant lives in this process; the daemon reaches it on loopback.
    let fake = FakeTenant::start(TENANT).await;
    fake.register_app_secret(CLIENT, SECRET);
    for n in 1..=s.actions {
        fake.add_user(User {
            id: guid(n),
            user_principal_name: format!("u{n}@load.example"),
            display_name: format!("Load User {n}"),
            user_type: "Member".into(),
            account_enabled: true,
        });
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    write_workspace(&dir, &s, port, &fake.base_url());
    let check = cli(&dir, &["config", "check"]).await;
    assert_eq!(check.code, 0, "config check failed:\n{}", check.stderr);

    let mut daemon = Daemon::start(&dir);
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(s.concurrency)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };

    // Ready?
    let t0 = Instant::now();
    loop {
        if let Some(code) = daemon.exited() {
            panic!(
                "the daemon exited with {code} at start:\n{}",
                daemon.log_tail()
            );
        }
        let ready = api
            .http
            .get(format!("{}/readyz", api.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            t0.elapsed() < READY_TIMEOUT,
            "the daemon was not ready within {READY_TIMEOUT:?}:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("daemon ready after {:.2} s", t0.elapsed().as_secs_f64());

    // Seed: one run through the API plans one pending disable_user per user.
    let t0 = Instant::now();
    let r = api
        .http
        .post(format!("{}/v1/runs", api.base))
        .bearer_auth(TOKEN)
        .json(&json!({"tenant": "load"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "POST /v1/runs");
    let ids: Vec<i64> = loop {
        if let Some(v) = api.get_json("/v1/approvals").await {
            let actions = v["actions"].as_array().cloned().unwrap_or_default();
            if actions.len() >= s.actions {
                let mut ids: Vec<i64> = actions.iter().filter_map(|a| a["id"].as_i64()).collect();
                ids.sort_unstable();
                break ids;
            }
        }
        assert!(
            t0.elapsed() < SEED_TIMEOUT,
            "the run did not plan {} pending actions within {SEED_TIMEOUT:?}:\n{}",
            s.actions,
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(ids.len(), s.actions);
    let seed_secs = t0.elapsed().as_secs_f64();
    println!("{} pending actions planned in {seed_secs:.2} s", ids.len());

    let ids = Arc::new(ids);
    let mut rng = Rng(s.seed);
    let mut hot: Vec<i64> = Vec::with_capacity(s.hot);
    while hot.len() < s.hot.min(ids.len()) {
        let id = ids[rng.below(ids.len())];
        if !hot.contains(&id) {
            hot.push(id);
        }
    }
    let api = Arc::new(api);
    let load_before = loadavg();
    let deadline = Instant::now() + Duration::from_secs(s.secs);
    let load_started = Instant::now();
    let mut samples: Vec<Sample> = Vec::with_capacity(s.requests);

    // 1. Burst: the same action approved by `concurrency` requests at once.
    let burst_ids: Vec<i64> = ids
        .iter()
        .rev()
        .copied()
        .filter(|id| !hot.contains(id))
        .take(s.burst_ids.min(s.requests / s.concurrency.max(1)))
        .collect();
    let mut burst_winners: Vec<(i64, usize, usize)> = Vec::new();
    for &id in &burst_ids {
        if Instant::now() >= deadline {
            break;
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(s.concurrency));
        let tasks: Vec<_> = (0..s.concurrency)
            .map(|k| {
                let api = api.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    api.request(Route::Approve, Some(id), APPROVERS[k % APPROVERS.len()])
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        let mut conflicts = 0;
        for t in tasks {
            let smp = t.await.unwrap();
            match smp.status {
                200 => ok += 1,
                409 => conflicts += 1,
                _ => {}
            }
            samples.push(smp);
        }
        burst_winners.push((id, ok, conflicts));
    }
    let burst_requests = samples.len();
    println!(
        "burst: {} actions x {} concurrent approvals = {burst_requests} requests",
        burst_winners.len(),
        s.concurrency
    );

    // 2. Mixed load until the count or the time is used up.
    let next = Arc::new(AtomicUsize::new(samples.len()));
    let hot = Arc::new(hot);
    let workers: Vec<_> = (0..s.concurrency)
        .map(|w| {
            let api = api.clone();
            let next = next.clone();
            let ids = ids.clone();
            let hot = hot.clone();
            let total = s.requests;
            let mut rng = Rng(s.seed ^ ((w as u64 + 1) << 32));
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    if Instant::now() >= deadline || next.fetch_add(1, Ordering::Relaxed) >= total {
                        break;
                    }
                    let roll = rng.below(100);
                    let (route, id) = match roll {
                        0..5 => (Route::Approvals, None),
                        5..25 => (Route::Metrics, None),
                        25..60 => (Route::Show, Some(ids[rng.below(ids.len())])),
                        _ => {
                            let id = if rng.below(2) == 0 {
                                hot[rng.below(hot.len())]
                            } else {
                                ids[rng.below(ids.len())]
                            };
                            (Route::Approve, Some(id))
                        }
                    };
                    let by = APPROVERS[rng.below(APPROVERS.len())];
                    out.push(api.request(route, id, by).await);
                }
                out
            })
        })
        .collect();
    for w in workers {
        samples.extend(w.await.unwrap());
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    let load_after = loadavg();
    let total = samples.len();
    let rps = total as f64 / load_secs;
    println!("load: {total} requests in {load_secs:.2} s = {rps:.0} requests/s");
    println!("load average before: {load_before}, after: {load_after}");

    // Per-route figures.
    let mut per: BTreeMap<Route, RouteStats> = BTreeMap::new();
    let mut approved_by_api: HashMap<i64, usize> = HashMap::new();
    let mut error_examples: Vec<String> = Vec::new();
    let mut all_lat: Vec<u64> = Vec::with_capacity(total);
    let mut odd_states = 0;
    for smp in &samples {
        let st = per.entry(smp.route).or_default();
        st.count += 1;
        st.latencies.push(smp.micros);
        all_lat.push(smp.micros);
        if (200..300).contains(&smp.status) {
            st.ok += 1;
        } else if smp.expected() {
            st.conflicts += 1;
        } else {
            st.errors += 1;
            if error_examples.len() < 10 {
                error_examples.push(format!(
                    "{} id={:?}: {} {}",
                    smp.route.name(),
                    smp.id,
                    smp.status,
                    smp.error.as_deref().unwrap_or("")
                ));
            }
        }
        if smp.route == Route::Approve && smp.status == 200 {
            *approved_by_api.entry(smp.id.unwrap()).or_default() += 1;
            if smp.state.as_deref() != Some("approved") {
                odd_states += 1;
            }
        }
    }
    for st in per.values_mut() {
        st.latencies.sort_unstable();
    }
    all_lat.sort_unstable();
    let errors: usize = per.values().map(|s| s.errors).sum();
    let conflicts: usize = per.values().map(|s| s.conflicts).sum();

    let mut table = String::new();
    writeln!(
        table,
        "| route | requests | 2xx | 409 (expected) | errors | p50 ms | p90 ms | p99 ms | max ms |"
    )
    .unwrap();
    writeln!(table, "|---|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for r in Route::ALL {
        let Some(st) = per.get(&r) else { continue };
        writeln!(
            table,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name(),
            st.count,
            st.ok,
            st.conflicts,
            st.errors,
            ms(percentile(&st.latencies, 0.50)),
            ms(percentile(&st.latencies, 0.90)),
            ms(percentile(&st.latencies, 0.99)),
            ms(st.latencies.last().copied().unwrap_or(0)),
        )
        .unwrap();
    }
    writeln!(
        table,
        "| all | {total} | {} | {conflicts} | {errors} | {} | {} | {} | {} |",
        total - conflicts - errors,
        ms(percentile(&all_lat, 0.50)),
        ms(percentile(&all_lat, 0.90)),
        ms(percentile(&all_lat, 0.99)),
        ms(all_lat.last().copied().unwrap_or(0)),
    )
    .unwrap();
    println!("\n{table}");
    for e in &error_examples {
        println!("  error: {e}");
    }

    // Let the daemon execute everything that was approved.
    let approved_ids: Vec<i64> = {
        let mut v: Vec<i64> = approved_by_api.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let t0 = Instant::now();
    let mut states: BTreeMap<String, usize>;
    loop {
        let out = cli(&dir, &["approvals", "list", "--all", "--format", "json"]).await;
        states = BTreeMap::new();
        if out.code == 0 {
            for a in out.json_lines() {
                *states
                    .entry(a["state"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
            let waiting = ["approved", "executing", "ready"]
                .iter()
                .map(|k| states.get(*k).copied().unwrap_or(0))
                .sum::<usize>();
            if waiting == 0 {
                break;
            }
        }
        if t0.elapsed() > SETTLE_TIMEOUT {
            println!(
                "approved actions were not all executed within {SETTLE_TIMEOUT:?}: {states:?}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_secs = t0.elapsed().as_secs_f64();
    println!("execution settled {settle_secs:.2} s after the load: {states:?}");
    let metrics_text = api
        .http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exit = daemon.stop().await;

    // Checks.
    println!("\nchecks:");
    let mut c = Checks::default();
    c.check(
        errors == 0,
        format!(
            "{errors} unexpected answers (non-2xx other than 409 from approve, or transport errors)"
        ),
    );
    let twice: Vec<_> = approved_by_api.iter().filter(|(_, n)| **n > 1).collect();
    c.check(
        twice.is_empty(),
        format!(
            "the API answered 200 to at most one approval per action ({} actions approved, {} approved more than once)",
            approved_ids.len(),
            twice.len()
        ),
    );
    c.check(
        odd_states == 0,
        format!("{odd_states} approvals answered 200 with a state other than approved"),
    );
    let burst_bad: Vec<_> = burst_winners
        .iter()
        .filter(|(_, ok, conflicts)| *ok != 1 || ok + conflicts != s.concurrency)
        .collect();
    c.check(
        burst_bad.is_empty(),
        format!(
            "burst: each of {} actions approved by {} concurrent requests got exactly one 200 and {} 409s ({} did not)",
            burst_winners.len(),
            s.concurrency,
            s.concurrency.saturating_sub(1),
            burst_bad.len()
        ),
    );
    c.check(
        exit == Some(0),
        format!("the daemon stopped on SIGTERM with exit code {exit:?}"),
    );

    // The fake: at most one PATCH per user, exactly one per approved action.
    let mut patches: HashMap<String, usize> = HashMap::new();
    for r in fake.requests() {
        if r.method == "PATCH" && r.path.starts_with("/v1.0/users/") {
            let user = r.path.trim_start_matches("/v1.0/users/").to_string();
            *patches.entry(user).or_default() += 1;
        }
    }
    let patched_twice = patches.values().filter(|n| **n > 1).count();
    c.check(
        patched_twice == 0,
        format!(
            "every user was PATCHed at most once by the daemon ({} users PATCHed, {patched_twice} more than once)",
            patches.len()
        ),
    );
    c.check(
        patches.len() == approved_ids.len(),
        format!(
            "one user PATCHed per approved action ({} PATCHed, {} approved)",
            patches.len(),
            approved_ids.len()
        ),
    );
    let disabled = (1..=s.actions)
        .filter(|n| fake.user(&guid(*n)).is_some_and(|u| !u.account_enabled))
        .count();
    c.check(
        disabled == approved_ids.len(),
        format!(
            "{disabled} accounts disabled at the fake for {} approved actions",
            approved_ids.len()
        ),
    );

    // History: one decision per action, one write intent and outcome at most.
    let hist = cli(&dir, &["history", "--format", "json"]).await;
    c.check(
        hist.code == 0,
        format!("history --format json exits 0 ({})", hist.code),
    );
    let events = hist.json_lines();
    let mut decisions: HashMap<i64, usize> = HashMap::new();
    let mut intents: HashMap<i64, usize> = HashMap::new();
    let mut outcomes: HashMap<i64, usize> = HashMap::new();
    for e in &events {
        let Some(id) = e["action_id"].as_i64() else {
            continue;
        };
        let kind = e["kind"].as_str().unwrap_or("");
        let state = e["state"].as_str().unwrap_or("");
        if kind == "approval_recorded"
            || (kind == "state_changed" && (state == "approved" || state == "rejected"))
        {
            *decisions.entry(id).or_default() += 1;
        }
        if kind == "graph_write_intent" {
            *intents.entry(id).or_default() += 1;
        }
        if kind == "execution_outcome" {
            *outcomes.entry(id).or_default() += 1;
        }
    }
    let over = |m: &HashMap<i64, usize>| m.values().filter(|n| **n > 1).count();
    c.check(
        over(&decisions) == 0 && decisions.len() == approved_ids.len(),
        format!(
            "history: {} events; one decision event per approved action ({} actions with a decision, {} with more than one)",
            events.len(),
            decisions.len(),
            over(&decisions)
        ),
    );
    c.check(
        over(&intents) == 0 && over(&outcomes) == 0,
        format!(
            "history: at most one Graph write intent and one execution outcome per action ({} intents, {} outcomes; {} / {} actions with more than one)",
            intents.len(),
            outcomes.len(),
            over(&intents),
            over(&outcomes)
        ),
    );

    // The approvals table itself, for every action (the daemon has stopped).
    let url = format!("sqlite://{}", dir.join("history.db").display());
    let st = store::open(&url).await.unwrap();
    let mut rows_total = 0;
    let mut rows_over = 0;
    for &id in ids.iter() {
        let n = st.approvals(id).await.unwrap().len();
        rows_total += n;
        if n > 1 {
            rows_over += 1;
        }
    }
    c.check(
        rows_over == 0 && rows_total == approved_ids.len(),
        format!(
            "approvals table: {rows_total} rows for {} actions, {rows_over} actions with more than one",
            ids.len()
        ),
    );
    let finals = st.actions(&Filter::default()).await.unwrap();
    let mut final_states: BTreeMap<String, usize> = BTreeMap::new();
    for a in &finals {
        *final_states.entry(a.state.to_string()).or_default() += 1;
    }
    let done = final_states.get("done").copied().unwrap_or(0);
    c.check(
        done == approved_ids.len(),
        format!(
            "every approved action executed: {done} done of {} approved; final states {final_states:?}",
            approved_ids.len()
        ),
    );
    drop(st);

    // `approvals show` through the CLI for the burst ids and a few hot ones.
    let mut show_bad = 0;
    let sample_ids: Vec<i64> = burst_ids
        .iter()
        .chain(hot.iter().take(10))
        .copied()
        .collect();
    for &id in &sample_ids {
        let out = cli(
            &dir,
            &["approvals", "show", &id.to_string(), "--format", "json"],
        )
        .await;
        let rec = out.json_lines().into_iter().next().unwrap_or(Value::Null);
        let n = rec["approvals"].as_array().map_or(usize::MAX, Vec::len);
        if out.code != 0 || n > 1 {
            show_bad += 1;
        }
    }
    c.check(
        show_bad == 0,
        format!(
            "approvals show: at most one approval for each of {} contended actions ({show_bad} not)",
            sample_ids.len()
        ),
    );
    let verify = cli(&dir, &["audit", "verify"]).await;
    c.check(
        verify.code == 0,
        format!(
            "audit verify exits 0: {}",
            verify
                .stdout
                .trim()
                .lines()
                .last()
                .unwrap_or(verify.stderr.trim())
        ),
    );

    let passed = c.passed();
    let graph_calls = metrics_text
        .lines()
        .filter(|l| {
            l.starts_with("entra_remediator_graph_requests_total")
                || l.starts_with("entra_remediator_actions_total")
        })
        .collect::<Vec<_>>()
        .join("\n");

    if let Some(path) = &s.results {
        let mut md = String::new();
        writeln!(md, "# API load test results\n").unwrap();
        writeln!(
            md,
            "Written by `benches/api_load.rs` on {} ({}). The real daemon (a second process) \
             served its HTTP API on 127.0.0.1 with an SQLite store; this process ran the fake \
             Entra tenant the approved actions were executed against, and the load.\n",
            started_at.format("%Y-%m-%d %H:%M UTC"),
            if passed {
                "all checks passed"
            } else {
                "SOME CHECKS FAILED"
            }
        )
        .unwrap();
        writeln!(
            md,
            "## Command\n\n```sh\ncargo bench --bench api_load\n```\n"
        )
        .unwrap();
        writeln!(
            md,
            "Settings: API_LOAD_ACTIONS={} API_LOAD_REQUESTS={} API_LOAD_SECS={} \
             API_LOAD_CONCURRENCY={} API_LOAD_HOT_IDS={} API_LOAD_BURST_IDS={} API_LOAD_SEED={}\n",
            s.actions, s.requests, s.secs, s.concurrency, s.hot, s.burst_ids, s.seed
        )
        .unwrap();
        writeln!(md, "## Machine\n").unwrap();
        for (k, v) in machine() {
            writeln!(md, "- {k}: {v}").unwrap();
        }
        writeln!(
            md,
            "- the daemon, the fake tenant and the load generator share these cores; \
             load average (1, 5, 15 min) before the load: {load_before}, after: {load_after} \
             (above 2 means other work competed for the cores)\n"
        )
        .unwrap();
        writeln!(md, "## Load\n").unwrap();
        writeln!(
            md,
            "- {} pending `disable_user` actions, planned by `POST /v1/runs` in {seed_secs:.2} s",
            s.actions
        )
        .unwrap();
        writeln!(
            md,
            "- burst phase: {} actions, each approved by {} concurrent requests released together ({burst_requests} requests)",
            burst_winners.len(),
            s.concurrency
        )
        .unwrap();
        writeln!(
            md,
            "- mixed phase: GET /v1/approvals 5%, GET /metrics 20%, GET /v1/actions/{{id}} 35%, \
             POST approve 40% (half on {} hot ids)",
            hot.len()
        )
        .unwrap();
        writeln!(
            md,
            "- **{total} requests in {load_secs:.2} s = {rps:.0} requests/s** at concurrency {}",
            s.concurrency
        )
        .unwrap();
        writeln!(
            md,
            "- errors (non-2xx other than the expected 409s, or transport errors): **{errors}**; expected 409s: {conflicts}\n"
        )
        .unwrap();
        writeln!(md, "Latency per route (milliseconds, client side):\n").unwrap();
        writeln!(md, "{table}").unwrap();
        writeln!(md, "## Execution and checks\n").unwrap();
        writeln!(
            md,
            "- {} actions approved through the API; execution settled {settle_secs:.2} s after the load ended",
            approved_ids.len()
        )
        .unwrap();
        writeln!(md, "- final action states: {final_states:?}").unwrap();
        if !graph_calls.is_empty() {
            writeln!(
                md,
                "- daemon metrics at the end:\n\n```\n{graph_calls}\n```"
            )
            .unwrap();
        }
        writeln!(md).unwrap();
        for (ok, what) in &c.lines {
            writeln!(md, "- [{}] {what}", if *ok { "x" } else { " " }).unwrap();
        }
        if !error_examples.is_empty() {
            writeln!(md, "\nFirst unexpected answers:\n").unwrap();
            for e in &error_examples {
                writeln!(md, "- {e}").unwrap();
            }
        }
        std::fs::write(path, md).unwrap();
        println!("\nwrote {}", path.display());
    }
    if !passed {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        println!(
            "daemon log (tail):\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
    passed
}
