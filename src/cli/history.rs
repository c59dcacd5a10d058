//! `history` and `audit verify`: the audit trail, filtered or checked.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::Value;

use super::args::{HistoryArgs, date_or_time_arg};
use super::open_store;
use crate::config::Config;
use crate::output::render;
use crate::store::{self, Filter};

/// The columns `history` prints.
const HISTORY_COLUMNS: [&str; 11] = [
    "seq",
    "at",
    "tenant",
    "kind",
    "action_id",
    "action_kind",
    "identity_id",
    "rule",
    "state",
    "actor",
    "detail",
];

/// `history`: the events matching the filters.
pub(super) async fn history(config: &Path, a: HistoryArgs) -> Result<i32> {
    let cfg = Config::load(config)?;
    let store = open_store(&cfg, false, true).await?;
    let filter = Filter {
        tenant: a.tenant,
        identity: a.identity,
        action: a.action,
        state: a.state,
        rule: a.rule,
        run: a.run,
        since: date_or_time_arg("since", &a.since)?,
        until: date_or_time_arg("until", &a.until)?,
        limit: a.limit,
        ..Filter::default()
    };
    let events = crate::service::history::events(store.as_ref(), &filter).await?;
    let recs: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    print!("{}", render(a.format, &HISTORY_COLUMNS, &recs));
    Ok(0)
}

/// `audit verify`: recomputes the hash chain and compares it with checkpoints;
/// exits 1 when anything was edited.
pub(super) async fn verify(config: &Path, checkpoint: Option<PathBuf>) -> Result<i32> {
    let cfg = Config::load(config)?;
    // Read the checkpoints first: a bad file changes nothing.
    let file = checkpoint.or_else(|| cfg.store.checkpoint_file.clone().filter(|f| f.exists()));
    let checkpoints = match &file {
        Some(f) => store::Checkpoint::read_file(f).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let store = open_store(&cfg, false, true).await?;
    let mut report = store.verify().await?;
    let cp_problems = store::check_checkpoints(store.as_ref(), &report, &checkpoints).await?;
    report.problems.extend(cp_problems);
    // stdout is the verdict; what it rests on goes to stderr.
    eprintln!(
        "{} approval row(s) checked against the chain; chain {}",
        report.approvals,
        match report.keyed_from {
            Some(seq) => format!("keyed (HMAC-SHA-256) from event {seq} on"),
            None => "UNKEYED: anyone with write access to the store could recompute it (set [store] history_key_file)".to_string(),
        }
    );
    match &file {
        Some(f) => eprintln!(
            "compared with {} checkpoint(s) from {}",
            checkpoints.len(),
            f.display()
        ),
        None => eprintln!(
            "no checkpoints compared: a rewrite of the whole store is found only against one kept apart (--checkpoint FILE)"
        ),
    }
    if let Some(head) = &report.head {
        eprintln!(
            "checkpoint: {}",
            serde_json::to_string(head).unwrap_or_default()
        );
    }
    if report.problems.is_empty() {
        println!(
            "history intact: {} events, hash chain verified",
            report.events
        );
        return Ok(0);
    }
    for p in &report.problems {
        println!("TAMPERED: {p}");
    }
    println!(
        "history NOT intact: {} problem(s) in {} events",
        report.problems.len(),
        report.events
    );
    Ok(1)
}
