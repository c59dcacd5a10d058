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
