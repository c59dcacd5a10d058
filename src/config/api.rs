//! The `[api]` table: the daemon's local HTTP API.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;
use crate::access::Role;

/// The name the legacy `token_file` / `token_credential` token is recorded as.
pub const LEGACY_TOKEN_NAME: &str = "api";

/// The local HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API.
    pub enabled: bool,
    /// "127.0.0.1:8787", or "unix:/run/entra-remediator/api.sock".
    pub listen: String,
    /// The named bearer tokens (`[[api.tokens]]`); every route but health
    /// needs one of them, and history records the caller as `token:NAME`.
    pub tokens: Vec<ApiTokenConfig>,
    /// Legacy: a file holding one token, taken as a token named "api" with the
    /// operator role (it cannot approve).
    pub token_file: Option<PathBuf>,
    /// Legacy: a systemd credential holding that token (`$CREDENTIALS_DIRECTORY/NAME`).
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
            tokens: Vec::new(),
            token_file: None,
            token_credential: None,
            max_body_bytes: 64 * 1024,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
            max_connections: 256,
        }
    }
}

/// One `[[api.tokens]]` entry: a bearer token with the name history records
/// for its holder and the roles it grants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Recorded as `token:NAME`; unique, `[a-z0-9._-]+`.
    pub name: String,
    /// File holding the token.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// systemd credential holding the token (`$CREDENTIALS_DIRECTORY/NAME`).
    #[serde(default)]
    pub credential: Option<String>,
    /// What the token may do; only "approver" or "admin" may approve.
    #[serde(default = "default_token_roles")]
    pub roles: Vec<Role>,
}

/// A token requests runs and reads, but approves nothing unless configured to.
fn default_token_roles() -> Vec<Role> {
    vec![Role::Operator]
}

impl ApiConfig {
    /// Every token the API accepts: the legacy `token_file` / `token_credential`
    /// one (named "api", operator) first, then the `[[api.tokens]]`.
    pub fn token_entries(&self) -> Vec<ApiTokenConfig> {
        let legacy = (self.token_file.is_some() || self.token_credential.is_some()).then(|| {
            ApiTokenConfig {
                name: LEGACY_TOKEN_NAME.into(),
                file: self.token_file.clone(),
                credential: self.token_credential.clone(),
                roles: default_token_roles(),
            }
        });
        legacy
            .into_iter()
            .chain(self.tokens.iter().cloned())
            .collect()
    }
}
