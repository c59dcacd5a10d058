//! The history key: the secret that keys the chain (HMAC-SHA-256), where it
//! comes from, and how a store settles which key it appends with at open.

use sha2::Sha256;

use super::StoreError;
use super::records::NewEvent;

/// The kind of the event from which on the chain is keyed.
pub const KEYED_EVENT: &str = "history_keyed";

/// The secret that keys the history chain (HMAC-SHA-256). It lives in a file or
/// a systemd credential, never in the database, so write access to the store
/// alone is not enough to recompute the chain.
#[derive(Clone)]
pub struct HistoryKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for HistoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HistoryKey({})", self.id())
    }
}

/// Where the history key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A file holding the key (created with mode 0600 by a writing command when
    /// missing and the store is not keyed yet).
    File(std::path::PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

impl HistoryKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// A key from its bytes (leading and trailing white space removed).
    pub fn from_bytes(bytes: &[u8]) -> Result<HistoryKey, StoreError> {
        let text = bytes.trim_ascii();
        if text.len() < Self::MIN_LEN {
            return Err(StoreError::Key(format!(
                "the key has {} byte(s); at least {} are needed",
                text.len(),
                Self::MIN_LEN
            )));
        }
        Ok(HistoryKey { key: text.to_vec() })
    }

    /// A short public name of the key (an HMAC of a fixed text), recorded in the
    /// `history_keyed` event so a wrong key is told apart from an edit.
    pub fn id(&self) -> String {
        hex::encode(&self.mac(b"entra-remediator history key id")[..8])
    }

    /// HMAC-SHA-256 (RFC 2104) of `msg`, by the RustCrypto `hmac` crate.
    pub fn mac(&self, msg: &[u8]) -> Vec<u8> {
        use hmac::{KeyInit, Mac};
        // HMAC takes a key of any length, so this cannot fail.
        match hmac::Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mut m) => {
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Reads the key from its source; `None` when a key file does not exist.
    pub fn load(src: &KeySource) -> Result<Option<HistoryKey>, StoreError> {
        let path = match src {
            KeySource::File(p) => p.clone(),
            KeySource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    StoreError::Key(format!(
                        "history_key_credential {name:?} is set but CREDENTIALS_DIRECTORY is not (LoadCredential= in the systemd unit)"
                    ))
                })?;
                std::path::Path::new(&dir).join(name)
            }
        };
        match std::fs::read(&path) {
            Ok(b) => HistoryKey::from_bytes(&b)
                .map(Some)
                .map_err(|e| StoreError::Key(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match src {
                KeySource::File(_) => Ok(None),
                KeySource::Credential(_) => Err(StoreError::Key(format!(
                    "credential {} does not exist",
                    path.display()
                ))),
            },
            Err(e) => Err(StoreError::Key(format!("{}: {e}", path.display()))),
        }
    }

    /// Creates a new random key file (mode 0600; never overwrites one).
    pub fn generate(path: &std::path::Path) -> Result<HistoryKey, StoreError> {
        use std::io::Write;
        let bytes: [u8; 32] = rand::random();
        let text = hex::encode(bytes);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()).map(|()| f));
        let f = f
            .as_mut()
            .map_err(|e| StoreError::Key(format!("cannot create {}: {e}", path.display())))?;
        f.sync_all()
            .map_err(|e| StoreError::Key(format!("cannot write {}: {e}", path.display())))?;
        tracing::warn!(
            path = %path.display(),
            "created a new history key; keep a copy apart from the store: without it the history cannot be verified"
        );
        HistoryKey::from_bytes(text.as_bytes())
    }
}

/// The event that starts keying a chain: the key's id, never the key.
pub(crate) fn keyed_event(key: &HistoryKey, previous: i64) -> NewEvent {
    NewEvent {
        kind: KEYED_EVENT.into(),
        actor: "system".into(),
        detail: serde_json::json!({
            "key_id": key.id(),
            "unkeyed_events_before": previous,
            "note": "this event and every later one carry an HMAC-SHA-256 under the history key",
        })
        .to_string(),
        ..NewEvent::default()
    }
}

/// Parses a `history_keyed` event's seq and detail into (seq, key id).
pub(crate) fn marker_of(row: Option<(i64, String)>) -> Option<(i64, String)> {
    row.map(|(seq, detail)| {
        let id = serde_json::from_str::<serde_json::Value>(&detail)
            .ok()
            .and_then(|v| v["key_id"].as_str().map(str::to_string))
            .unwrap_or_default();
        (seq, id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (a short key is padded like ours).
    #[test]
    fn hmac_matches_rfc_4231() {
        let k = HistoryKey {
            key: b"Jefe".to_vec(),
        };
        assert_eq!(
            hex::encode(k.mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let k = HistoryKey {
            key: vec![0xaa; 131],
        };
        assert_eq!(
            hex::encode(k.mac(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
