//! Section `scan`: the built-in posture scan (`scan --tenant T`) of a big
//! fake tenant through Microsoft Graph.
//!
//! `FakeTenant::generate(100_000)` (quick: 10,000) with 50 ms latency on every
//! Graph request and `$batch` item and Graph's documented resource-unit budget
//! for a tenant of that size. The release binary scans it as a measured child
//! (wall time, peak RSS through the launcher). Printed: the requests by route
//! against the floor the data needs at the documented page sizes, the wall time
//! against the throttle and latency bounds, peak RSS against the scan file and
//! per user (and its growth from a half-size tenant, to show that pages are not
//! kept), and the finding counts against the fake's own records of each user.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fake_entra::{FakeTenant, Fault, Generated, RecordedRequest};
use serde_json::{Value, json};

use crate::Ctx;
use crate::scangen;
use crate::util::{self, fmt_dur, kib_mib, mib, sh};

const CLIENT: &str = "00000000-0000-0000-0000-0000000005ca";
const SECRET: &str = "bench-scan-secret-0123456789abcdef";
/// Latency injected on every Graph request and batch item.
const LATENCY: Duration = Duration::from_millis(50);
/// Page sizes the scan asks for (or the fake's own, where Graph sets them).
const USERS_PAGE: usize = 500;
const REGISTRATION_PAGE: usize = 1_000;
const GROUPS_PAGE: usize = 999;
const MEMBERS_PAGE: usize = 999;
const RISKY_PAGE: usize = 500;
/// The fake's default page size, for listings read without `$top`.
const DEFAULT_PAGE: usize = 100;
/// `$batch` items per envelope and envelopes in flight (the client's defaults).
const BATCH: usize = 20;
const STALE_DAYS: i64 = 90;

/// The scan's identity resources and their documented resource-unit costs
/// (Graph's identity and access table: GET users 2, GET group members 3, any
/// other identity request 1; `$select` -1, `$expand` +1, `$top` < 20 -1; never
/// below 1). `None`: not an identity resource (reports, identity protection,
/// role management), not charged.
fn resource_units(r: &RecordedRequest) -> Option<u32> {
    let path = r.path.strip_prefix("/v1.0")?.to_ascii_lowercase();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let identity = [
        "users",
        "groups",
        "organization",
        "directoryobjects",
        "serviceprincipals",
        "applications",
    ];
    if !segs.first().is_some_and(|s| identity.contains(s)) {
        return None;
    }
    let get = r.method == "GET";
    let mut c: i64 = match segs.as_slice() {
        ["users"] | ["applications"] if get => 2,
        ["groups", _, "members"] if get => 3,
        ["groups", _, "transitivemembers"] if get => 5,
        _ => 1,
    };
    let params: Vec<(String, String)> = r
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.replace("%24", "$").to_ascii_lowercase(), v.to_string()))
        .collect();
    let has = |k: &str| params.iter().any(|(p, _)| p == k);
    if has("$select") {
        c -= 1;
    }
    if has("$expand") {
        c += 1;
    }
    if params
        .iter()
        .any(|(p, v)| p == "$top" && v.parse::<u32>().is_ok_and(|t| t < 20))
    {
        c -= 1;
    }
    Some(c.max(1) as u32)
}

/// The route a recorded request belongs to.
fn route(r: &RecordedRequest) -> &'static str {
    if r.path.contains("/oauth2/") {
        return "token";
    }
    if r.path.ends_with("/$batch") {
        return "$batch envelopes";
    }
    let p = r.path.to_ascii_lowercase();
    let p = p.strip_prefix("/v1.0").unwrap_or(&p);
    match p {
        "/users" => "users pages (signInActivity)",
        "/organization" => "organization",
        "/groups" => "groups pages",
        "/reports/authenticationmethods/userregistrationdetails" => "registration details pages",
        "/identityprotection/riskyusers" => "riskyUsers pages",
        "/rolemanagement/directory/roledefinitions" => "role definitions",
        "/rolemanagement/directory/roleassignments" => "role assignments",
        "/rolemanagement/directory/roleeligibilityschedules" => "eligibility schedules",
        "/rolemanagement/directory/roleassignmentschedules" => "assignment schedules",
        _ if p.starts_with("/groups/") && p.ends_with("/members") => {
            if r.in_batch {
                "members first pages ($batch items)"
            } else {
                "members further pages"
            }
        }
        _ => "other",
    }
}

/// What the data needs at the documented page sizes.
struct Floor {
    rows: Vec<(&'static str, usize)>,
    /// Sequential pages of the longest chain, in latency units.
    chain: Vec<(&'static str, usize)>,
}

fn pages(n: usize, size: usize) -> usize {
    n.div_ceil(size).max(1)
}

fn floor(fake: &FakeTenant, g: &Generated) -> Floor {
    let groups = fake.groups();
    let first = groups.len();
    let further: usize = groups
        .iter()
        .map(|gr| pages(fake.members(&gr.id).len(), MEMBERS_PAGE) - 1)
        .sum();
    let users = pages(g.users, USERS_PAGE);
    let registration = pages(g.users, REGISTRATION_PAGE);
    let rows = vec![
        ("token", 1),
        ("users pages (signInActivity)", users),
        ("registration details pages", registration),
        ("riskyUsers pages", pages(g.risky, RISKY_PAGE)),
        ("organization", 1),
        ("role definitions", 1),
        ("role assignments", pages(g.role_assignments, DEFAULT_PAGE)),
        (
            "eligibility schedules",
            pages(g.eligibilities, DEFAULT_PAGE),
        ),
        (
            "assignment schedules",
            pages(g.role_assignments, DEFAULT_PAGE),
        ),
        ("groups pages", pages(g.groups, GROUPS_PAGE)),
        ("$batch envelopes", first.div_ceil(BATCH)),
        ("members first pages ($batch items)", first),
        ("members further pages", further),
    ];
    // Listings run side by side; within one, pages follow each other. The
    // members: the groups page, one $batch (its items answered one after
    // another), then each group's further pages, group after group.
    let chain = vec![
        ("users", users),
        ("registration details", registration),
        (
            "groups + members",
            pages(g.groups, GROUPS_PAGE) + first.min(BATCH) + further,
        ),
    ];
    Floor { rows, chain }
}

/// One measured scan.
struct Run {
    users: usize,
    wall: Duration,
    maxrss_kib: u64,
    cpu: Duration,
    report: Value,
    file_bytes: u64,
    by_route: BTreeMap<&'static str, usize>,
    throttled: usize,
    units: u64,
    budget: u32,
    floor: Floor,
    http: usize,
    graph_calls: usize,
    load: (String, String),
    checks: Vec<(String, usize, usize, usize)>,
    identities_ok: bool,
    page_bytes_per_user: f64,
    page_values_per_user: f64,
    reading_kib: u64,
    samples: usize,
}

fn config(fake: &FakeTenant, protected: &[String]) -> String {
    let ids: Vec<String> = protected.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        r#"policies_dir = "policies"
[store]
url = "sqlite://history.db"
[protected]
ids = [{ids}]
[[tenant]]
name = "bench"
tenant_id = "{tid}"
max_scan_age = "100years"
source = {{ dir = "scans" }}
[tenant.graph]
authority = "{base}"
graph_url = "{base}"
client_id = "{CLIENT}"
client_secret_file = "secret"
"#,
        ids = ids.join(", "),
        tid = scangen::TENANT_ID,
        base = fake.base_url()
    )
}

/// Affected ids of each finding in the written scan.
fn affected(scan: &Value) -> HashMap<String, HashSet<String>> {
    let mut out = HashMap::new();
    for f in scan["findings"].as_array().into_iter().flatten() {
        let set = f["affected_identities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        out.insert(f["id"].as_str().unwrap_or("").to_string(), set);
    }
    out
}

fn time(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The expected affected sets, from the fake's own record of each user (never
/// from the scan's fields): (check, expected set, Generated's count).
fn expected(
    fake: &FakeTenant,
    g: &Generated,
    ids: &[String],
    read_at: DateTime<Utc>,
) -> Vec<(&'static str, HashSet<String>, usize)> {
    let cutoff = read_at - chrono::Duration::days(STALE_DAYS);
    let protected: HashSet<&String> = g.break_glass.iter().collect();
    let mut role_holders: HashSet<String> = HashSet::new();
    let assignable: HashSet<String> = fake
        .groups()
        .into_iter()
        .filter(|gr| gr.is_assignable_to_role)
        .map(|gr| gr.id)
        .collect();
    let principals = fake
        .role_assignments()
        .into_iter()
        .map(|a| a.principal_id)
        .chain(fake.eligibilities().into_iter().map(|e| e.principal_id));
    for p in principals {
        if assignable.contains(&p) {
            role_holders.extend(fake.members(&p));
        } else {
            role_holders.insert(p);
        }
    }
    let (mut stale, mut mfa, mut risk, mut guest) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    for id in ids {
        if protected.contains(id) {
            continue;
        }
        let (Some(u), Some(d)) = (fake.user(id), fake.user_details(id)) else {
            continue;
        };
        let on = u.account_enabled;
        let last = d.sign_in.as_ref().map(|s| {
            time(s.last_successful.as_deref())
                .or_else(|| time(s.last.as_deref()).max(time(s.last_non_interactive.as_deref())))
        });
        let is_stale = match last {
            Some(Some(t)) => t < cutoff,
            Some(None) | None => time(d.created.as_deref()).is_some_and(|c| c < cutoff),
        };
        if on && is_stale {
            stale.insert(id.clone());
        }
        if on && !d.registration.as_ref().is_some_and(|r| r.is_mfa_registered) {
            mfa.insert(id.clone());
        }
        if on
            && d.risk
                .as_ref()
                .is_some_and(|r| r.level == "high" && r.state == "atRisk")
        {
            risk.insert(id.clone());
        }
        if u.user_type == "Guest" && role_holders.contains(id) {
            guest.insert(id.clone());
        }
    }
    vec![
        ("ER-STALE-003", stale, g.stale),
        ("ER-MFA-001", mfa, g.without_mfa),
        ("ER-RISK-005", risk, g.high_risk_at_risk),
        ("ER-GUEST-004", guest, 0),
    ]
}

/// Bytes per user of the JSON pages Graph sends (users with signInActivity,
/// registration details), read once from the fake.
async fn page_bytes_per_user(fake: &FakeTenant) -> (f64, Vec<Vec<Value>>) {
    let http = reqwest::Client::new();
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
    let token = tok["access_token"].as_str().expect("access_token");
    let base = fake.base_url();
    let (mut per_user, mut items) = (0.0, Vec::new());
    for path in [
        "/v1.0/users?$select=id,userPrincipalName,displayName,userType,accountEnabled,onPremisesSyncEnabled,createdDateTime,signInActivity&$top=500",
        "/v1.0/reports/authenticationMethods/userRegistrationDetails",
    ] {
        let body = http
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("page")
            .bytes()
            .await
            .expect("page body");
        let mut v: Value = serde_json::from_slice(&body).expect("page json");
        let page = match v["value"].take() {
            Value::Array(a) if !a.is_empty() => a,
            _ => panic!("empty page from {path}"),
        };
        per_user += body.len() as f64 / page.len() as f64;
        items.push(page);
    }
    (per_user, items)
}

fn scan_once(ctx: &Ctx, rt: &tokio::runtime::Runtime, n: usize) -> Run {
    let fake = rt.block_on(FakeTenant::start(scangen::TENANT_ID));
    fake.register_app_secret(CLIENT, SECRET);
    let t = Instant::now();
    let g = fake.generate(n, scangen::SEED);
    let budget = FakeTenant::documented_resource_unit_budget(g.users);
    println!(
        "\n-- {} users ({} generated + {} break-glass) in {}: {} guests, {} disabled, {} stale, {} never signed in, {} without MFA, {} risky ({} high atRisk), {} groups with {} memberships, {} role assignments, {} eligibilities",
        g.users,
        n,
        g.break_glass.len(),
        fmt_dur(t.elapsed()),
        g.guests,
        g.disabled,
        g.stale,
        g.never_signed_in,
        g.without_mfa,
        g.risky,
        g.high_risk_at_risk,
        g.groups,
        g.memberships,
        g.role_assignments,
        g.eligibilities
    );
    let ws = ctx.subdir(&format!("scan-{n}"));
    std::fs::create_dir_all(ws.join("scans")).expect("scans dir");
    crate::copy_policies(&ws);
    std::fs::write(ws.join("secret"), SECRET).expect("secret");
    let cfg_path = ws.join("config.toml");
    std::fs::write(&cfg_path, config(&fake, &g.break_glass)).expect("config");
    fake.clear_faults();
    fake.clear_requests();
    fake.inject(Fault::Latency {
        matching: String::new(),
        delay: LATENCY,
    });
    fake.inject(Fault::ResourceUnits { per_10s: budget });
    println!(
        "reproduce (needs the fake running; the bench starts one in-process): {} scan --tenant bench --format json --config {}   (cwd {})",
        sh(&util::bin()),
        sh(&cfg_path),
        sh(&ws)
    );
    let load_before = util::loadavg();
    let mut cmd = Command::new(util::bin());
    cmd.current_dir(&ws)
        .env_remove("ENTRA_REMEDIATOR_CONFIG")
        .args(["scan", "--tenant", "bench", "--format", "json", "--config"])
        .arg(&cfg_path);
    let waiter = std::thread::spawn(move || util::run_measured(&mut cmd, true));
    // The child's RSS while it runs, with the number of requests the fake had
    // received by then: what it holds while reading, apart from building and writing.
    let marker = cfg_path.display().to_string();
    let (mut pid, mut samples) = (None, Vec::new());
    while !waiter.is_finished() {
        if pid.is_none() {
            pid = find_pid(&marker);
        }
        if let Some((rss, _)) = pid.and_then(util::proc_mem) {
            samples.push((rss, fake.requests().len()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = waiter.join().expect("scan waiter");
    let load_after = util::loadavg();
    std::fs::write(ws.join("scan.log"), &stats.stderr).expect("scan.log");
    assert_eq!(
        stats.code, 0,
        "scan failed: {}\n{}",
        stats.stderr, stats.stdout
    );
    let report: Value = serde_json::from_str(stats.stdout.trim()).expect("scan report json");
    let reqs = fake.requests();
    // Reading: until the fake has seen every request; the rest is building and writing.
    let reading_kib = samples
        .iter()
        .filter(|(_, seen)| *seen < reqs.len())
        .map(|(rss, _)| *rss)
        .max()
        .unwrap_or(0);
    let mut by_route: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut throttled, mut units, mut graph_calls, mut http) = (0, 0u64, 0, 0);
    for r in &reqs {
        *by_route.entry(route(r)).or_default() += 1;
        throttled += usize::from(r.status == 429);
        if r.status != 429 {
            units += u64::from(resource_units(r).unwrap_or(0));
        }
        if !r.in_batch {
            http += 1;
        }
        if !r.path.contains("/oauth2/") && !r.path.ends_with("/$batch") {
            graph_calls += 1;
        }
    }
    let file = report["path"].as_str().expect("report path").to_string();
    let file_bytes = std::fs::metadata(&file).expect("scan file").len();
    let scan: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read scan")).expect("scan json");
    let ids: Vec<String> = scan["identities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    let identities_ok = ids.len() == g.users
        && unique.len() == ids.len()
        && ids.iter().all(|id| fake.user(id).is_some());
    let read_at = time(scan["scanned_at"].as_str()).expect("scanned_at");
    let found = affected(&scan);
    let checks = expected(&fake, &g, &ids, read_at)
        .into_iter()
        .map(|(check, want, generated)| {
            let got = found.get(check).cloned().unwrap_or_default();
            let diff = got.symmetric_difference(&want).count();
            println!(
                "{check}: scan {} affected, expected from the fake's records {} (differing ids: {diff}); Generated counts {generated} (all accounts, disabled ones included)",
                got.len(),
                want.len()
            );
            (check.to_string(), got.len(), want.len(), diff)
        })
        .collect();
    let (page_bytes_per_user, page_items) = rt.block_on(page_bytes_per_user(&fake));
    let page_values_per_user = values_bytes_per_user(ctx, &page_items, g.users.min(20_000));
    let floor = floor(&fake, &g);
    drop(fake);
    Run {
        users: g.users,
        wall: stats.wall,
        maxrss_kib: stats.maxrss_kib,
        cpu: stats.cpu,
        report,
        file_bytes,
        by_route,
        throttled,
        units,
        budget,
        floor,
        http,
        graph_calls,
        load: (load_before, load_after),
        checks,
        identities_ok,
        page_bytes_per_user,
        page_values_per_user,
        reading_kib,
        samples: samples.len(),
    }
}

/// The pid of the scan child (not its launcher): the process whose command
/// line names `marker` (its config path) and the binary.
fn find_pid(marker: &str) -> Option<u32> {
    let bin = util::bin().display().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains(marker) && cmd.starts_with(&bin) && !cmd.contains(util::MEASURE) {
            return Some(pid);
        }
    }
    None
}

/// Bytes per user that one users page item and one registration item take
/// held as parsed JSON values (what keeping Graph's pages would cost): the
/// parse-only child's peak RSS for `n` users' items, less that for one user's
/// and less the file itself.
fn values_bytes_per_user(ctx: &Ctx, items: &[Vec<Value>], n: usize) -> f64 {
    let dir = ctx.subdir("scan-pages");
    let peak = |count: usize| {
        let mut all = Vec::new();
        for (k, page) in items.iter().enumerate() {
            for i in 0..count {
                let mut v = page[i % page.len()].clone();
                v["id"] = json!(format!("{k:08x}-0000-4000-8000-{i:012x}"));
                all.push(v);
            }
        }
        let bytes = serde_json::to_vec(&json!({ "value": all })).expect("pages json");
        let path = dir.join(format!("pages-{count}.json"));
        std::fs::write(&path, &bytes).expect("pages file");
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.arg(util::PARSE_ONLY).arg(&path);
        let s = util::run_measured(&mut cmd, false);
        assert_eq!(s.code, 0, "parse-only child failed: {}", s.stderr);
        (s.maxrss_kib as f64 * 1024.0, bytes.len() as f64)
    };
    let (base, _) = peak(1);
    let (full, file) = peak(n);
    (full - base - file).max(0.0) / n as f64
}

/// Peak RSS of the parse-only child holding `n` member items of a members
/// page as parsed JSON values (what a listing read whole keeps), less that of
/// an empty listing and the file's own bytes: MiB.
fn member_values_mib(ctx: &Ctx, n: usize) -> f64 {
    let dir = ctx.subdir("scan-members");
    let peak = |count: usize| {
        let items: Vec<Value> = (0..count)
            .map(|i| json!({"@odata.type": "#microsoft.graph.user", "id": format!("{i:08x}-0000-4000-8001-{i:012x}")}))
            .collect();
        let path = dir.join(format!("members-{count}.json"));
        let bytes = serde_json::to_vec(&json!({ "value": items })).expect("members json");
        std::fs::write(&path, &bytes).expect("members file");
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.arg(util::PARSE_ONLY).arg(&path);
        let s = util::run_measured(&mut cmd, false);
        assert_eq!(s.code, 0, "parse-only child failed: {}", s.stderr);
        (s.maxrss_kib as f64 * 1024.0, bytes.len() as f64)
    };
    let (base, _) = peak(1);
    let (full, file) = peak(n);
    (full - base - file).max(0.0) / (1024.0 * 1024.0)
}

pub fn run(ctx: &mut Ctx) {
    let (big, half) = if ctx.quick {
        (10_000, 5_000)
    } else {
        (100_000, 50_000)
    };
    println!(
        "\n== scan: built-in posture scan of a generated fake tenant of {big} users (and {half} for the memory slope), {} ms latency per Graph request and $batch item, the documented resource-unit budget",
        LATENCY.as_millis()
    );
    println!(
        "reproduce: BENCH_SECTIONS=scan cargo bench --bench bench{}",
        if ctx.quick {
            "   (with BENCH_QUICK=1)"
        } else {
            ""
        }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let small = scan_once(ctx, &rt, half);
    let r = scan_once(ctx, &rt, big);

    println!("\n-- requests at {} users", r.users);
    println!("| route | requests | floor |");
    println!("|---|---:|---:|");
    let mut floor_total = 0;
    for (name, want) in &r.floor.rows {
        let got = r.by_route.get(name).copied().unwrap_or(0);
        floor_total += want;
        println!("| {name} | {got} | {want} |");
    }
    for (name, got) in &r.by_route {
        if !r.floor.rows.iter().any(|(n, _)| n == name) {
            println!("| {name} | {got} | - |");
        }
    }
    let total: usize = r.by_route.values().sum();
    println!("| all (batch items counted) | {total} | {floor_total} |");
    let reported = r.report["requests"].as_u64().unwrap_or(0);
    println!(
        "HTTP requests {} (batch items inside envelopes not counted); Graph calls {} (batch items counted, token and envelopes not); the binary reported {reported} requests ({}); {} answered 429",
        r.http,
        r.graph_calls,
        if reported as usize == r.graph_calls {
            "equal to the fake's count"
        } else {
            "DIFFERENT from the fake's count"
        },
        r.throttled
    );

    let lat = LATENCY.as_secs_f64();
    let throttle_bound = r.units as f64 / f64::from(r.budget) * 10.0;
    let (chain_name, chain) = r
        .floor
        .chain
        .iter()
        .max_by_key(|(_, c)| *c)
        .copied()
        .unwrap_or(("none", 0));
    let latency_bound = chain as f64 * lat;
    let wall = r.wall.as_secs_f64();
    let graph_ms = r.report["duration_ms"].as_u64().unwrap_or(0) as f64 / 1e3;
    println!(
        "\n-- time at {} users: wall {} (process start to exit; the reading itself {:.3} s as the binary reports), CPU {}",
        r.users,
        fmt_dur(r.wall),
        graph_ms,
        fmt_dur(r.cpu)
    );
    println!(
        "throttle bound: {} resource units charged (documented costs over the request table) / {} per 10 s = {throttle_bound:.2} s",
        r.units, r.budget
    );
    println!(
        "latency bound: longest sequential chain {chain_name} = {chain} x {} ms = {latency_bound:.2} s (chains: {:?})",
        LATENCY.as_millis(),
        r.floor.chain
    );
    let bound = throttle_bound.max(latency_bound);
    println!(
        "wall / max(bounds) = {:.2}x; reading / max(bounds) = {:.2}x",
        wall / bound,
        graph_ms / bound
    );

    let kib_per_user = |x: &Run| x.maxrss_kib as f64 * 1024.0 / x.users as f64;
    let slope =
        (r.maxrss_kib as f64 - small.maxrss_kib as f64) * 1024.0 / (r.users - small.users) as f64;
    let file_per_user = r.file_bytes as f64 / r.users as f64;
    let members_mib = member_values_mib(ctx, r.users * 95 / 100);
    let reading_slope =
        (r.reading_kib as f64 - small.reading_kib as f64) * 1024.0 / (r.users - small.users) as f64;
    println!("\n-- memory");
    println!(
        "| users | peak RSS | bytes per user | RSS while reading (peak, {} ms samples) | scan file | file bytes per user | peak RSS / file | wall | loadavg before -> after |",
        20
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for x in [&small, &r] {
        println!(
            "| {} | {} | {:.0} | {} ({} samples) | {} | {:.0} | {:.2} | {} | {} -> {} |",
            x.users,
            kib_mib(x.maxrss_kib),
            kib_per_user(x),
            kib_mib(x.reading_kib),
            x.samples,
            mib(x.file_bytes),
            x.file_bytes as f64 / x.users as f64,
            x.maxrss_kib as f64 * 1024.0 / x.file_bytes as f64,
            fmt_dur(x.wall),
            x.load.0,
            x.load.1
        );
    }
    println!(
        "slope {} -> {} users: peak RSS {slope:.0} bytes per added user, RSS while reading {reading_slope:.0} bytes per added user",
        small.users, r.users
    );
    println!(
        "per user, for comparison: the written scan {file_per_user:.0} bytes; Graph's JSON pages {:.0} bytes (a users page with signInActivity + a registration details page); those pages held as parsed JSON values {:.0} bytes (parse-only child)",
        r.page_bytes_per_user, r.page_values_per_user
    );
    println!(
        "the largest group's members (about 95% of users) held as parsed JSON values (as a listing read whole keeps them) take {members_mib:.1} MiB ({:.0} bytes per member; parse-only child, peak RSS less an empty listing and the file)",
        members_mib * 1024.0 * 1024.0 / (r.users * 95 / 100) as f64
    );

    println!("\n-- correctness");
    let ident = r.report["identities"].as_u64().unwrap_or(0);
    println!(
        "identities: scan {ident}, Generated.users {} (every id a user of the fake, none twice: {})",
        r.users, r.identities_ok
    );
    println!(
        "findings: {}; not evaluated: {}",
        r.report["findings"], r.report["not_evaluated"]
    );
    let checks_ok = r.checks.iter().all(|(_, _, _, d)| *d == 0);
    println!("the four checks' affected sets equal the fake's records: {checks_ok}");

    let line1 = format!(
        "scan: {} users: {} Graph calls + {} envelopes + token (floor {floor_total} in all), wall {} vs max(throttle {throttle_bound:.1} s, latency {latency_bound:.1} s) = {:.2}x, peak RSS {} ({:.0} B/user, slope {slope:.0} B/user from {} users), scan file {}",
        r.users,
        r.graph_calls,
        r.by_route.get("$batch envelopes").copied().unwrap_or(0),
        fmt_dur(r.wall),
        wall / bound,
        kib_mib(r.maxrss_kib),
        kib_per_user(&r),
        small.users,
        mib(r.file_bytes)
    );
    let line2 = format!(
        "scan: identities {} of {} ({}), stale/no-MFA/high-risk/guest-with-roles affected sets equal the fake's records: {checks_ok}",
        ident,
        r.users,
        if r.identities_ok { "ok" } else { "WRONG" }
    );
    println!("{line1}\n{line2}");
    ctx.summary.push(line1);
    ctx.summary.push(line2);
}
