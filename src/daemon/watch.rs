//! Watches the rules directory and the exceptions file (debounced, so editors'
//! atomic saves and renames arrive as one change).

use std::time::Duration;

use ::notify::RecursiveMode;
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
                    let relevant = events.iter().flat_map(|e| e.paths.iter()).find(|p| {
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
