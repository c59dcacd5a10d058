//! The `[console]` table: the operator console in the browser, its OpenID
//! Connect sign-in against Entra ID, its session rules and who holds which role.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;
use crate::access::RoleRules;

/// The browser console, served where the API listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console (needs `[api] enabled`: it shares the listener).
    pub enabled: bool,
    /// The OpenID Connect issuer: `https://login.microsoftonline.com/<tenant id>/v2.0`
    /// (a national cloud's login host, or the fake tenant in tests).
    pub issuer: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    /// File holding the app registration's client secret.
    pub client_secret_file: Option<PathBuf>,
    /// systemd credential holding the client secret (`$CREDENTIALS_DIRECTORY/NAME`).
    pub client_secret_credential: Option<String>,
    /// Where Entra sends people back after sign-in: the console's public URL
    /// followed by `/console/auth/callback`, registered as the app's redirect URI.
    pub redirect_url: String,
    /// Mark the session cookie `Secure` (browsers then send it over HTTPS only).
    /// Turn off only for plain-HTTP loopback.
    pub secure_cookies: bool,
    /// A session unused for this long ends.
    pub idle_timeout: HumanDuration,
    /// A session ends this long after sign-in, used or not.
    pub session_lifetime: HumanDuration,
    /// A bulk selection of more identities than this needs the count typed to confirm.
    pub bulk_confirm_over: usize,
    /// Who holds which role.
    pub roles: RoleRules,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            issuer: String::new(),
            client_id: String::new(),
            client_secret_file: None,
            client_secret_credential: None,
            redirect_url: String::new(),
            secure_cookies: true,
            idle_timeout: HumanDuration(Duration::from_secs(15 * 60)),
            session_lifetime: HumanDuration(Duration::from_secs(8 * 3600)),
            bulk_confirm_over: 20,
            roles: RoleRules::default(),
        }
    }
}
