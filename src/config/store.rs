//! The `[store]` table: where history is kept, its key and its checkpoints.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;

/// The history store location, its history key and checkpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the config file) or `postgres://...`.
    pub url: String,
    /// File holding the key of the history chain (HMAC-SHA-256), relative to the
    /// config file; a writing command creates it (mode 0600) when missing and the
    /// store is not keyed yet. Never stored in the database.
    #[serde(default)]
    pub history_key_file: Option<PathBuf>,
    /// Name of a systemd credential holding that key (`LoadCredential=`).
    #[serde(default)]
    pub history_key_credential: Option<String>,
    /// How long to wait for a PostgreSQL server before giving up.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// A checkpoint (head seq, hash, count) is logged each time the history
    /// passes a multiple of this many events.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Also append each checkpoint to this file (relative to the config file).
    #[serde(default)]
    pub checkpoint_file: Option<PathBuf>,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_checkpoint_every() -> u64 {
    1000
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://entra-remediator.db".into(),
            history_key_file: None,
            history_key_credential: None,
            connect_timeout: default_connect_timeout(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_file: None,
        }
    }
}
