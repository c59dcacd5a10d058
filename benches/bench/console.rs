//! Section `console`: the console's read models at the largest scan size
//! (100,000 identities; quick: 10,000), in this process, on a release build.
//!
//! The scan is loaded once into a `ScanView` through `ScanCache` (timed cold,
//! then as a cache hit); one run with 10,000 actions (quick: 2,000) is
//! recorded in a fresh SQLite store. Then each read is called 50 times and its
//! median and p99 printed: the dashboard, the largest finding's page 1 sorted
//! by risk and with a search, an identity page, and history pages (first, deep,
//! by person). Then the same pages are requested whole, through the console's
//! router (`console_pages`).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entra_remediator::config::Config;
use entra_remediator::domain::{ActionKind, ActionState, Mode, Reason};
use entra_remediator::service::history::actions_page;
use entra_remediator::service::posture::{
    AffectedQuery, SortKey, dashboard, finding_page, identity_page,
};
use entra_remediator::service::scan_view::{RANKING, ScanCache, ScanView};
use entra_remediator::store::{Filter, NewAction, NewRun, Store};

use crate::console_pages::{self, Subjects};
use crate::planning::config_text;
use crate::util::{self, fmt_dur};
use crate::{Ctx, copy_policies, scangen};

/// Calls per measured read (and requests per measured page).
pub const CALLS: usize = 50;

/// Median and p99 of a list of durations.
pub fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p99 = v[((v.len() * 99).div_ceil(100)).saturating_sub(1)];
    (v[v.len() / 2], p99)
}

/// Microseconds below a millisecond, else milliseconds.
pub fn fine(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// Times `CALLS` calls of `f` and prints a row.
fn measure<T>(name: &str, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        std::hint::black_box(f());
        times.push(t.elapsed());
    }
    let (med, p99) = stats(times);
    println!("  {name:<58} median {:>9}  p99 {:>9}", fine(med), fine(p99));
    (med, p99)
}

fn run_row(view: &ScanView, started_at: DateTime<Utc>) -> NewRun {
    NewRun {
        id: "console-bench".into(),
        tenant: "bench".into(),
        scan_source: view.loaded.source_name.clone(),
        scan_sha256: view.loaded.sha256.clone(),
        scanned_at: view.loaded.scan.scanned_at,
        rule_set_hash: "bench".into(),
        mode: "approval".into(),
        downgrades: vec![],
        identities: view.loaded.scan.identities.len() as i64,
        findings: view.loaded.scan.findings.len() as i64,
        started_at,
        actor: "Alice Admin".into(),
        kind: "scan".into(),
    }
}

/// `n` actions spread over the riskiest identities, in a mix of states.
fn actions(view: &ScanView, n: usize) -> Vec<NewAction> {
    let states = [
        ActionState::Pending,
        ActionState::Planned,
        ActionState::Refused,
        ActionState::Skipped,
    ];
    (0..n)
        .map(|i| {
            let ident = view
                .identity(view.ranked[i % view.ranked.len()])
                .expect("identity");
            let state = states[i % states.len()];
            NewAction {
                identity_id: ident.id.0.to_string(),
                identity_upn: ident.label().to_string(),
                identity_name: ident.display_name.clone(),
                kind: ActionKind::RevokeSessions.into(),
                targets: vec![],
                reasons: vec![Reason {
                    rule: "bench".into(),
                    finding: "bench".into(),
                    reason: "bench".into(),
                }],
                mode: Mode::Approval,
                state,
                state_reason: (state == ActionState::Refused).then(|| "guardrail".into()),
                expires_at: None,
            }
        })
        .collect()
}

pub fn run(ctx: &mut Ctx) {
    let n = ctx.largest();
    let recorded = if ctx.quick { 2_000 } else { 10_000 };
    println!("\n== console: the console's read models at {n} identities, {CALLS} calls each");
    println!("reproduce: cargo bench --bench bench -- console   (or BENCH_SECTIONS=console)");
    let (scan_path, _) = ctx.scan(n);
    let ws = ctx.subdir("console");
    copy_policies(&ws);
    std::fs::create_dir_all(ws.join("scans")).expect("scans");
    std::fs::copy(&scan_path, ws.join("scans/scan.json")).expect("copy scan");
    let cfg_path = ws.join("config.toml");
    std::fs::write(
        &cfg_path,
        config_text("", &console_pages::config_tables(&ws)),
    )
    .expect("config");
    let cfg = Config::load(&cfg_path).expect("load bench config");
    let now = DateTime::parse_from_rfc3339(scangen::SCANNED_AT)
        .expect("scanned_at")
        .with_timezone(&Utc)
        + chrono::Duration::hours(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cache = ScanCache::new(2);
    let t = Instant::now();
    let view = rt
        .block_on(cache.get(&cfg, "bench", None, now))
        .expect("load view");
    let cold = t.elapsed();
    let t = Instant::now();
    let hit = rt
        .block_on(cache.get(&cfg, "bench", None, now))
        .expect("hit");
    let warm = t.elapsed();
    assert!(std::sync::Arc::ptr_eq(&view, &hit));
    println!(
        "  ScanCache::get: first (load, parse, index) {}, then (cache hit) {}",
        fmt_dur(cold),
        fine(warm)
    );
    println!("  ranking: {RANKING}");

    let url = format!("sqlite://{}", ws.join("history.db").display());
    let shared: std::sync::Arc<dyn Store> = rt
        .block_on(entra_remediator::store::open(&url))
        .expect("store")
        .into();
    let store = shared.as_ref();
    let t = Instant::now();
    let run = run_row(&view, now);
    rt.block_on(store.record_run(&run, &actions(&view, recorded), &[]))
        .expect("record run");
    println!(
        "  recorded one run of {recorded} actions in {}",
        fmt_dur(t.elapsed())
    );

    let largest = view
        .by_finding
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(id, v)| (id.clone(), v.len()))
        .expect("a finding");
    let first_aff = view
        .identity(view.by_finding[&largest.0][0])
        .expect("affected");
    let q = first_aff
        .display_name
        .split_whitespace()
        .last()
        .unwrap_or("a")
        .to_lowercase();
    let top = view
        .identity(view.ranked[0])
        .expect("top")
        .label()
        .to_string();
    let by_risk = AffectedQuery {
        sort: SortKey::Risk,
        desc: true,
        per_page: 50,
        ..AffectedQuery::default()
    };
    let searched = AffectedQuery {
        q: Some(q.clone()),
        ..by_risk.clone()
    };
    let matched = finding_page(&view, &largest.0, &searched).map_or(0, |p| p.matched);
    let mut rows = Vec::new();
    rows.push(measure("dashboard()", || {
        rt.block_on(dashboard(store, &view)).expect("dashboard")
    }));
    rows.push(measure(
        &format!(
            "finding_page {} ({} affected), page 1 by risk",
            largest.0, largest.1
        ),
        || finding_page(&view, &largest.0, &by_risk).expect("page"),
    ));
    rows.push(measure(
        &format!("  the same, searching {q:?} ({matched} match)"),
        || finding_page(&view, &largest.0, &searched).expect("page"),
    ));
    rows.push(measure("  the same, by UPN ascending, page 30", || {
        let q = AffectedQuery {
            sort: SortKey::Upn,
            desc: false,
            page: 30,
            ..by_risk.clone()
        };
        finding_page(&view, &largest.0, &q).expect("page")
    }));
    rows.push(measure("identity_page (the riskiest identity)", || {
        rt.block_on(identity_page(store, &view, "bench", &top))
            .expect("identity page")
    }));
    let all = Filter::default();
    rows.push(measure(
        &format!("actions_page of {recorded}: page 1 of 50"),
        || {
            rt.block_on(actions_page(store, &all, 1, 50))
                .expect("history")
        },
    ));
    rows.push(measure("  page 100 of 50", || {
        rt.block_on(actions_page(store, &all, 100, 50))
            .expect("history")
    }));
    let alice = Filter {
        person: Some("alice admin".into()),
        ..Filter::default()
    };
    rows.push(measure(
        "  by person (the run's actor), page 1 of 50",
        || {
            rt.block_on(actions_page(store, &alice, 1, 50))
                .expect("history")
        },
    ));
    let top_id = view.identity(view.ranked[0]).expect("top").id.0.to_string();
    let subjects = Subjects {
        finding: largest.clone(),
        search: (q.clone(), matched),
        top: (top_id, top.clone()),
        recorded,
        actor: run.actor.clone(),
    };
    let worst = rows.iter().map(|r| r.1).max().unwrap_or_default();
    ctx.summary.push(format!(
        "console at {n} identities: load {}, slowest read p99 {} (target under 10 ms: {})",
        fmt_dur(cold),
        fine(worst),
        util::verdict(worst < Duration::from_millis(10)),
    ));
    // The pages load the scan into the console's own cache: free this copy.
    drop((hit, view, cache));
    console_pages::run(ctx, &rt, &cfg_path, shared, &subjects);
}
