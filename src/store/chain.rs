//! The hash chain: the canonical text an event's hash covers, the plain and
//! keyed hashes, and the chain's tail while a transaction appends to it.

use sha2::{Digest, Sha256};

use super::key::HistoryKey;
use super::records::NewEvent;

/// The first event's `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chained hash of an unkeyed event: covers every column but the hash itself.
pub fn event_hash(seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    hex::encode(Sha256::digest(canonical(seq, at, e, prev).as_bytes()))
}

/// The chained HMAC of a keyed event: the same content as `event_hash`.
pub fn keyed_event_hash(key: &HistoryKey, seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    hex::encode(key.mac(canonical(seq, at, e, prev).as_bytes()))
}

/// The hash of an event keyed or not.
fn chain_hash(key: Option<&HistoryKey>, seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    match key {
        Some(k) => keyed_event_hash(k, seq, at, e, prev),
        None => event_hash(seq, at, e, prev),
    }
}

/// The canonical text an event's hash covers.
fn canonical(seq: i64, at: &str, e: &NewEvent, prev: &str) -> String {
    serde_json::json!([
        seq,
        at,
        e.tenant,
        e.run_id,
        e.action_id,
        e.identity_id,
        e.action_kind,
        e.rule,
        e.kind,
        e.actor,
        e.state,
        e.detail,
        prev
    ])
    .to_string()
}

/// The tail of the hash chain while a transaction appends to it.
pub(crate) struct Chain {
    /// The last event's seq (0 for none).
    pub(crate) seq: i64,
    /// The last event's hash.
    pub(crate) hash: String,
    /// The seq when the transaction started, to know when to write a checkpoint.
    start: i64,
    key: Option<HistoryKey>,
}

impl Chain {
    /// The chain after its last event (`None` for an empty history).
    pub(crate) fn new(last: Option<(i64, String)>, key: Option<&HistoryKey>) -> Chain {
        let (seq, hash) = last.unwrap_or_else(|| (0, GENESIS.to_string()));
        Chain {
            seq,
            hash,
            start: seq,
            key: key.cloned(),
        }
    }

    /// Links the next event: returns its seq, prev_hash and hash.
    pub(crate) fn link(&mut self, at: &str, e: &NewEvent) -> (i64, String, String) {
        let seq = self.seq + 1;
        let prev = std::mem::take(&mut self.hash);
        let hash = chain_hash(self.key.as_ref(), seq, at, e, &prev);
        self.seq = seq;
        self.hash = hash.clone();
        (seq, prev, hash)
    }

    /// The seq when the transaction started.
    pub(crate) fn start(&self) -> i64 {
        self.start
    }
}
