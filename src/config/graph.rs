//! The `[tenant.graph]` table: how to reach Microsoft Graph for a tenant,
//! with which credential, and how its MFA policies are shaped.

use std::path::PathBuf;

use serde::Deserialize;

/// A Microsoft cloud: its login authority and Graph endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Microsoft's global cloud.
    #[default]
    Global,
    /// US Government (GCC High).
    UsGov,
    /// US Government DoD.
    UsGovDod,
    /// China (21Vianet).
    China,
}

impl Cloud {
    /// (authority, graph URL) of the cloud.
    pub fn endpoints(self) -> (&'static str, &'static str) {
        match self {
            Cloud::Global => (
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
            ),
            Cloud::UsGov => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
            ),
            Cloud::UsGovDod => (
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us",
            ),
            Cloud::China => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
        }
    }
}

/// Which JWT algorithm signs the certificate's client assertion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256 and the `x5t#S256` thumbprint (Entra's preferred form).
    #[default]
    PS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and the SHA-1 `x5t` thumbprint (fallback).
    RS256,
}

/// Whether a Conditional Access policy is enforced or only reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyState {
    /// `enabled`.
    #[default]
    Enabled,
    /// `enabledForReportingButNotEnforced`.
    ReportOnly,
}

/// How users are put under an MFA policy: through a group, or listed in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MfaMode {
    /// The policy includes one security group; users are added to the group
    /// (`members/$ref`), so the policy never grows. The default.
    Group,
    /// Users are listed in the policy's `includeUsers` (the former default):
    /// bounded by Graph's policy size limit, users beyond it are refused.
    Users,
}

/// How users are put under an MFA Conditional Access policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaPolicyConfig {
    /// Policy state when created.
    #[serde(default)]
    pub state: PolicyState,
    /// `group` or `users`; unset means group mode, except for a tenant whose
    /// store already holds a users-mode policy (kept, as before).
    #[serde(default)]
    pub mode: Option<MfaMode>,
    /// The security group the policy includes, in group mode; unset, one is
    /// created on first need and its id kept in the store.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Display name of the policy we create.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Microsoft Graph access for one tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Cloud preset for the two URLs below.
    #[serde(default)]
    pub cloud: Cloud,
    /// Login authority, overriding the preset (tests point it at a fake tenant).
    #[serde(default)]
    pub authority: Option<String>,
    /// Graph base URL, overriding the preset.
    #[serde(default)]
    pub graph_url: Option<String>,
    /// The app registration's client id.
    pub client_id: String,
    /// Client secret, read from this file.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Client secret, read from this environment variable.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Client secret, read from this systemd credential (`$CREDENTIALS_DIRECTORY/NAME`).
    #[serde(default)]
    pub client_secret_credential: Option<String>,
    /// The app's certificate (PEM), for certificate authentication.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// The certificate's private key (PEM), read from this file.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The certificate's private key, read from this systemd credential.
    #[serde(default)]
    pub private_key_credential: Option<String>,
    /// Signing algorithm of the client assertion.
    #[serde(default)]
    pub assertion_algorithm: AssertionAlgorithm,
    /// The MFA Conditional Access policy.
    #[serde(default)]
    pub mfa: MfaPolicyConfig,
    /// The phishing-resistant MFA Conditional Access policy.
    #[serde(default)]
    pub phishing_resistant_mfa: MfaPolicyConfig,
    /// Requests per `$batch` (at most 20, Graph's limit).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The most batches in flight at once: the client starts with a few
    /// (4, or this when lower) and grows while more would go out (doubling
    /// per round of clean answers until Graph first throttles, then one per
    /// round), up to this; fewer when Graph throttles.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Attempts per request before giving up (throttling, 5xx, timeouts).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Longest total time spent retrying one request, in seconds.
    #[serde(default = "default_retry_secs")]
    pub max_retry_secs: u64,
    /// Timeout of one HTTP request, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Execution attempts per action across `execute` runs when it fails
    /// retryably (credentials, throttling, 5xx, timeouts); after the last, it fails for good.
    #[serde(default = "default_action_attempts")]
    pub action_attempts: u32,
    /// Wait before retrying such an action, in seconds; doubled after each
    /// failed attempt, at most a day.
    #[serde(default = "default_action_retry_secs")]
    pub action_retry_secs: u64,
}

fn default_action_attempts() -> u32 {
    5
}
fn default_action_retry_secs() -> u64 {
    300
}

fn default_batch_size() -> usize {
    20
}
/// The default ceiling of batches in flight: well above the 4 the client
/// starts with, so that a tenant that serves a batch's items one after another
/// can still be driven at its throttle limit without tuning.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;

fn default_concurrency() -> usize {
    DEFAULT_MAX_CONCURRENCY
}
fn default_attempts() -> u32 {
    6
}
fn default_retry_secs() -> u64 {
    120
}
fn default_timeout_secs() -> u64 {
    30
}

impl GraphConfig {
    /// The login authority in use.
    pub fn authority(&self) -> String {
        self.authority
            .clone()
            .unwrap_or_else(|| self.cloud.endpoints().0.to_string())
            .trim_end_matches('/')
            .to_string()
    }

    /// The Graph base URL in use.
    pub fn graph_url(&self) -> String {
        self.graph_url
            .clone()
            .unwrap_or_else(|| self.cloud.endpoints().1.to_string())
            .trim_end_matches('/')
            .to_string()
    }
}
