//! Bytes -> rule files + a small scan -> `RuleSet::from_sources` with small
//! sandbox limits -> `evaluate`. Must never panic, abort or run past the limits.
//!
//! Input layout: `RULES [0x00 SCAN]`. RULES is split on 0x01 into at most three
//! rule files (`r0.rhai`, `r1.rhai`, ...). SCAN, when present and accepted by
//! `Scan::from_slice`, is the scan; otherwise the bundled example scan is used
//! (whose finding ids the shipped rules name). Either way the scan is cut down
//! to at most `MAX_PAIRS` (finding, identity) pairs so one input stays bounded.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use entra_remediator::config::RuleLimits;
use entra_remediator::policy::{PolicyError, RuleSet};
use entra_remediator::scan::Scan;
use libfuzzer_sys::fuzz_target;

const MAX_RULES: usize = 3;
const MAX_PAIRS: usize = 12;
const MAX_IDENTITIES: usize = 64;

fn limits() -> RuleLimits {
    RuleLimits {
        max_operations: 20_000,
        timeout_ms: 50,
        max_call_depth: 16,
        max_string_size: 4 * 1024,
        max_array_size: 256,
        max_map_size: 256,
    }
}

fn example() -> &'static Scan {
    static EXAMPLE: OnceLock<Scan> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let bytes = include_bytes!("../../examples/scans/contoso-2026-11-20.json");
        Scan::from_slice(bytes, "example.json").expect("the bundled example scan loads")
    })
}

/// Caps the pairs `evaluate` will visit; keeps every reference valid.
fn bounded(mut scan: Scan) -> Option<Scan> {
    if scan.identities.len() > MAX_IDENTITIES {
        return None;
    }
    let mut budget = MAX_PAIRS;
    for f in &mut scan.findings {
        let keep = f.affected_identities.len().min(budget);
        f.affected_identities.truncate(keep);
        budget -= keep;
    }
    Some(scan)
}

fuzz_target!(|data: &[u8]| {
    let (rules, scan_bytes) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let scan = scan_bytes
        .and_then(|b| Scan::from_slice(b, "fuzz.json").ok())
        .and_then(bounded)
        .unwrap_or_else(|| bounded(example().clone()).expect("example is small enough"));
    let sources: Vec<(PathBuf, String)> = rules
        .split(|b| *b == 1)
        .take(MAX_RULES)
        .enumerate()
        .map(|(i, text)| {
            (
                PathBuf::from(format!("r{i}.rhai")),
                String::from_utf8_lossy(text).into_owned(),
            )
        })
        .collect();
    let n_sources = sources.len();
    let limits = limits();
    let timeout = Duration::from_millis(limits.timeout_ms);
    // Generous: the per-call limit, for every call, plus slack for a loaded machine
    // and sanitizer overhead. A rule that ignores the limits blows through this.
    let budget = |calls: u64| timeout * 4 * (calls as u32 + 1) + Duration::from_secs(3);

    let started = Instant::now();
    let set = match RuleSet::from_sources(sources, &limits) {
        Ok(set) => set,
        Err(e) => {
            assert!(matches!(e, PolicyError::Invalid(ref v) if !v.is_empty()));
            let _ = e.to_string();
            let took = started.elapsed();
            assert!(
                took <= budget(n_sources as u64),
                "compiling and checking {n_sources} rule file(s) took {took:?}"
            );
            return;
        }
    };
    let took = started.elapsed();
    assert!(
        took <= budget(n_sources as u64),
        "compiling and checking {n_sources} rule file(s) took {took:?}"
    );
    assert!(set.rules.len() <= n_sources);

    let scan = Arc::new(scan);
    let started = Instant::now();
    let eval = set.evaluate(&scan, None).expect("rule thread");
    let took = started.elapsed();
    assert!(
        took <= budget(eval.calls),
        "{} evaluate call(s) took {took:?}",
        eval.calls
    );
    let pairs: usize = scan
        .findings
        .iter()
        .map(|f| f.affected_identities.len())
        .sum();
    assert!(eval.calls as usize <= pairs * set.rules.len());
    for p in &eval.proposals {
        assert!(p.identity < scan.identities.len());
        assert!(
            !p.reason.trim().is_empty(),
            "an action with an empty reason"
        );
        assert!(set.rules.iter().any(|r| r.name == p.rule));
    }
    for f in &eval.failures {
        assert!(!f.message.is_empty());
    }
});
