//! Checkpoints: points of the chain (head seq, hash, count) written to the log
//! and an optional file, so a rewrite of the whole store can be found later.

use std::sync::Arc;

use serde::Serialize;

use crate::domain::Clock;

use super::chain::Chain;
use super::ts;

/// A point of the chain worth keeping apart from the store: a rewrite of the
/// whole store cannot reproduce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The head event's seq.
    pub seq: i64,
    /// The head event's hash.
    pub hash: String,
    /// Events in the history at that point.
    pub events: i64,
    /// When it was taken.
    #[serde(default)]
    pub at: String,
}

impl Checkpoint {
    /// Reads checkpoints, one JSON object a line, naming the file and line of a bad one.
    pub fn read_file(path: &std::path::Path) -> Result<Vec<Checkpoint>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read checkpoint file {}: {e}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l.trim()).map_err(|e| {
                    format!(
                        "{}:{}: not a checkpoint ({{\"seq\":N,\"hash\":\"...\",\"events\":N}}): {e}",
                        path.display(),
                        i + 1
                    )
                })
            })
            .collect()
    }
}

/// Where and how often checkpoints are written.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointSink {
    every: i64,
    file: Option<std::path::PathBuf>,
    clock: Arc<dyn Clock>,
}

impl CheckpointSink {
    /// Every `every` events (none when not positive), also to `file`, timed by `clock`.
    pub(crate) fn new(
        every: i64,
        file: Option<std::path::PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> CheckpointSink {
        CheckpointSink { every, file, clock }
    }

    /// Logs (and appends to the file) a checkpoint when a committed transaction
    /// took the chain past a multiple of `every`. The transaction is committed
    /// already: a checkpoint that cannot be written is a warning.
    pub(crate) fn after_commit(&self, chain: &Chain) {
        if self.every <= 0 || chain.seq / self.every == chain.start() / self.every {
            return;
        }
        let cp = Checkpoint {
            seq: chain.seq,
            hash: chain.hash.clone(),
            events: chain.seq,
            at: ts(self.clock.now()),
        };
        tracing::info!(
            checkpoint_seq = cp.seq,
            checkpoint_hash = %cp.hash,
            checkpoint_events = cp.events,
            "history checkpoint"
        );
        if let Some(path) = &self.file {
            use std::io::Write;
            let line = serde_json::to_string(&cp).unwrap_or_default();
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), "cannot write the history checkpoint: {e}");
            }
        }
    }
}
