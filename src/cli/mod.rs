//! The command line: parsing with clap, and dispatch of each command to the
//! module that calls its use case and prints the result.

mod approvals;
pub mod args;
mod history;
mod policy;
mod remediate;
mod runs;
mod scan;
mod undo;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::store::{self, Store};
use args::{
    ApprovalsCmd, AuditCmd, ConfigCmd, HistoryArgs, PlanArgs, PolicyCmd, RemediateArgs, RunArgs,
    ScanCmd, ScansCmd,
};

/// Policy-driven remediation for Microsoft Entra ID.
///
/// Reads the newest identity-security scan for each configured tenant, applies
/// the rule files in the policies directory, and plans remediation actions. The
/// default mode is dry-run: nothing is changed, every decision is recorded in the
/// history store. Start with `entra-remediator plan`, then `run --once`.
#[derive(Debug, Parser)]
#[command(name = "entra-remediator", version, about, long_about)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "ENTRA_REMEDIATOR_CONFIG",
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,
    /// Log filter for messages on stderr (error, warn, info, debug).
    #[arg(
        long,
        global = true,
        env = "ENTRA_REMEDIATOR_LOG",
        default_value = "warn"
    )]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Preview the plan for the newest scan; writes nothing.
    Plan(PlanArgs),
    /// Run one full cycle (scan, rules, plan, record) under the configured modes.
    Run(RunArgs),
    /// Scan a tenant through Microsoft Graph (read-only) into a scan file in
    /// its scan directory, recorded in history.
    Scan(ScanCmd),
    /// List a tenant's scans by time.
    #[command(subcommand)]
    Scans(ScansCmd),
    /// Run as a service: scheduled runs per tenant, prompt execution of approved
    /// actions, rule hot-reload, SIGHUP reload, the local HTTP API.
    Daemon,
    /// Execute ready and approved actions through Microsoft Graph (after settling
    /// any left in flight by a stopped process).
    Execute {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Undo a done action (re-enable, re-add, re-create, take out of the MFA
    /// policy); the tenant's mode applies: it may wait for approval.
    Undo {
        /// The action to undo.
        id: i64,
        /// Who asks (recorded in history).
        #[arg(long)]
        by: String,
    },
    /// Request an action for chosen identities (or everyone a finding affects)
    /// through the same guardrails and mode as the rules; previews, and records
    /// with --yes.
    Remediate(RemediateArgs),
    /// List, show, approve or reject actions waiting for approval.
    #[command(subcommand)]
    Approvals(ApprovalsCmd),
    /// Show the audit history, filtered.
    History(HistoryArgs),
    /// Check the integrity of the audit history.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Check rule files or run their tests.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Check the configuration file.
    #[command(subcommand)]
    Config(ConfigCmd),
}

/// Opens the configured store: `create` for commands that record runs (the
/// store and a missing history key file are created), otherwise an existing
/// store only, read-only when `read_only`.
async fn open_store(cfg: &Config, create: bool, read_only: bool) -> Result<Box<dyn Store>> {
    let mut opts = store::OpenOptions::from_config(&cfg.store);
    if read_only {
        opts = opts.read_only();
    } else if !create {
        opts = opts.existing();
    }
    Ok(store::open_with(&opts).await?)
}

/// Who the command line records as acting: `cli:$USER`, or `cli`.
fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into())
}

/// Sets up logging: the daemon follows `daemon.log_format` from its config,
/// every other command logs text to stderr.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_new(&cli.log)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    let format = match cli.command {
        Command::Daemon => Config::load(&cli.config)
            .map(|c| c.daemon.log_format)
            .unwrap_or_default(),
        _ => crate::config::LogFormat::Text,
    };
    let registry = tracing_subscriber::registry().with(filter());
    let done = match format {
        crate::config::LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stdout),
            )
            .try_init()
            .is_ok(),
        crate::config::LogFormat::Journal => match tracing_journald::layer() {
            Ok(j) => registry.with(j).try_init().is_ok(),
            Err(e) => {
                eprintln!("journal logging unavailable ({e}); logging to stderr");
                false
            }
        },
        crate::config::LogFormat::Text => false,
    };
    if !done {
        let _ = tracing_subscriber::registry()
            .with(filter())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only for a person at a terminal, never into a
                    // file, a pipe or the journal's stderr capture.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init();
    }
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Policy(cmd) => policy::policy(&cli.config, cmd),
        Command::Config(ConfigCmd::Check) => policy::config_check(&cli.config),
        Command::Plan(args) => runs::plan(&cli.config, args).await,
        Command::Run(args) => runs::run_once(&cli.config, args).await,
        Command::Scan(cmd) => scan::scan(&cli.config, cmd).await,
        Command::Scans(cmd) => scan::scans(&cli.config, cmd),
        Command::Daemon => {
            crate::daemon::run(&cli.config).await?;
            Ok(0)
        }
        Command::Execute { tenant } => runs::execute_cmd(&cli.config, tenant).await,
        Command::Undo { id, by } => undo::undo(&cli.config, id, &by).await,
        Command::Remediate(args) => remediate::remediate(&cli.config, args).await,
        Command::Approvals(cmd) => approvals::approvals(&cli.config, cmd).await,
        Command::History(a) => history::history(&cli.config, a).await,
        Command::Audit(AuditCmd::Verify { checkpoint }) => {
            history::verify(&cli.config, checkpoint).await
        }
    }
}
