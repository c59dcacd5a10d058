//! The TOML configuration: what to scan, which rules to apply, how strict to be.
//!
//! Every table denies unknown keys, so a typo is an error that names the key and
//! line rather than a setting silently ignored. Relative paths are resolved against
//! the directory of the config file, so a config works wherever it is run from.
//! Each table's types live in a submodule named for it; this module is their
//! facade, and holds the whole file's `Config` and its loading.

mod api;
mod console;
mod daemon;
mod duration;
mod errors;
mod graph;
mod notify;
mod safety;
mod store;
mod tenant;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

pub use api::{ApiConfig, ApiTokenConfig, LEGACY_TOKEN_NAME};
pub use console::ConsoleConfig;
pub use daemon::{DaemonConfig, LogFormat};
pub use duration::HumanDuration;
pub use errors::ConfigError;
pub use graph::{AssertionAlgorithm, Cloud, GraphConfig, MfaMode, MfaPolicyConfig, PolicyState};
pub use notify::{NoticeKind, NotifyConfig, WebhookConfig, WebhookFormat};
pub use safety::{ApprovalConfig, Guardrails, MAX_CALL_DEPTH, Protected, ProtectedBy, RuleLimits};
pub use store::StoreConfig;
pub use tenant::{DEFAULT_KEEP_SCANS, GraphScanConfig, SourceConfig, TenantConfig};

use crate::domain::Mode;

/// Default config path when neither `--config` nor `ENTRA_REMEDIATOR_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/entra-remediator/config.toml";

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
    /// The operator console in the browser.
    #[serde(default)]
    pub console: ConsoleConfig,
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
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::from_toml(path, &e))?;
        cfg.path = path.to_path_buf();
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.resolve_paths(&base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes every relative path in the config relative to `base`, the config
    /// file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        self.policies_dir = resolve(base, &self.policies_dir);
        self.exceptions_file = self.exceptions_file.as_ref().map(|p| resolve(base, p));
        if let Some(rest) = self.store.url.strip_prefix("sqlite://") {
            let p = resolve(base, Path::new(rest));
            self.store.url = format!("sqlite://{}", p.display());
        }
        self.store.history_key_file = self
            .store
            .history_key_file
            .as_ref()
            .map(|p| resolve(base, p));
        self.store.checkpoint_file = self
            .store
            .checkpoint_file
            .as_ref()
            .map(|p| resolve(base, p));
        self.api.token_file = self.api.token_file.as_ref().map(|p| resolve(base, p));
        self.console.client_secret_file = self
            .console
            .client_secret_file
            .as_ref()
            .map(|p| resolve(base, p));
        for t in &mut self.api.tokens {
            t.file = t.file.as_ref().map(|p| resolve(base, p));
        }
        for w in &mut self.notify.webhooks {
            w.url_file = w.url_file.as_ref().map(|p| resolve(base, p));
        }
        for t in &mut self.tenants {
            t.source.dir = t.source.dir.as_ref().map(|d| resolve(base, d));
            t.source.token_file = t.source.token_file.as_ref().map(|p| resolve(base, p));
            if let Some(g) = &mut t.graph {
                for p in [
                    &mut g.client_secret_file,
                    &mut g.certificate_file,
                    &mut g.private_key_file,
                ] {
                    *p = p.as_ref().map(|p| resolve(base, p));
                }
            }
        }
    }

    /// The exceptions file: the configured one or `<policies_dir>/exceptions.toml`.
    pub fn exceptions_path(&self) -> PathBuf {
        self.exceptions_file
            .clone()
            .unwrap_or_else(|| self.policies_dir.join("exceptions.toml"))
    }

    /// Finds a tenant by its configured name.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// When an approval asked for at `now` expires: `approval_ttl` later.
    pub fn approval_expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
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

/// `p` as is when absolute, else joined to `base`.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
