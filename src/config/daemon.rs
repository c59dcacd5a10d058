//! The `[daemon]` table: how the scheduled daemon runs, shuts down and logs.

use serde::Deserialize;

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
