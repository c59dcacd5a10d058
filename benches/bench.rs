//! Benchmarks for entra-remediator: scan generation, planning (time and peak
//! memory of the real binary against a bare JSON parse), the rule engine, Graph
//! execution against the fake tenant (batched versus naive), and the daemon's
//! memory and start-up time. See BENCHMARKS.md for the figures and how to read them.
//!
//! ```sh
//! cargo bench --bench bench                       # everything (about 7 minutes on 2 cores)
//! cargo bench --bench bench -- plan rules         # only some sections
//! BENCH_QUICK=1 cargo bench --bench bench         # small sizes, a smoke check (under a minute)
//! BENCH_SECTIONS=graph cargo bench --bench bench  # sections from the environment
//! BENCH_DIR=/tmp/eb cargo bench --bench bench     # keep the generated files to rerun printed commands
//! ```
//!
//! Sections: machine, gen, plan, rules, graph, daemon, scan, console, tenants
//! (tenants needs PostgreSQL: 127.0.0.1:5432 user postgres, or BENCH_POSTGRES_URL).

#[path = "bench/console.rs"]
mod console;
#[path = "bench/console_pages.rs"]
mod console_pages;
#[path = "bench/daemon.rs"]
mod daemon;
#[path = "bench/graph.rs"]
mod graph;
#[path = "bench/planning.rs"]
mod planning;
#[path = "bench/rules.rs"]
mod rules;
#[path = "bench/scan.rs"]
mod scan;
#[path = "bench/scangen.rs"]
mod scangen;
#[path = "bench/tenants.rs"]
mod tenants;
#[path = "bench/tenants_setup.rs"]
mod tenants_setup;
#[path = "bench/util.rs"]
mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const SECTIONS: &[&str] = &[
    "machine", "gen", "plan", "rules", "graph", "daemon", "scan", "console", "tenants",
];

/// What every section shares: options, the work directory, generated scans.
pub struct Ctx {
    /// BENCH_QUICK=1: small sizes.
    pub quick: bool,
    /// Where generated files go.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    scans: BTreeMap<usize, (PathBuf, scangen::GenStats)>,
    /// Lines for the closing summary.
    pub summary: Vec<String>,
}

impl Ctx {
    /// Identity counts of the scans the plan, rules and daemon sections use.
    pub fn sizes(&self) -> Vec<usize> {
        if self.quick {
            vec![1_000, 10_000]
        } else {
            vec![1_000, 10_000, 100_000]
        }
    }

    /// The largest size (where the targets are checked).
    pub fn largest(&self) -> usize {
        *self.sizes().last().expect("sizes")
    }

    /// The generated scan of `n` identities (generated once, then reused).
    pub fn scan(&mut self, n: usize) -> (PathBuf, scangen::GenStats) {
        if let Some(s) = self.scans.get(&n) {
            return s.clone();
        }
        let t = Instant::now();
        let (bytes, stats) = scangen::generate(n, scangen::SEED);
        let gen_time = t.elapsed();
        let dir = self.dir.join("scans");
        std::fs::create_dir_all(&dir).expect("scans dir");
        let path = dir.join(format!("scan-{n}.json"));
        std::fs::write(&path, &bytes).expect("write scan");
        println!(
            "generated {} in {} (seed {:#x}): {}",
            path.display(),
            util::fmt_dur(gen_time),
            scangen::SEED,
            scangen::describe(&stats)
        );
        self.scans.insert(n, (path.clone(), stats.clone()));
        (path, stats)
    }

    /// A fresh subdirectory of the work directory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("subdir");
        p
    }
}

/// Copies the shipped policies (rules and exceptions) into `dir/policies`.
pub fn copy_policies(dir: &Path) {
    let to = dir.join("policies");
    std::fs::create_dir_all(&to).expect("policies dir");
    for e in std::fs::read_dir(util::repo().join("policies")).expect("read policies") {
        let p = e.expect("entry").path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy policy");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(util::PARSE_ONLY) {
        util::parse_only_child(args.get(1).expect("file"));
        return;
    }
    if args.first().map(String::as_str) == Some(util::MEASURE) {
        util::measure_child(&args[1..]);
        return;
    }
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut wanted: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    if let Ok(s) = std::env::var("BENCH_SECTIONS") {
        wanted.extend(
            s.split([',', ' '])
                .filter(|x| !x.is_empty())
                .map(str::to_string),
        );
    }
    for w in &wanted {
        assert!(
            SECTIONS.contains(&w.as_str()),
            "unknown section {w:?}; sections are {}",
            SECTIONS.join(", ")
        );
    }
    let run = |s: &str| wanted.is_empty() || wanted.iter().any(|w| w == s);
    let (dir, tmp) = match std::env::var_os("BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).expect("BENCH_DIR");
            (std::fs::canonicalize(&d).expect("BENCH_DIR"), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("entra-bench-")
                .tempdir()
                .expect("tempdir");
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut ctx = Ctx {
        quick,
        dir,
        _tmp: tmp,
        scans: BTreeMap::new(),
        summary: Vec::new(),
    };
    let started = Instant::now();
    println!(
        "entra-remediator benchmarks{} (work dir {}; set BENCH_DIR to keep it)",
        if quick {
            " [BENCH_QUICK: small sizes]"
        } else {
            ""
        },
        ctx.dir.display()
    );
    if run("machine") {
        util::print_machine();
    }
    if run("gen") {
        println!("\n== gen: synthetic scans");
        println!("reproduce: cargo bench --bench bench -- gen");
        for n in ctx.sizes() {
            ctx.scan(n);
        }
    }
    if run("plan") {
        let t = Instant::now();
        planning::run(&mut ctx);
        println!(
            "[plan: {}, loadavg {}]",
            util::fmt_dur(t.elapsed()),
            util::loadavg()
        );
    }
    if run("rules") {
        let t = Instant::now();
        rules::run(&mut ctx);
        println!(
            "[rules: {}, loadavg {}]",
            util::fmt_dur(t.elapsed()),
            util::loadavg()
        );
    }
    if run("graph") {
        let t = Instant::now();
        graph::run(&mut ctx);
        println!(
            "[graph: {}, loadavg {}]",
            util::fmt_dur(t.elapsed()),
            util::loadavg()
        );
    }
    if run("daemon") {
        let t = Instant::now();
        daemon::run(&mut ctx);
        println!(
            "[daemon: {}, loadavg {}]",
            util::fmt_dur(t.elapsed()),
            util::loadavg()
        );
    }
    if run("scan") {
        let t = Instant::now();
        scan::run(&mut ctx);
        println!(
            "[scan: {}, loadavg {}]",
            util::fmt_dur(t.elapsed()),
            util::loadavg()
        );
    }
    if run("console") {
        let t = Instant::now();
        console::run(&mut ctx);
        println!(
            "[console: {}, loadavg {}]",
            util::fmt_dur(t.elapsed()),
            util::loadavg()
        );
    }
    if run("tenants") {
        let t = Instant::now();
        tenants::run(&mut ctx);
        println!(
            "[tenants: {}, loadavg {}]",
            util::fmt_dur(t.elapsed()),
            util::loadavg()
        );
    }
    println!("\n== summary");
    for l in &ctx.summary {
        println!("{l}");
    }
    println!("total bench time: {}", util::fmt_dur(started.elapsed()));
}
