//! `scan`, `scan import` and `scans list`: take or import a scan into a
//! tenant's scan directory, and list the scans there by time.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::args::{ScanCmd, ScanSub, ScansCmd};
use super::{actor, open_store};
use crate::config::Config;
use crate::output::{Format, render};
use crate::service::scan::{self, ScanReport};
use crate::text::printable;

/// `scan --tenant T`, or `scan import ...`.
pub(super) async fn scan(config: &Path, cmd: ScanCmd) -> Result<i32> {
    let cfg = Config::load(config)?;
    let store = open_store(&cfg, true, false).await?;
    let store = Some(store.as_ref());
    let (report, format) = match cmd.import {
        Some(ScanSub::Import {
            from,
            path,
            tenant,
            format,
        }) => (
            scan::import_scan(&cfg, store, &tenant, from, &path, &actor()).await?,
            format,
        ),
        None => {
            let tenant = cmd.tenant.unwrap_or_default();
            (
                scan::scan_tenant(&cfg, store, &tenant, &actor()).await?,
                cmd.format,
            )
        }
    };
    print_report(&report, format);
    Ok(0)
}

/// Prints what a scan gave.
fn print_report(r: &ScanReport, format: Format) {
    if format == Format::Json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    println!(
        "tenant {}: scan {} written to {}",
        r.tenant,
        r.scanned_at.to_rfc3339(),
        r.path.display()
    );
    println!(
        "  {} identities, {} findings; {} Graph requests in {:.1} s",
        r.identities,
        r.findings.len(),
        r.requests,
        r.duration_ms as f64 / 1000.0
    );
    for (id, title, n) in &r.findings {
        println!("  {id:<14} {n:>7} affected  {}", printable(title));
    }
    for (id, why) in &r.not_evaluated {
        println!("  {id:<14} NOT EVALUATED: {}", printable(why));
    }
    if r.incomplete > 0 {
        println!(
            "  {} identities not fully described by the file; {} enriched from Graph",
            r.incomplete, r.enriched
        );
    }
    if let Some(why) = &r.enrichment {
        println!("  {}", printable(why));
    }
    if !r.skipped.is_empty() {
        println!(
            "  {} items Graph returned could not be read (see the log)",
            r.skipped.len()
        );
    }
    for p in &r.pruned {
        println!("  pruned {} (keep_scans)", p.display());
    }
}

/// `scans list --tenant T`.
pub(super) fn scans(config: &Path, cmd: ScansCmd) -> Result<i32> {
    let cfg = Config::load(config)?;
    let ScansCmd::List { tenant, format } = cmd;
    let entries = scan::list_scans(&cfg, &tenant)?;
    let records: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({
                "scanned_at": e.scanned_at.map(|t| t.to_rfc3339()),
                "identities": e.identities,
                "findings": e.findings,
                "not_evaluated": e.not_evaluated,
                "scanner": e.scanner,
                "file": e.path.display().to_string(),
                "error": e.error,
            })
        })
        .collect();
    let columns = [
        "scanned_at",
        "identities",
        "findings",
        "not_evaluated",
        "scanner",
        "file",
        "error",
    ];
    print!("{}", render(format, &columns, &records));
    Ok(0)
}
