//! Section `plan`: wall time and peak RSS of `entra-remediator plan --format json`
//! (the release binary as a child process, peak RSS from `wait4`'s `ru_maxrss`)
//! next to a bare parse of the same file into a `serde_json::Value`, in-process
//! (time) and in a child process (time and memory floor), plus an in-process
//! breakdown of where the plan's time goes.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_remediator::config::{Config, RuleLimits};
use entra_remediator::policy::RuleSet;
use entra_remediator::scan::{Scan, ScanRequest};
use entra_remediator::service::cycle::{RunOptions, TenantOutcome};

use sha2::{Digest, Sha256};

use crate::util::{self, ChildStats, fmt_dur, kib_mib, median, median_u64, mib, sh, verdict};
use crate::{Ctx, copy_policies, scangen};

/// The config the plan and daemon sections use: shipped policies, the
/// generated tenant, old scans accepted, break-glass accounts protected.
pub fn config_text(extra_top: &str, extra_tables: &str) -> String {
    format!(
        r#"{extra_top}
policies_dir = "policies"
max_scan_bytes = 2147483648
[store]
url = "sqlite://history.db"
[protected]
upns = ["{}", "{}"]
groups = ["Break Glass Accounts"]
{extra_tables}
[[tenant]]
name = "bench"
tenant_id = "{}"
max_scan_age = "100years"
source = {{ dir = "scans" }}
"#,
        scangen::BREAK_GLASS[0],
        scangen::BREAK_GLASS[1],
        scangen::TENANT_ID
    )
}

struct Row {
    n: usize,
    bytes: u64,
    value_parse: Duration,
    value_parse_cpu: Duration,
    typed_parse: Duration,
    digest: Duration,
    streamed: Duration,
    child_parse: ChildStats,
    child_parse_inner: Duration,
    plan: ChildStats,
    plan_min: Duration,
    in_process_plan: Duration,
    rules_load: Duration,
    evaluate: Duration,
    scan_free: Duration,
    calls: u64,
    proposals: usize,
    actions: usize,
}

pub fn run(ctx: &mut Ctx) {
    println!(
        "\n== plan: `plan --format json` (release binary, child process) vs a bare serde_json::Value parse"
    );
    let ws = ctx.subdir("plan");
    copy_policies(&ws);
    std::fs::create_dir_all(ws.join("scans")).expect("scans");
    let cfg_path = ws.join("config.toml");
    std::fs::write(&cfg_path, config_text("", "")).expect("config");
    let cfg = Config::load(&cfg_path).expect("load bench config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let me = std::env::current_exe().expect("current exe");
    println!(
        "config: {} (shipped policies copied to {})",
        cfg_path.display(),
        ws.join("policies").display()
    );
    let mut rows = Vec::new();
    for n in ctx.sizes() {
        let (path, stats) = ctx.scan(n);
        let bytes = std::fs::read(&path).expect("read scan");
        let reps = 5;

        // Bare parse into a Value, in this process (drop not timed).
        let mut vt = Vec::new();
        let mut vc = Vec::new();
        for _ in 0..reps {
            let (t, c) = (Instant::now(), util::thread_cpu());
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
            vt.push(t.elapsed());
            vc.push(util::thread_cpu() - c);
            drop(std::hint::black_box(v));
        }
        // The typed, validating loader the binary uses.
        let mut tt = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let s = Scan::from_slice(&bytes, "bench").expect("typed parse");
            tt.push(t.elapsed());
            drop(std::hint::black_box(s));
        }
        // The "already processed" digest alone, and a what-if: the typed parse
        // streamed from the file while hashing it (the file's bytes never all
        // in memory at once), against reading, hashing and parsing a slice.
        let t = Instant::now();
        std::hint::black_box(entra_remediator::scan::digest(&bytes));
        let digest = t.elapsed();
        let mut st = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let mut r = HashingReader {
                inner: std::io::BufReader::with_capacity(
                    1 << 16,
                    std::fs::File::open(&path).expect("open scan"),
                ),
                hasher: Sha256::new(),
            };
            let s: Scan = serde_json::from_reader(&mut r).expect("streamed parse");
            std::hint::black_box(r.hasher.finalize());
            st.push(t.elapsed());
            drop(std::hint::black_box(s));
        }
        // Bare parse in a child (this binary re-executed): the memory floor.
        let mut cps = Vec::new();
        for _ in 0..reps {
            let s = util::run_measured(
                Command::new(&me).args([util::PARSE_ONLY, path.to_str().expect("utf-8")]),
                true,
            );
            assert_eq!(s.code, 0, "parse-only child failed");
            cps.push(s);
        }
        // The real thing.
        let mut plans = Vec::new();
        for _ in 0..reps {
            let s = util::run_measured(
                Command::new(util::bin())
                    .current_dir(&ws)
                    .env_remove("ENTRA_REMEDIATOR_CONFIG")
                    .args(["plan", "--config"])
                    .arg(&cfg_path)
                    .arg("--scan")
                    .arg(&path)
                    .args(["--format", "json"]),
                false,
            );
            assert_eq!(s.code, 0, "plan exited {}: {}", s.code, s.stderr);
            plans.push(s);
        }
        // In-process breakdown.
        let t = Instant::now();
        let set = RuleSet::load(&ws.join("policies"), &RuleLimits::default()).expect("rules");
        let rules_load = t.elapsed();
        let scan = Arc::new(Scan::from_slice(&bytes, "bench").expect("scan"));
        let t = Instant::now();
        let eval = set.evaluate(&scan, None).expect("rule thread");
        let evaluate = t.elapsed();
        // What the one-shot commands save by leaving the scan to the OS at exit.
        let t = Instant::now();
        drop(scan);
        let scan_free = t.elapsed();
        let opts = RunOptions {
            tenant: Some("bench".into()),
            scan: ScanRequest {
                file: Some(path.clone()),
                scanned_at: None,
            },
            force: false,
            actor: "bench".into(),
            now: chrono::Utc::now(),
            keep_scans_until_exit: false,
        };
        let t = Instant::now();
        let outcomes = rt
            .block_on(entra_remediator::service::run::run(&cfg, None, &opts))
            .expect("in-process plan");
        let in_process_plan = t.elapsed();
        let actions = match outcomes.first() {
            Some(TenantOutcome::Planned { plan, .. }) => plan.actions.len(),
            _ => panic!("the bench scan was not planned"),
        };

        let child_ns = median_u64(
            cps.iter()
                .map(|s| {
                    s.stdout
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("parse_ns="))
                        .and_then(|v| v.parse().ok())
                        .expect("parse_ns from the child")
                })
                .collect(),
        );
        let pick = |v: &[ChildStats]| {
            let wall = median(v.iter().map(|s| s.wall).collect());
            let rss = median_u64(v.iter().map(|s| s.maxrss_kib).collect());
            ChildStats {
                wall,
                maxrss_kib: rss,
                cpu: median(v.iter().map(|s| s.cpu).collect()),
                code: 0,
                stdout: String::new(),
                stderr: String::new(),
            }
        };
        let row = Row {
            n,
            bytes: stats.bytes as u64,
            value_parse: median(vt),
            value_parse_cpu: median(vc),
            typed_parse: median(tt),
            digest,
            streamed: median(st),
            child_parse: pick(&cps),
            child_parse_inner: Duration::from_nanos(child_ns),
            plan_min: plans.iter().map(|s| s.wall).min().expect("reps"),
            plan: pick(&plans),
            in_process_plan,
            rules_load,
            evaluate,
            scan_free,
            calls: eval.calls,
            proposals: eval.proposals.len(),
            actions,
        };
        println!(
            "\n-- {n} identities, {} ({} reps, medians)",
            mib(row.bytes),
            reps
        );
        println!(
            "reproduce: {} plan --config {} --scan {} --format json > /dev/null   (cwd {})",
            sh(&util::bin()),
            sh(&cfg_path),
            sh(&path),
            sh(&ws)
        );
        println!(
            "plan (child):              wall {} (min {}), CPU user+sys {}, peak RSS {} = {:.2}x the file",
            fmt_dur(row.plan.wall),
            fmt_dur(row.plan_min),
            fmt_dur(row.plan.cpu),
            kib_mib(row.plan.maxrss_kib),
            (row.plan.maxrss_kib * 1024) as f64 / row.bytes as f64
        );
        println!(
            "bare Value parse (in-process): {} (thread CPU {})   -> plan / parse = {:.2}x wall, {:.2}x CPU",
            fmt_dur(row.value_parse),
            fmt_dur(row.value_parse_cpu),
            row.plan.wall.as_secs_f64() / row.value_parse.as_secs_f64(),
            row.plan.cpu.as_secs_f64() / row.value_parse_cpu.as_secs_f64()
        );
        println!(
            "bare Value parse (child, {} {} <file>): wall {} (parse alone {}), peak RSS {} = {:.2}x the file",
            sh(&me),
            util::PARSE_ONLY,
            fmt_dur(row.child_parse.wall),
            fmt_dur(row.child_parse_inner),
            kib_mib(row.child_parse.maxrss_kib),
            (row.child_parse.maxrss_kib * 1024) as f64 / row.bytes as f64
        );
        println!(
            "typed Scan::from_slice (in-process): {}; SHA-256 of the bytes {}; what-if, typed parse streamed from the file while hashing it: {}",
            fmt_dur(row.typed_parse),
            fmt_dur(row.digest),
            fmt_dur(row.streamed)
        );
        println!(
            "in-process breakdown: rules load {}, evaluate {} ({} calls, {} proposals, {:.0} ns/call), freeing the scan {}, whole plan without output {} -> {} actions",
            fmt_dur(row.rules_load),
            fmt_dur(row.evaluate),
            row.calls,
            row.proposals,
            row.evaluate.as_nanos() as f64 / row.calls.max(1) as f64,
            fmt_dur(row.scan_free),
            fmt_dur(row.in_process_plan),
            row.actions
        );
        rows.push(row);
    }

    println!(
        "\n| identities | file | bare parse (Value, in-process) wall / CPU | bare parse (child) wall / peak RSS | typed parse | plan wall (median) / CPU | plan / bare parse, wall (CPU) | plan peak RSS | RSS / file | actions |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} / {} | {} / {} | {} | {} / {} | {:.2}x ({:.2}x) | {} | {:.2}x | {} |",
            r.n,
            mib(r.bytes),
            fmt_dur(r.value_parse),
            fmt_dur(r.value_parse_cpu),
            fmt_dur(r.child_parse.wall),
            kib_mib(r.child_parse.maxrss_kib),
            fmt_dur(r.typed_parse),
            fmt_dur(r.plan.wall),
            fmt_dur(r.plan.cpu),
            r.plan.wall.as_secs_f64() / r.value_parse.as_secs_f64(),
            r.plan.cpu.as_secs_f64() / r.value_parse_cpu.as_secs_f64(),
            kib_mib(r.plan.maxrss_kib),
            (r.plan.maxrss_kib * 1024) as f64 / r.bytes as f64,
            r.actions
        );
    }
    println!(
        "\n| identities | rules load | evaluate | evaluate calls | ns / call | freeing the scan | in-process plan (no output) | child plan wall |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            r.n,
            fmt_dur(r.rules_load),
            fmt_dur(r.evaluate),
            r.calls,
            r.evaluate.as_nanos() as f64 / r.calls.max(1) as f64,
            fmt_dur(r.scan_free),
            fmt_dur(r.in_process_plan),
            fmt_dur(r.plan.wall)
        );
    }
    let r = rows.last().expect("rows");
    let time_ratio = r.plan.wall.as_secs_f64() / r.value_parse.as_secs_f64();
    let cpu_ratio = r.plan.cpu.as_secs_f64() / r.value_parse_cpu.as_secs_f64();
    let mem_ratio = (r.plan.maxrss_kib * 1024) as f64 / r.bytes as f64;
    let note = if ctx.quick {
        " (quick mode: checked below the target size of 100k)"
    } else {
        ""
    };
    let l1 = format!(
        "plan CPU time at {} identities: {} vs bare parse {} = {:.2}x (target <= 2x, issue 11): {}; wall {} vs {} = {:.2}x{note}",
        r.n,
        fmt_dur(r.plan.cpu),
        fmt_dur(r.value_parse_cpu),
        cpu_ratio,
        verdict(cpu_ratio <= 2.0),
        fmt_dur(r.plan.wall),
        fmt_dur(r.value_parse),
        time_ratio
    );
    let l2 = format!(
        "plan peak RSS at {} identities: {} for a {} file = {:.2}x (target <= 2x, issue 11): {}; bare-parse child floor {:.2}x{note}",
        r.n,
        kib_mib(r.plan.maxrss_kib),
        mib(r.bytes),
        mem_ratio,
        verdict(mem_ratio <= 2.0),
        (r.child_parse.maxrss_kib * 1024) as f64 / r.bytes as f64
    );
    println!("{l1}\n{l2}");
    ctx.summary.push(l1);
    ctx.summary.push(l2);
}

/// A reader that hashes what passes through it: the what-if of hashing a scan
/// while it is parsed from the file.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
