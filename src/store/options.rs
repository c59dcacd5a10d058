//! How to open the store: URL, history key, create or not, read-only, checkpoints
//! and the clock every write takes its time from.

use std::sync::Arc;

use crate::domain::{Clock, SystemClock};

use super::checkpoint::CheckpointSink;
use super::key::{HistoryKey, KeySource};
use super::{StoreError, display_name};

/// How to open the store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// Where the history key comes from; `None` leaves the chain unkeyed.
    pub key: Option<KeySource>,
    /// Create the store (and a missing key file) when it does not exist; when
    /// false, a missing store is an error and nothing is created.
    pub create: bool,
    /// Never write (history, audit verify); writing is an error.
    pub read_only: bool,
    /// How long to wait for a PostgreSQL server.
    pub connect_timeout: std::time::Duration,
    /// Write a checkpoint each time the chain passes a multiple of this many events.
    pub checkpoint_every: i64,
    /// Also append checkpoints to this file.
    pub checkpoint_file: Option<std::path::PathBuf>,
    /// Where the store takes "now" from (event, lease and checkpoint times).
    pub clock: Arc<dyn Clock>,
}

impl OpenOptions {
    /// Creating, unkeyed, with the default timeout and checkpoint interval.
    pub fn new(url: &str) -> OpenOptions {
        OpenOptions {
            url: url.to_string(),
            key: None,
            create: true,
            read_only: false,
            connect_timeout: std::time::Duration::from_secs(5),
            checkpoint_every: 1000,
            checkpoint_file: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The options the `[store]` section asks for (creating, writable).
    pub fn from_config(c: &crate::config::StoreConfig) -> OpenOptions {
        OpenOptions {
            url: c.url.clone(),
            key: match (&c.history_key_file, &c.history_key_credential) {
                (Some(f), _) => Some(KeySource::File(f.clone())),
                (None, Some(n)) => Some(KeySource::Credential(n.clone())),
                (None, None) => None,
            },
            create: true,
            read_only: false,
            connect_timeout: c.connect_timeout.0,
            checkpoint_every: i64::try_from(c.checkpoint_every).unwrap_or(i64::MAX),
            checkpoint_file: c.checkpoint_file.clone(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Opens an existing store only.
    pub fn existing(mut self) -> OpenOptions {
        self.create = false;
        self
    }

    /// Opens an existing store only, for reading.
    pub fn read_only(mut self) -> OpenOptions {
        self.create = false;
        self.read_only = true;
        self
    }

    /// Takes times from this clock instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> OpenOptions {
        self.clock = clock;
        self
    }

    /// Where and how often this store writes checkpoints.
    pub(crate) fn sink(&self) -> CheckpointSink {
        CheckpointSink::new(
            self.checkpoint_every,
            self.checkpoint_file.clone(),
            self.clock.clone(),
        )
    }
}

/// The key a store appends with, decided at open: loads (or, for a writer on a
/// store not keyed yet, creates) the key and checks it against the store's
/// `history_keyed` event. `marker` is that event's seq and key id.
pub(crate) fn resolve_key(
    opts: &OpenOptions,
    marker: Option<&(i64, String)>,
) -> Result<Option<HistoryKey>, StoreError> {
    let store = display_name(&opts.url);
    let key = match &opts.key {
        None => None,
        // A reader does without a key it cannot load: `audit verify` then says
        // that the keyed part cannot be checked.
        Some(src) => match HistoryKey::load(src)
            .or_else(|e| if opts.read_only { Ok(None) } else { Err(e) })?
        {
            Some(k) => Some(k),
            None => match (src, marker, opts.create && !opts.read_only) {
                (KeySource::File(p), None, true) => Some(HistoryKey::generate(p)?),
                (KeySource::File(p), _, _) => {
                    if opts.read_only {
                        None
                    } else {
                        return Err(StoreError::Key(format!(
                            "key file {} does not exist{}",
                            p.display(),
                            if marker.is_some() {
                                format!(" and history store {store} is keyed: restore the key file")
                            } else {
                                " (a writing command such as `run` or the daemon creates it)".into()
                            }
                        )));
                    }
                }
                (KeySource::Credential(_), _, _) => None,
            },
        },
    };
    if opts.read_only {
        return Ok(key);
    }
    match (marker, &key) {
        (Some((seq, _)), None) => Err(StoreError::Key(format!(
            "history store {store} is keyed from event {seq} on: configure its key ([store] history_key_file or history_key_credential); unkeyed events would break the chain"
        ))),
        (Some((seq, id)), Some(k)) if *id != k.id() => Err(StoreError::Key(format!(
            "history store {store} is keyed (from event {seq} on) with key id {id}, but the configured key has id {}",
            k.id()
        ))),
        _ => Ok(key),
    }
}
