//! The TOML configuration: what to scan, which rules to apply, how strict to be.
//!
//! Every table denies unknown keys, so a typo is an error that names the key and
//! line rather than a setting silently ignored. Relative paths are resolved against
//! the directory of the config file, so a config works wherever it is run from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::ActionKind;
use crate::domain::Mode;

/// Longest line of a config error message; longer ones echo a hostile value.
const MAX_ECHO: usize = 400;
/// Longest `approval_ttl` accepted.
const MAX_APPROVAL_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Longest `daemon.lease_secs` accepted.
const MAX_LEASE_SECS: u64 = 365 * 24 * 3600;
/// Largest `rules.max_call_depth` accepted: rule threads get a stack sized for
/// it, and a deeper limit would let a recursive rule overflow even that.
pub const MAX_CALL_DEPTH: usize = 256;
/// The longest API timeout accepted: longer ones would let connections pile up.
const MAX_API_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most API connections accepted: each holds a file descriptor
/// (systemd/entra-remediator.service sets LimitNOFILE well above the default).
const MAX_API_CONNECTIONS: usize = 16_384;

/// Default config path when neither `--config` nor `ENTRA_REMEDIATOR_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/entra-remediator/config.toml";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error (in the message, and not also a `source`, so that an
        /// error chain does not print it twice).
        error: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type or is unknown.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message, which names the key, line and column.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("invalid config {path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key at fault.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A duration written as `"24h"`, `"7d"`, `"90s"` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// The whole configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Mode for every tenant unless a tenant or rule is stricter. Default: dry-run.
    #[serde(default)]
    pub mode: Mode,
    /// Directory of Rhai rule files.
    #[serde(default = "default_policies_dir")]
    pub policies_dir: PathBuf,
    /// File of exceptions; default `<policies_dir>/exceptions.toml` (optional file).
    #[serde(default)]
    pub exceptions_file: Option<PathBuf>,
    /// Scans older than this are refused. Default 7 days.
    #[serde(default = "default_max_scan_age")]
    pub max_scan_age: HumanDuration,
    /// Scans dated later than now plus this (clock skew between scanner and
    /// remediator) are refused. Default 5 minutes.
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: HumanDuration,
    /// Scan files larger than this many bytes are refused. Default 512 MiB.
    #[serde(default = "default_max_scan_bytes")]
    pub max_scan_bytes: u64,
    /// How long an approval item stays pending before it expires. Default 24h.
    #[serde(default = "default_approval_ttl")]
    pub approval_ttl: HumanDuration,
    /// Where history is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Sandbox limits for rule evaluation.
    #[serde(default)]
    pub rules: RuleLimits,
    /// Limits that downgrade a run to approval.
    #[serde(default)]
    pub guardrails: Guardrails,
    /// Identities that are never acted on.
    #[serde(default)]
    pub protected: Protected,
    /// Who may approve, and which actions need two approvers.
    #[serde(default)]
    pub approvals: ApprovalConfig,
    /// The scheduled daemon.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The local HTTP API of the daemon.
    #[serde(default)]
    pub api: ApiConfig,
    /// Webhook notifications.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// The tenants to remediate.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// Where the config was read from (set by the loader).
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_policies_dir() -> PathBuf {
    PathBuf::from("policies")
}
fn default_max_scan_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}
fn default_max_clock_skew() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}
fn default_max_scan_bytes() -> u64 {
    512 * 1024 * 1024
}
fn default_approval_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

/// How the daemon schedules and shuts down.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Default cron schedule (UTC, with seconds: "sec min hour day month weekday").
    pub schedule: String,
    /// Run at start when a scheduled run was missed while the daemon was down.
    pub catch_up: bool,
    /// How often approved actions are picked up for execution, in seconds.
    pub execute_interval_secs: u64,
    /// How long in-flight work may take to finish on SIGTERM, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long a tenant's lease lasts before another instance may take it, in seconds.
    pub lease_secs: u64,
    /// This instance's name in leases and history (default: host name and process id).
    pub instance: Option<String>,
    /// Log format: "text", "json" (one object per line on stdout) or "journal".
    pub log_format: LogFormat,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            schedule: "0 0 * * * *".into(),
            catch_up: true,
            execute_interval_secs: 15,
            shutdown_grace_secs: 30,
            lease_secs: 120,
            instance: None,
            log_format: LogFormat::Text,
        }
    }
}

/// Where logs go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    #[default]
    Text,
    /// One JSON object per line on stdout.
    Json,
    /// The systemd journal with structured fields.
    Journal,
}

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

/// Webhook notifications.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The webhooks.
    #[serde(rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
}

/// One webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name, for logs and metrics.
    pub name: String,
    /// Where to POST. Read from `url_file` instead when the URL holds a secret.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (Slack and Teams URLs are secrets).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Payload shape.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Which events to send; all when empty.
    #[serde(default)]
    pub events: Vec<NoticeKind>,
    /// Delivery attempts before giving up.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

fn default_webhook_attempts() -> u32 {
    5
}

/// Webhook payload shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// A JSON object with `event`, `tenant`, `summary` and details.
    #[default]
    Generic,
    /// Slack incoming webhook (`text` and blocks).
    Slack,
    /// Microsoft Teams incoming webhook (MessageCard/Adaptive Card).
    Teams,
}

/// Events worth a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Actions are waiting for approval.
    ApprovalPending,
    /// A run was held for approval by a guardrail.
    RunDowngraded,
    /// Actions failed.
    ActionFailed,
    /// The rule set could not be loaded.
    RulesError,
}

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

/// Sandbox limits applied to every rule evaluation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleLimits {
    /// Maximum Rhai operations per evaluation.
    pub max_operations: u64,
    /// Wall-clock limit per evaluation, in milliseconds.
    pub timeout_ms: u64,
    /// Maximum function call depth (1 to [`MAX_CALL_DEPTH`]).
    #[serde(deserialize_with = "call_depth")]
    pub max_call_depth: usize,
    /// Maximum string length in bytes.
    pub max_string_size: usize,
    /// Maximum array length.
    pub max_array_size: usize,
    /// Maximum map size.
    pub max_map_size: usize,
}

impl Default for RuleLimits {
    fn default() -> Self {
        Self {
            max_operations: 200_000,
            timeout_ms: 250,
            max_call_depth: 32,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}

/// Reads `rules.max_call_depth`, refusing values beyond what the rule threads'
/// stack is sized for (the error is toml's, with the line and column).
fn call_depth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = u64::deserialize(d)?;
    match usize::try_from(v) {
        Ok(n) if (1..=MAX_CALL_DEPTH).contains(&n) => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "rules.max_call_depth {v} must be 1 to {MAX_CALL_DEPTH} (deeper recursion would overflow the rule threads' stack)"
        ))),
    }
}

/// Limits on how much one run may do before a person must look.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guardrails {
    /// More actions than this in one run downgrades the run to approval.
    pub max_actions_per_run: usize,
    /// Acting on more than this percentage of the scan's identities downgrades the run.
    pub max_actions_percent: f64,
    /// A run planning more than `factor` times the previous scan's actions is downgraded.
    pub circuit_breaker_factor: f64,
    /// The circuit breaker ignores runs with fewer actions than this.
    pub circuit_breaker_min_actions: usize,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            max_actions_per_run: 100,
            max_actions_percent: 20.0,
            circuit_breaker_factor: 3.0,
            circuit_breaker_min_actions: 10,
        }
    }
}

/// Identities that no action may ever touch (break-glass accounts and the like).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protected {
    /// Object ids.
    pub ids: Vec<String>,
    /// User principal names (case-insensitive).
    pub upns: Vec<String>,
    /// Group ids or display names whose members are protected.
    pub groups: Vec<String>,
}

/// Approval policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Names allowed to approve or reject; empty means anyone.
    pub approvers: Vec<String>,
    /// Actions that need two distinct approvers.
    pub four_eyes: Vec<ActionKind>,
    /// Two command-line approvals of one action must come from two different
    /// operating-system users (default true); false only where several people
    /// share one OS account (the OS user is recorded either way).
    pub distinct_os_users: bool,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            approvers: Vec::new(),
            four_eyes: Vec::new(),
            distinct_os_users: true,
        }
    }
}

/// One Entra tenant to remediate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Short name used on the command line and in history.
    pub name: String,
    /// The Entra tenant id (GUID) scans must carry.
    pub tenant_id: String,
    /// Mode for this tenant; can only make the default stricter.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Cron schedule for this tenant (UTC, with seconds); default `daemon.schedule`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Overrides the global `max_scan_age` for this tenant.
    #[serde(default)]
    pub max_scan_age: Option<HumanDuration>,
    /// Where its scans come from.
    pub source: SourceConfig,
    /// How to reach Microsoft Graph; needed unless the tenant only ever dry-runs.
    #[serde(default)]
    pub graph: Option<GraphConfig>,
}

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
    /// Batches in flight at once.
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
fn default_concurrency() -> usize {
    4
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

/// Where a tenant's scan results are found: exactly one of `dir` or `url`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A directory of scan files; the newest by `scanned_at` wins.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// An HTTP(S) URL returning one scan.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding a bearer token for `url`, optional.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let (line, column) = crate::text::place_of(e.as_bytes(), e.utf8_error().valid_up_to());
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("line {line}, column {column}: not UTF-8 text"),
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            // toml quotes the offending line and value: keep a huge one short,
            // and never quote a value that may be a secret.
            message: e
                .to_string()
                .trim_end()
                .lines()
                .map(|l| crate::text::clip(&redact_quoted_secret(l), MAX_ECHO))
                .collect::<Vec<_>>()
                .join("\n"),
        })?;
        cfg.path = path.to_path_buf();
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.policies_dir = resolve(&base, &cfg.policies_dir);
        cfg.exceptions_file = cfg.exceptions_file.as_ref().map(|p| resolve(&base, p));
        if let Some(rest) = cfg.store.url.strip_prefix("sqlite://") {
            let p = resolve(&base, Path::new(rest));
            cfg.store.url = format!("sqlite://{}", p.display());
        }
        cfg.store.history_key_file = cfg
            .store
            .history_key_file
            .as_ref()
            .map(|p| resolve(&base, p));
        cfg.store.checkpoint_file = cfg
            .store
            .checkpoint_file
            .as_ref()
            .map(|p| resolve(&base, p));
        cfg.api.token_file = cfg.api.token_file.as_ref().map(|p| resolve(&base, p));
        for w in &mut cfg.notify.webhooks {
            w.url_file = w.url_file.as_ref().map(|p| resolve(&base, p));
        }
        for t in &mut cfg.tenants {
            t.source.dir = t.source.dir.as_ref().map(|d| resolve(&base, d));
            t.source.token_file = t.source.token_file.as_ref().map(|p| resolve(&base, p));
            if let Some(g) = &mut t.graph {
                for p in [
                    &mut g.client_secret_file,
                    &mut g.certificate_file,
                    &mut g.private_key_file,
                ] {
                    *p = p.as_ref().map(|p| resolve(&base, p));
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_string(),
            message: crate::text::clip(&message.into(), MAX_ECHO),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.store.url;
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            // The URL itself is not quoted: it may carry a password.
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            return Err(self.invalid(
                "store.url",
                format!(
                    "must start with sqlite:// or postgres:// (it starts with {:?}; the rest is not shown, it may carry a password)",
                    crate::text::clip(scheme, 40)
                ),
            ));
        }
        if self.store.history_key_file.is_some() && self.store.history_key_credential.is_some() {
            return Err(self.invalid(
                "store.history_key_credential",
                "set history_key_file or history_key_credential, not both",
            ));
        }
        if self.store.checkpoint_every == 0 {
            return Err(self.invalid("store.checkpoint_every", "must be above 0"));
        }
        if self.store.connect_timeout.0.is_zero() {
            return Err(self.invalid("store.connect_timeout", "must be above 0"));
        }
        let g = &self.guardrails;
        if !(g.max_actions_percent > 0.0 && g.max_actions_percent <= 100.0) {
            return Err(self.invalid(
                "guardrails.max_actions_percent",
                "must be above 0 and at most 100",
            ));
        }
        if g.circuit_breaker_factor < 1.0 || g.circuit_breaker_factor.is_nan() {
            return Err(self.invalid("guardrails.circuit_breaker_factor", "must be at least 1"));
        }
        if self.rules.timeout_ms == 0 || self.rules.max_operations == 0 {
            return Err(self.invalid("rules", "timeout_ms and max_operations must be above 0"));
        }
        // A scan's time plus this is compared with now: keep that representable.
        if self.max_clock_skew.0 > MAX_APPROVAL_TTL {
            return Err(self.invalid("max_clock_skew", "must be at most 100 years"));
        }
        if self.approval_ttl.0.is_zero() {
            return Err(self.invalid("approval_ttl", "must be above 0"));
        }
        // Expiry times are computed by adding it to now: keep that representable.
        if self.approval_ttl.0 > MAX_APPROVAL_TTL {
            return Err(self.invalid("approval_ttl", "must be at most 100 years"));
        }
        if self.api.enabled && self.api.token_file.is_none() && self.api.token_credential.is_none()
        {
            return Err(self.invalid(
                "api.token_file",
                "the API needs a bearer token: set token_file or token_credential",
            ));
        }
        let a = &self.api;
        for (key, d) in [
            ("api.header_timeout", a.header_timeout),
            ("api.body_timeout", a.body_timeout),
        ] {
            if d.0.is_zero() || d.0 > MAX_API_TIMEOUT {
                return Err(self.invalid(key, "must be above 0 and at most 1h"));
            }
        }
        if a.max_connections == 0 || a.max_connections > MAX_API_CONNECTIONS {
            return Err(self.invalid(
                "api.max_connections",
                format!("must be at least 1 and at most {MAX_API_CONNECTIONS}"),
            ));
        }
        if self.daemon.lease_secs < 10 || self.daemon.execute_interval_secs == 0 {
            return Err(self.invalid(
                "daemon.lease_secs",
                "lease_secs must be at least 10 and execute_interval_secs above 0",
            ));
        }
        // A lease's expiry is now + lease_secs: keep that representable.
        if self.daemon.lease_secs > MAX_LEASE_SECS {
            return Err(self.invalid(
                "daemon.lease_secs",
                format!("must be at most {MAX_LEASE_SECS} (a year)"),
            ));
        }
        for (i, w) in self.notify.webhooks.iter().enumerate() {
            if w.url.is_some() == w.url_file.is_some() {
                return Err(self.invalid(
                    &format!("notify.webhook[{i}].url"),
                    "give exactly one of url or url_file",
                ));
            }
            if let Some(u) = &w.url
                && !(u.starts_with("https://") || u.starts_with("http://"))
            {
                return Err(self.invalid(
                    &format!("notify.webhook[{i}].url"),
                    "must be an http(s) URL",
                ));
            }
        }
        parse_schedule(&self.daemon.schedule).map_err(|m| self.invalid("daemon.schedule", m))?;
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let key = format!("tenant[{i}]");
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    &format!("{key}.name"),
                    format!("{:?} must be non-empty letters, digits, '-' or '_'", t.name),
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(self.invalid(
                    &format!("{key}.name"),
                    format!("tenant name {:?} is used twice", t.name),
                ));
            }
            if !crate::text::is_guid(&t.tenant_id) {
                return Err(self.invalid(
                    &format!("{key}.tenant_id"),
                    format!("{:?} is not a GUID", t.tenant_id),
                ));
            }
            match (&t.source.dir, &t.source.url) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(
                        self.invalid(&format!("{key}.source"), "give exactly one of dir or url")
                    );
                }
            }
            if t.source.token_file.is_some() && t.source.url.is_none() {
                return Err(self.invalid(
                    &format!("{key}.source.token_file"),
                    "only applies to a url source",
                ));
            }
            if let Some(sch) = &t.schedule {
                parse_schedule(sch).map_err(|m| self.invalid(&format!("{key}.schedule"), m))?;
            }
            if let Some(g) = &t.graph {
                g.validate(&format!("{key}.graph"))
                    .map_err(|(k, m)| self.invalid(&k, m))?;
            } else if self.mode_for(t) != Mode::DryRun {
                return Err(self.invalid(
                    &format!("{key}.graph"),
                    format!(
                        "tenant {:?} may approve or enforce actions but has no [tenant.graph] section to execute them",
                        t.name
                    ),
                ));
            }
            if let Some(url) = &t.source.url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(self.invalid(
                    &format!("{key}.source.url"),
                    format!("{url:?} must be an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }

    /// The exceptions file: the configured one or `<policies_dir>/exceptions.toml`.
    pub fn exceptions_path(&self) -> PathBuf {
        self.exceptions_file
            .clone()
            .unwrap_or_else(|| self.policies_dir.join("exceptions.toml"))
    }

    /// The exceptions file and whether it must exist (when configured explicitly).
    pub fn exceptions_source(&self) -> crate::exceptions::ExceptionsSource {
        crate::exceptions::ExceptionsSource {
            path: self.exceptions_path(),
            configured_in: self.exceptions_file.as_ref().map(|_| self.path.clone()),
        }
    }

    /// Finds a tenant by its configured name.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The mode a tenant runs under: its own mode can only make the default stricter.
    pub fn mode_for(&self, tenant: &TenantConfig) -> Mode {
        tenant.mode.map_or(self.mode, |m| self.mode.strictest(m))
    }

    /// When an approval asked for at `now` expires (`approval_ttl` later).
    pub fn approval_expiry(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        now + chrono::Duration::from_std(self.approval_ttl.0)
            .unwrap_or_else(|_| chrono::Duration::hours(24))
    }
}

/// Parses a cron schedule the way the scheduler does: six fields with seconds, UTC.
pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(s)
        .map_err(|e| format!("{s:?} is not a cron schedule with seconds (\"sec min hour day month weekday\", UTC): {e}"))
        .and_then(|cron| match cron.find_next_occurrence(&chrono::Utc::now(), false) {
            Ok(_) => Ok(cron),
            Err(_) => Err(format!("{s:?} never fires (no such date)")),
        })
}

impl GraphConfig {
    fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_string()));
        if !crate::text::is_guid(&self.client_id) {
            return err(
                "client_id",
                "must be the app registration's client id (a GUID)",
            );
        }
        let secrets = [
            self.client_secret_file.is_some(),
            self.client_secret_env.is_some(),
            self.client_secret_credential.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let cert = self.certificate_file.is_some();
        let key_given = self.private_key_file.is_some() || self.private_key_credential.is_some();
        if cert != key_given {
            return err(
                "certificate_file",
                "certificate authentication needs certificate_file and one of private_key_file or private_key_credential",
            );
        }
        if secrets + usize::from(cert) != 1 {
            return err(
                "client_secret_file",
                "give exactly one credential: client_secret_file, client_secret_env, client_secret_credential, or certificate_file with its private key",
            );
        }
        if self.batch_size == 0 || self.batch_size > 20 {
            return err("batch_size", "must be 1 to 20 (Graph's $batch limit)");
        }
        if self.max_concurrency == 0 || self.max_attempts == 0 || self.timeout_secs == 0 {
            return err(
                "max_concurrency",
                "max_concurrency, max_attempts and timeout_secs must be above 0",
            );
        }
        if self.action_attempts == 0 || self.action_attempts > 100 {
            return err("action_attempts", "must be 1 to 100");
        }
        if self.action_retry_secs > 86_400 {
            return err(
                "action_retry_secs",
                "must be at most 86400 (a day); later waits double it up to a day",
            );
        }
        for (k, u) in [
            ("authority", &self.authority),
            ("graph_url", &self.graph_url),
        ] {
            if let Some(u) = u
                && !(u.starts_with("https://") || u.starts_with("http://"))
            {
                return err(k, "must be an http(s) URL");
            }
        }
        for (k, g) in [
            ("mfa.group_id", &self.mfa.group_id),
            (
                "phishing_resistant_mfa.group_id",
                &self.phishing_resistant_mfa.group_id,
            ),
        ] {
            if let Some(g) = g
                && !crate::text::is_guid(g)
            {
                return err(k, "must be a group object id (GUID)");
            }
        }
        for (k, m) in [
            ("mfa.mode", &self.mfa),
            ("phishing_resistant_mfa.mode", &self.phishing_resistant_mfa),
        ] {
            if m.mode == Some(MfaMode::Users) && m.group_id.is_some() {
                return err(
                    k,
                    "\"users\" lists users in the policy, so group_id would be ignored: remove one of them",
                );
            }
        }
        Ok(())
    }
}

/// Keys whose values are secrets (webhook and scan URLs carry tokens, a
/// PostgreSQL URL its password): never echoed into errors, logs or history.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // `*_file` and `*_credential` name where a secret is, not the secret.
    !k.ends_with("_file")
        && !k.ends_with("_credential")
        && ["url", "secret", "token", "password", "key"]
            .iter()
            .any(|s| k.contains(s))
}

/// One line of a toml error: the line it quotes from the file (`12 | url =
/// "..."`) loses its value when the key is a secret's.
fn redact_quoted_secret(line: &str) -> String {
    let Some((gutter, content)) = line.split_once('|') else {
        return line.to_string();
    };
    if !gutter.trim().chars().all(|c| c.is_ascii_digit()) || gutter.trim().is_empty() {
        return line.to_string();
    }
    match content.split_once('=') {
        Some((key, _)) if is_secret_key(key.trim().trim_matches('"')) => {
            format!("{gutter}|{key}= <value not shown: it may be a secret>")
        }
        _ => line.to_string(),
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_error_on_a_secret_line_names_the_place_but_not_the_value() {
        let text = "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://hooks.example/services/T0/B0/SECRETVALUE\" junk\n";
        let e = Config::parse(text, Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(!e.contains("SECRETVALUE"), "{e}");
        assert!(e.contains("value not shown"), "{e}");
        // Other lines are still quoted, so ordinary mistakes stay easy to find.
        let e = Config::parse("mode = 5\n", Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode = 5"), "{e}");
    }

    #[test]
    fn a_store_url_with_a_password_is_never_quoted() {
        let text = "[store]\nurl = \"mysql://app:hunter2@db/x\"\n";
        let e = Config::parse(text, Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
