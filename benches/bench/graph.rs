//! Section `graph`: execution through Microsoft Graph against the fake tenant.
//!
//! 5,000 identities, each with disable_user + revoke_sessions (10,000 actions),
//! their users read by id (15 per `GET /users?$filter=id in (...)` item), executed by the release binary (`run --once`, enforce mode) against
//! `fake-entra` with 50 ms latency on every Graph request and batch item and a
//! rate limit of 200 requests per rolling second (batch items counted). Measured:
//! HTTP requests per action, the execution time against its lower bounds, and a
//! naive one-request-at-a-time executor on a subset, extrapolated linearly.

use std::process::Command;
use std::time::{Duration, Instant};

use fake_entra::{FakeTenant, Fault, RecordedRequest, User};
use serde_json::{Value, json};

use crate::Ctx;
use crate::scangen::{self, Rng};
use crate::util::{self, fmt_dur, kib_mib, sh, verdict};

const CLIENT: &str = "00000000-0000-0000-0000-00000000be0c";
const SECRET: &str = "bench-secret-0123456789abcdef";
/// Latency injected on every Graph request and batch item.
pub const LATENCY: Duration = Duration::from_millis(50);
/// Requests (batch items counted) per rolling second before 429.
pub const RATE: u32 = 200;
/// Issue 11's target of HTTP requests per action (the floor is 0.05: the
/// 10,000 writes alone fill 500 envelopes of 20).
const TARGET: f64 = 0.06;

/// Ids of `count` users, deterministic per `tag_base`.
fn user_ids(count: usize, tag_base: u64) -> Vec<String> {
    let mut rng = Rng::new(scangen::SEED ^ tag_base);
    (0..count).map(|i| rng.guid(tag_base + i as u64)).collect()
}

fn add_users(fake: &FakeTenant, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        fake.add_user(User {
            id: id.clone(),
            user_principal_name: format!("bench.user{i}.{}@contoso.com", &id[..8]),
            display_name: format!("Bench User {i}"),
            user_type: "Member".into(),
            account_enabled: true,
        });
    }
}

/// A scan in which every user is a stale (200 days), high-risk (90) member:
/// the shipped stale-accounts-disable and high-risk-revoke-sessions rules
/// propose disable_user and revoke_sessions for each.
fn scan_json(ids: &[String]) -> Vec<u8> {
    let scanned: chrono::DateTime<chrono::Utc> = scangen::SCANNED_AT.parse().expect("time");
    let last = (scanned - chrono::Duration::days(200)).to_rfc3339();
    let identities: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "id": id,
                "user_principal_name": format!("bench.user{i}.{}@contoso.com", &id[..8]),
                "display_name": format!("Bench User {i}"),
                "user_type": "Member",
                "account_enabled": true,
                "last_sign_in": last,
                "roles": [],
                "groups": [],
                "risk_score": 90,
                "mfa_registered": true,
            })
        })
        .collect();
    let finding = |id: &str, title: &str| {
        json!({
            "id": id, "title": title, "severity": "high", "category": "bench",
            "recommendation": "remediate", "affected_identities": ids,
        })
    };
    serde_json::to_vec(&json!({
        "schema_version": 1,
        "tenant_id": scangen::TENANT_ID,
        "tenant_name": "contoso.onmicrosoft.com",
        "scanned_at": scangen::SCANNED_AT,
        "identities": identities,
        "findings": [
            finding("ZS-STALE-003", "Stale accounts"),
            finding("ZS-RISK-005", "High-risk users with active sessions"),
        ],
    }))
    .expect("scan json")
}

fn reset_faults(fake: &FakeTenant, parallel: bool) {
    fake.set_parallel_batch_items(parallel);
    fake.clear_faults();
    fake.clear_requests();
    fake.inject(Fault::Latency {
        matching: String::new(),
        delay: LATENCY,
    });
    fake.inject(Fault::RateLimit { per_second: RATE });
}

/// Counts of what the fake received.
#[derive(Debug, Default)]
struct Counts {
    envelopes: usize,
    token: usize,
    direct: usize,
    items: usize,
    items_ok: usize,
    /// Successful items that read (GET).
    reads_ok: usize,
    /// Successful reads of users by id (`$filter=id in (...)`, 15 ids each).
    by_id_ok: usize,
    throttled: usize,
    by_method: std::collections::BTreeMap<String, usize>,
}

/// Whether `r` reads users by id (`GET /users?$filter=id in (...)`).
fn by_id(r: &RecordedRequest) -> bool {
    r.method == "GET"
        && r.path == "/v1.0/users"
        && r.query
            .as_deref()
            .is_some_and(|q| q.contains("$filter=id%20in%20("))
}

fn count(reqs: &[RecordedRequest]) -> Counts {
    let mut c = Counts::default();
    for r in reqs {
        if r.in_batch {
            c.items += 1;
            if r.status == 429 {
                c.throttled += 1;
            } else if r.status < 400 {
                c.items_ok += 1;
                if r.method == "GET" {
                    c.reads_ok += 1;
                }
                if by_id(r) {
                    c.by_id_ok += 1;
                }
            }
            let what = if by_id(r) {
                "GET users by id".to_string()
            } else {
                r.method.clone()
            };
            *c.by_method.entry(what).or_default() += 1;
        } else if r.path.ends_with("/$batch") {
            c.envelopes += 1;
        } else if r.path.contains("/oauth2/") {
            c.token += 1;
        } else {
            c.direct += 1;
            if r.status == 429 {
                c.throttled += 1;
            }
            *c.by_method.entry(r.method.clone()).or_default() += 1;
        }
    }
    c
}

struct BatchedRun {
    /// The ceiling of batches in flight (`max_concurrency`) the run had.
    concurrency: usize,
    /// Whether that was the default (no `max_concurrency` in the config).
    default: bool,
    /// Whether the fake served each `$batch`'s items in parallel.
    parallel: bool,
    actions: usize,
    wall: Duration,
    exec: Duration,
    maxrss_kib: u64,
    counts: Counts,
    disabled: usize,
    revoked: usize,
}

fn batched_run(
    ctx: &Ctx,
    fake: &FakeTenant,
    n: usize,
    concurrency: Option<usize>,
    parallel: bool,
    tag_base: u64,
) -> BatchedRun {
    let ws = ctx.subdir(&format!(
        "graph-c{}-{}",
        concurrency.map_or("default".to_string(), |c| c.to_string()),
        if parallel { "par" } else { "seq" }
    ));
    let pol = ws.join("policies");
    std::fs::create_dir_all(&pol).expect("policies");
    std::fs::create_dir_all(ws.join("scans")).expect("scans");
    // The shipped rules, with the stale rule's own approval mode taken out so
    // that enforce mode executes its actions.
    for f in [
        "stale-accounts-disable.rhai",
        "high-risk-revoke-sessions.rhai",
    ] {
        let text = std::fs::read_to_string(util::repo().join("policies").join(f)).expect("rule");
        let text = text.replace("        mode: \"approval\",\n", "");
        std::fs::write(pol.join(f), text).expect("write rule");
    }
    let ids = user_ids(n, tag_base);
    add_users(fake, &ids);
    std::fs::write(ws.join("scans/scan.json"), scan_json(&ids)).expect("scan");
    std::fs::write(ws.join("secret"), SECRET).expect("secret");
    let cfg = format!(
        r#"mode = "enforce"
policies_dir = "policies"
[store]
url = "sqlite://history.db"
[guardrails]
max_actions_per_run = 100000
max_actions_percent = 100.0
[[tenant]]
name = "bench"
tenant_id = "{}"
max_scan_age = "100years"
source = {{ dir = "scans" }}
[tenant.graph]
authority = "{base}"
graph_url = "{base}"
client_id = "{CLIENT}"
client_secret_file = "secret"
{}"#,
        scangen::TENANT_ID,
        concurrency.map_or(String::new(), |c| format!("max_concurrency = {c}\n")),
        base = fake.base_url()
    );
    let cfg_path = ws.join("config.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    // The ceiling the run really has (the default when not configured).
    let ceiling = entra_remediator::config::Config::load(&cfg_path)
        .expect("bench config")
        .tenants[0]
        .graph
        .as_ref()
        .expect("graph table")
        .max_concurrency;
    reset_faults(fake, parallel);
    println!(
        "reproduce (needs the fake running; the bench starts one in-process): {} run --once --config {}   (cwd {}, stderr in run.log)",
        sh(&util::bin()),
        sh(&cfg_path),
        sh(&ws)
    );
    let mut cmd = Command::new(util::bin());
    cmd.current_dir(&ws)
        .env_remove("ENTRA_REMEDIATOR_CONFIG")
        .args(["run", "--once", "--config"])
        .arg(&cfg_path);
    let waiter = std::thread::spawn(move || {
        let s = util::run_measured(&mut cmd, false);
        (s, Instant::now())
    });
    // The execution phase starts with the first request the fake sees (the
    // token) and ends when the process exits.
    let mut first: Option<Instant> = None;
    while !waiter.is_finished() {
        if first.is_none() && !fake.requests().is_empty() {
            first = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(if first.is_none() {
            20
        } else {
            200
        }));
    }
    let (stats, end) = waiter.join().expect("waiter");
    let exec = first.map_or(Duration::ZERO, |f| end.saturating_duration_since(f));
    std::fs::write(ws.join("run.log"), &stats.stderr).expect("run.log");
    assert_eq!(stats.code, 0, "run --once failed: {}", stats.stderr);
    let counts = count(&fake.requests());
    let disabled = ids
        .iter()
        .filter(|id| fake.user(id).is_some_and(|u| !u.account_enabled))
        .count();
    let revoked = ids.iter().filter(|id| fake.revocations(id) == 1).count();
    BatchedRun {
        concurrency: ceiling,
        default: concurrency.is_none(),
        parallel,
        actions: 2 * n,
        wall: stats.wall,
        exec,
        maxrss_kib: stats.maxrss_kib,
        counts,
        disabled,
        revoked,
    }
}

/// The naive executor: per action, GET the user then PATCH or POST, one request
/// at a time, retrying 429 after Retry-After.
async fn naive(fake: &FakeTenant, ids: &[String]) -> Duration {
    let http = reqwest::Client::new();
    let base = fake.base_url();
    let started = Instant::now();
    let tok: Value = http
        .post(fake.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let token = tok["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    for id in ids {
        for action in ["disable", "revoke"] {
            let get = format!(
                "{base}/v1.0/users/{id}?$select=id,userPrincipalName,userType,accountEnabled"
            );
            let user = send(&http, &token, reqwest::Method::GET, &get, None).await;
            assert_eq!(user.0, 200, "GET user");
            let (status, _) = if action == "disable" {
                send(
                    &http,
                    &token,
                    reqwest::Method::PATCH,
                    &format!("{base}/v1.0/users/{id}"),
                    Some(json!({"accountEnabled": false})),
                )
                .await
            } else {
                send(
                    &http,
                    &token,
                    reqwest::Method::POST,
                    &format!("{base}/v1.0/users/{id}/revokeSignInSessions"),
                    None,
                )
                .await
            };
            assert!((200..300).contains(&status), "{action}: {status}");
        }
    }
    started.elapsed()
}

async fn send(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    loop {
        let mut rb = http.request(method.clone(), url).bearer_auth(token);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        if status == 429 {
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(1.0);
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            continue;
        }
        let v = resp.json().await.unwrap_or(Value::Null);
        return (status, v);
    }
}

/// `max_concurrency` as a run label: the ceiling, and whether it is the default.
fn ceiling_label(r: &BatchedRun) -> String {
    format!(
        "{}{}",
        r.concurrency,
        if r.default { " (default)" } else { "" }
    )
}

pub fn run(ctx: &mut Ctx) {
    // (max_concurrency, None = the default settings; the fake serves a batch's
    // items in parallel); Graph does not say how it serves them, so both are
    // measured. BENCH_GRAPH_RUNS picks runs, e.g. "sd,pd,s4,p16" (s = one after
    // another, p = in parallel; d = default settings, a number = that
    // max_concurrency).
    let all: Vec<(Option<usize>, bool)> = if ctx.quick {
        vec![(None, false), (None, true)]
    } else {
        vec![
            (None, false),
            (None, true),
            (Some(16), false),
            (Some(16), true),
        ]
    };
    let concurrencies: Vec<(Option<usize>, bool)> = match std::env::var("BENCH_GRAPH_RUNS") {
        Err(_) => all,
        Ok(w) => w
            .split(',')
            .map(|x| {
                let x = x.trim();
                let parallel = x.starts_with('p');
                let c = &x[x.len().min(1)..];
                assert!(
                    x.starts_with(['s', 'p']) && (c == "d" || c.parse::<usize>().is_ok()),
                    "BENCH_GRAPH_RUNS: {x:?} is not s|p followed by d or a number"
                );
                (c.parse().ok(), parallel)
            })
            .collect(),
    };
    assert!(!concurrencies.is_empty(), "BENCH_GRAPH_RUNS picked no run");
    let (n, naive_n) = if ctx.quick { (200, 20) } else { (5_000, 250) };
    println!(
        "\n== graph: {n} identities x (disable_user + revoke_sessions) = {} actions, fake tenant with {} ms latency per request/batch item and {RATE} requests/s rate limit",
        2 * n,
        LATENCY.as_millis()
    );
    println!("reproduce: cargo bench --bench bench -- graph");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = rt.block_on(FakeTenant::start(scangen::TENANT_ID));
    fake.register_app_secret(CLIENT, SECRET);

    let mut runs = Vec::new();
    for (k, &(c, par)) in concurrencies.iter().enumerate() {
        println!(
            "\n-- batched executor (release binary, run --once, enforce), max_concurrency = {}, the fake serves a batch's items {}",
            c.map_or("the default".to_string(), |c| c.to_string()),
            if par {
                "in parallel"
            } else {
                "one after another"
            }
        );
        let r = batched_run(ctx, &fake, n, c, par, 0x1_0000_0000 * (k as u64 + 1));
        let useful = r.counts.items_ok;
        let http_reqs = r.counts.envelopes + r.counts.token + r.counts.direct;
        let throttle_bound = useful as f64 / RATE as f64;
        // One after another, a batch of 20 takes 20 x the latency; in parallel,
        // one latency. The client keeps at most max_concurrency batches in flight.
        let c = r.concurrency;
        let latency_bound = if par {
            useful.div_ceil(20) as f64 * LATENCY.as_secs_f64() / c as f64
        } else {
            useful as f64 * LATENCY.as_secs_f64() / c as f64
        };
        println!(
            "run --once wall {} (plan + record {} actions + execute), execution phase {} (first Graph request to exit), peak RSS {}",
            fmt_dur(r.wall),
            r.actions,
            fmt_dur(r.exec),
            kib_mib(r.maxrss_kib)
        );
        println!(
            "HTTP requests: {} ($batch envelopes {}, token {}, direct {}) carrying {} batch items ({} ok, {} throttled with 429; by method {:?})",
            http_reqs,
            r.counts.envelopes,
            r.counts.token,
            r.counts.direct,
            r.counts.items,
            r.counts.items_ok,
            r.counts.throttled,
            r.counts.by_method
        );
        println!(
            "HTTP requests per action: {:.4} (target <= {TARGET}): {}",
            http_reqs as f64 / r.actions as f64,
            verdict(http_reqs as f64 / r.actions as f64 <= TARGET)
        );
        println!(
            "lower bounds for {useful} successful items: throttle {useful}/{RATE}/s = {throttle_bound:.1} s; fake latency {useful} x {} ms / {c} batches in flight = {latency_bound:.1} s; execution / throttle bound = {:.2}x, / max(bounds) = {:.2}x",
            LATENCY.as_millis(),
            r.exec.as_secs_f64() / throttle_bound,
            r.exec.as_secs_f64() / throttle_bound.max(latency_bound)
        );
        println!(
            "outcome: {} of {n} users disabled, {} of {n} revoked once",
            r.disabled, r.revoked
        );
        // Envelopes beyond the floor of full batches: what retries cost.
        let floor = r.counts.items_ok.div_ceil(20);
        let writes_ok = r.counts.items_ok - r.counts.reads_ok;
        println!(
            "envelopes: {} = floor {floor} (successful items / 20: {} reads, {writes_ok} writes) + {} for retries; {:.1} items per envelope; every write sent once, none again after success: {}",
            r.counts.envelopes,
            r.counts.reads_ok,
            r.counts.envelopes.saturating_sub(floor),
            r.counts.items as f64 / r.counts.envelopes.max(1) as f64,
            verdict(
                writes_ok == 2 * n
                    && r.counts.reads_ok == r.counts.by_id_ok
                    && r.counts.by_id_ok == n.div_ceil(15)
            )
        );
        runs.push((r, throttle_bound, latency_bound, http_reqs));
    }

    println!(
        "\n-- naive executor: GET user + PATCH/POST per action, sequential, 429 retried after Retry-After; {naive_n} identities ({} actions), extrapolated linearly to {n}",
        2 * naive_n
    );
    let ids = user_ids(naive_n, 0x9_0000_0000);
    add_users(&fake, &ids);
    reset_faults(&fake, false);
    let naive_time = rt.block_on(naive(&fake, &ids));
    let nc = count(&fake.requests());
    let naive_reqs = nc.direct + nc.token;
    let done = ids
        .iter()
        .filter(|id| fake.user(id).is_some_and(|u| !u.account_enabled) && fake.revocations(id) == 1)
        .count();
    assert_eq!(done, naive_n, "naive executor did not finish every action");
    let per_action = naive_time.as_secs_f64() / (2 * naive_n) as f64;
    let extrapolated = per_action * (2 * n) as f64;
    println!(
        "naive: {} for {} actions ({:.1} ms/action, {} HTTP requests = {:.2} per action, {} throttled) -> {n} identities: {:.0} s (extrapolated)",
        fmt_dur(naive_time),
        2 * naive_n,
        per_action * 1e3,
        naive_reqs,
        naive_reqs as f64 / (2 * naive_n) as f64,
        nc.throttled,
        extrapolated
    );

    println!(
        "\n| executor | max_concurrency | batch items served | actions | HTTP requests | requests / action | batch items (throttled) | execution time | throttle bound | latency bound | exec / throttle bound | run --once wall | peak RSS |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (r, tb, lb, reqs) in &runs {
        println!(
            "| batched (binary) | {} | {} | {} | {} | {:.4} | {} ({}) | {} | {:.1} s | {:.1} s | {:.2}x | {} | {} |",
            ceiling_label(r),
            if r.parallel {
                "in parallel"
            } else {
                "in sequence"
            },
            r.actions,
            reqs,
            *reqs as f64 / r.actions as f64,
            r.counts.items,
            r.counts.throttled,
            fmt_dur(r.exec),
            tb,
            lb,
            r.exec.as_secs_f64() / tb,
            fmt_dur(r.wall),
            kib_mib(r.maxrss_kib)
        );
    }
    println!(
        "| naive (bench loop, {naive_n} identities, extrapolated) | 1 | - | {} | {} | {:.2} | - | {:.0} s (measured {}) | {:.1} s | {:.1} s | {:.2}x | - | - |",
        2 * n,
        naive_reqs * n / naive_n,
        naive_reqs as f64 / (2 * naive_n) as f64,
        extrapolated,
        fmt_dur(naive_time),
        runs[0].1,
        (4 * n) as f64 * LATENCY.as_secs_f64(),
        extrapolated / runs[0].1
    );
    let (d, tb, lb, reqs) = &runs[0];
    let line1 = format!(
        "graph: {} HTTP requests for {} actions = {:.4} per action (target <= {TARGET}): {}",
        reqs,
        d.actions,
        *reqs as f64 / d.actions as f64,
        verdict(*reqs as f64 / d.actions as f64 <= TARGET)
    );
    let line2 = format!(
        "graph: execution {} at max_concurrency {} vs throttle bound {:.1} s ({:.2}x; the fake's per-item latency bound is {:.1} s); naive one-at-a-time {:.0} s extrapolated = {:.1}x slower",
        fmt_dur(d.exec),
        ceiling_label(d),
        tb,
        d.exec.as_secs_f64() / tb,
        lb,
        extrapolated,
        extrapolated / d.exec.as_secs_f64()
    );
    println!("{line1}\n{line2}");
    ctx.summary.push(line1);
    ctx.summary.push(line2);
    for (r, tb, _, reqs) in runs.iter().skip(1) {
        let l = format!(
            "graph: at max_concurrency {}, items {}: execution {} vs throttle bound {:.1} s ({:.2}x), {:.4} requests per action ({} items throttled)",
            ceiling_label(r),
            if r.parallel {
                "in parallel"
            } else {
                "in sequence"
            },
            fmt_dur(r.exec),
            tb,
            r.exec.as_secs_f64() / tb,
            *reqs as f64 / r.actions as f64,
            r.counts.throttled
        );
        println!("{l}");
        ctx.summary.push(l);
    }
    drop(fake);
}
