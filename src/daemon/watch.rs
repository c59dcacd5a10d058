//! Watches the rules directory and the exceptions file (debounced, so editors'
//! atomic saves and renames arrive as one change). Only changes count: reading a
//! file (opening, closing it unchanged) is no change, or the daemon's own reads
//! while reloading would wake it again and again.

use std::time::Duration;

use ::notify::RecursiveMode;
use ::notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::config::Config;

/// Keeps the watch alive; dropping it stops watching.
pub struct RuleWatcher {
    _debouncer: Debouncer<::notify::RecommendedWatcher, RecommendedCache>,
}

impl RuleWatcher {
    /// Starts watching; each debounced change sends the changed path.
    pub fn start(cfg: &Config, tx: mpsc::Sender<String>) -> Result<RuleWatcher, String> {
        let mut debouncer = new_debouncer(
            Duration::from_millis(300),
            None,
            move |res: DebounceEventResult| match res {
                Ok(events) => {
                    let relevant = events
                        .iter()
                        .filter(|e| changes_content(&e.kind))
                        .flat_map(|e| e.paths.iter())
                        .find(|p| {
                            let ext = p.extension().and_then(|e| e.to_str());
                            ext == Some("rhai") || ext == Some("toml")
                        });
                    if let Some(p) = relevant {
                        // A full queue already holds a reload to come.
                        let _ = tx.try_send(p.display().to_string());
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "watching the rules failed");
                    }
                }
            },
        )
        .map_err(|e| format!("cannot watch the rules: {e}"))?;
        debouncer
            .watch(&cfg.policies_dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", cfg.policies_dir.display()))?;
        let exc = cfg.exceptions_path();
        if let Some(dir) = exc.parent()
            && dir != cfg.policies_dir
            && dir.is_dir()
        {
            debouncer
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        }
        Ok(RuleWatcher {
            _debouncer: debouncer,
        })
    }
}

/// Whether an event can change what a file holds: created, written, renamed or
/// removed. Opening, reading, closing unwritten and metadata (times, modes) cannot.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(m) => !matches!(m, ModifyKind::Metadata(_)),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn only_events_that_can_change_a_file_count() {
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Remove(RemoveKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Content
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::Both
        ))));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Read)));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
    }
}
