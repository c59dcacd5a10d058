//! The command line's arguments below the top-level command: scan selection,
//! approvals, history, audit, policy and config subcommands, and the parsing of
//! time arguments.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use crate::output::Format;

/// Which scan to use.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Only this tenant (by its configured name); default all tenants.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Use this scan file instead of the tenant's source (needs --tenant when several are configured).
    #[arg(long, value_name = "FILE")]
    pub scan: Option<PathBuf>,
    /// Use the scan taken at this time (RFC 3339) from the tenant's directory.
    #[arg(long, value_name = "TIME", conflicts_with = "scan")]
    pub scanned_at: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Scan selection.
    #[command(flatten)]
    pub scan: ScanArgs,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run one cycle now and exit (the scheduled daemon is a separate command).
    #[arg(long, required = true)]
    pub once: bool,
    /// Process the scan even if this exact scan was processed before.
    #[arg(long)]
    pub force: bool,
    /// Scan selection.
    #[command(flatten)]
    pub scan: ScanArgs,
}

/// Arguments of `remediate`: a person's request for one action.
#[derive(Debug, Args)]
pub struct RemediateArgs {
    /// The tenant (its configured name).
    #[arg(long)]
    pub tenant: String,
    /// The action: disable-user, revoke-sessions, enforce-mfa,
    /// enforce-phishing-resistant-mfa, remove-role-assignment, remove-group-membership.
    #[arg(long, value_name = "ACTION")]
    pub action: String,
    /// An identity (object id or UPN as in the scan); repeat for a bulk action.
    #[arg(
        long = "identity",
        value_name = "ID_OR_UPN",
        required_unless_present = "finding",
        conflicts_with = "finding"
    )]
    pub identities: Vec<String>,
    /// Everyone this finding (its id in the scan) affects (bulk-capable actions only).
    #[arg(long, value_name = "FINDING")]
    pub finding: Option<String>,
    /// A role assignment id / group id to remove (removal actions only); repeatable.
    #[arg(long = "target", value_name = "ID")]
    pub targets: Vec<String>,
    /// Why (required; recorded in history).
    #[arg(long)]
    pub reason: String,
    /// Who asks (recorded in history as the requester, who may not approve it).
    #[arg(long)]
    pub by: String,
    /// Use the scan taken at this time (RFC 3339); default the newest.
    #[arg(long = "scan", alias = "scanned-at", value_name = "TIME")]
    pub scanned_at: Option<String>,
    /// Record the request (without it, only the preview is shown).
    #[arg(long)]
    pub yes: bool,
    /// Output format of the plan.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `approvals` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// List actions waiting for approval (or all with --all).
    List {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<String>,
        /// Every action, whatever its state.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one action with its reasons, approvals and history.
    Show {
        /// Action id.
        id: i64,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Approve actions by id, or all bulk-approvable pending actions of a run.
    Approve(DecideArgs),
    /// Reject actions by id, or all pending actions of a run.
    Reject(DecideArgs),
}

/// Arguments of approve and reject.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Action ids.
    #[arg(required_unless_present = "run")]
    pub ids: Vec<i64>,
    /// Every pending action of this run (role and group removals are never approved in bulk).
    #[arg(long, conflicts_with = "ids")]
    pub run: Option<String>,
    /// Who decides (recorded in history).
    #[arg(long)]
    pub by: String,
    /// Why (recorded in history).
    #[arg(long)]
    pub comment: Option<String>,
}

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this identity (object id or UPN).
    #[arg(long)]
    pub identity: Option<String>,
    /// Only this action (disable_user, revoke_sessions, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// Only events that set this state (planned, pending, approved, refused, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// Only this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only this run.
    #[arg(long)]
    pub run: Option<String>,
    /// At or after this time (RFC 3339, or a date: its start in UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (RFC 3339, or a date: its start in UTC).
    #[arg(long)]
    pub until: Option<String>,
    /// Only the newest N events.
    #[arg(long)]
    pub limit: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute the history's hash chain (keyed when a history key is
    /// configured), check every approval against it and compare with checkpoints;
    /// exits 1 if anything was edited.
    Verify {
        /// Checkpoints kept apart from the store (JSON lines as the log and
        /// `[store] checkpoint_file` write them); default: the checkpoint_file.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check every rule file: syntax, metadata, unknown functions and actions.
    Check {
        /// Rules directory (default: policies_dir from the config).
        dir: Option<PathBuf>,
    },
    /// Run the rule tests in DIR/tests/*.json.
    Test {
        /// Rules directory (default: policies_dir from the config).
        dir: Option<PathBuf>,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Parse and validate the config, its rules and exceptions.
    Check,
}

pub(super) fn time_arg(name: &str, s: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!("--{name} {v:?} is not an RFC 3339 time like 2026-11-20T06:00:00Z")
                })
        })
        .transpose()
}

/// A `--since`/`--until` bound: an RFC 3339 time, or a plain date meaning its
/// start (00:00) in UTC.
pub(super) fn date_or_time_arg(name: &str, s: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    if let Some(v) = s.as_deref()
        && let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
    {
        return Ok(Some(d.and_time(chrono::NaiveTime::MIN).and_utc()));
    }
    s.as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!(
                        "--{name} {v:?} is not an RFC 3339 time like 2026-11-20T06:00:00Z nor a date like 2026-11-20"
                    )
                })
        })
        .transpose()
}

/// `scan`: read a tenant through Graph into a scan file, or import one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ScanCmd {
    /// Import another scanner's results instead of scanning.
    #[command(subcommand)]
    pub import: Option<ScanSub>,
    /// The tenant to scan (its configured name).
    #[arg(long, required = true)]
    pub tenant: Option<String>,
    /// Output format of the summary (`json` prints the report).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `scan` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScanSub {
    /// Convert a Maester, ScubaGear or Zero Trust Assessment result into a scan
    /// file in the tenant's scan directory.
    Import {
        /// The scanner that wrote PATH: maester, scubagear or zta.
        #[arg(long = "from", value_name = "SCANNER", value_parser = parse_scanner)]
        from: crate::scan::import::Format,
        /// The results file (for zta: the report folder, its zt-export folder, or the report file).
        path: PathBuf,
        /// The tenant the results are for (its configured name).
        #[arg(long)]
        tenant: String,
        /// Output format of the summary.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

fn parse_scanner(s: &str) -> std::result::Result<crate::scan::import::Format, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not a scanner this build imports: maester, scubagear or zta")
    })
}

/// `scans` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScansCmd {
    /// List a tenant's scans, newest first: the times `--scanned-at` accepts.
    List {
        /// The tenant (its configured name).
        #[arg(long)]
        tenant: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}
