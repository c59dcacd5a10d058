//! The `[api]` table: the daemon's local HTTP API.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;

/// The local HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API.
    pub enabled: bool,
    /// "127.0.0.1:8787", or "unix:/run/entra-remediator/api.sock".
    pub listen: String,
    /// File holding the bearer token every route but health requires.
    pub token_file: Option<PathBuf>,
    /// systemd credential holding the token (`$CREDENTIALS_DIRECTORY/NAME`).
    pub token_credential: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a connection may take to send a request's headers, counted from
    /// when it is waiting for one (new, or kept alive after a response): idle and
    /// half-sent connections are closed after it.
    pub header_timeout: HumanDuration,
    /// How long a request body may take to arrive in full (408 after it).
    pub body_timeout: HumanDuration,
    /// Most connections served at once; further ones wait to be accepted, so
    /// that open connections cannot use up the process's file descriptors.
    pub max_connections: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:8787".into(),
            token_file: None,
            token_credential: None,
            max_body_bytes: 64 * 1024,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
            max_connections: 256,
        }
    }
}
