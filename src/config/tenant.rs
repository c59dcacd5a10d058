//! The `[[tenant]]` tables: which Entra tenant, where its scans come from.

use std::path::PathBuf;

use serde::Deserialize;

use super::duration::HumanDuration;
use super::graph::GraphConfig;
use crate::domain::Mode;

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

impl TenantConfig {
    /// The mode this tenant runs under: its own mode can only make `default` stricter.
    pub fn mode_under(&self, default: Mode) -> Mode {
        self.mode.map_or(default, |m| default.strictest(m))
    }
}

/// Where a tenant's scan results are found: exactly one of `dir` or `url`;
/// with `graph`, the daemon writes them into `dir` itself by scanning.
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
    /// How many scan files written by entra-remediator (`scan`, `scan import`)
    /// to keep in `dir`, newest first; older ones are deleted. Default 30.
    #[serde(default)]
    pub keep_scans: Option<u32>,
    /// Scan the tenant through Graph at the start of each scheduled run, and
    /// plan from that scan.
    #[serde(default)]
    pub graph: Option<GraphScanConfig>,
}

/// Scan files kept in a tenant's scan directory when `keep_scans` is not set.
pub const DEFAULT_KEEP_SCANS: u32 = 30;

impl SourceConfig {
    /// How many written scans to keep.
    pub fn keep_scans(&self) -> u32 {
        self.keep_scans.unwrap_or(DEFAULT_KEEP_SCANS)
    }
}

/// Settings of the built-in posture scan (`source.graph`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphScanConfig {
    /// Accounts without a successful sign-in for this many days are stale. Default 90.
    pub stale_days: u32,
    /// Groups (object id or display name) counted as privileged besides
    /// role-assignable groups and groups holding a directory role.
    pub privileged_groups: Vec<String>,
}

impl Default for GraphScanConfig {
    fn default() -> Self {
        GraphScanConfig {
            stale_days: 90,
            privileged_groups: Vec::new(),
        }
    }
}
