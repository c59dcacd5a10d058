//! The command line: parsing with clap and dispatch to the library.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::approval::{ApprovalPolicy, Decision};
use crate::config::{Config, DEFAULT_CONFIG_PATH, RuleLimits};
use crate::domain::ActionState;
use std::io::Write;

use crate::output::{Format, action_json, render, write_records};
use crate::plan::Verdict;
use crate::policy::{RuleSet, rule_test};
use crate::run::{RunOptions, TenantOutcome};
use crate::scan::ScanRequest;
use crate::service::approvals::{self, DecisionRequest};
use crate::store::{self, Filter, Store};
use crate::text::printable;

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

fn time_arg(name: &str, s: &Option<String>) -> Result<Option<DateTime<Utc>>> {
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
fn date_or_time_arg(name: &str, s: &Option<String>) -> Result<Option<DateTime<Utc>>> {
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
        Command::Policy(cmd) => policy(&cli.config, cmd),
        Command::Config(ConfigCmd::Check) => {
            let cfg = Config::load(&cli.config)?;
            let (rules, exceptions) = crate::run::load_rules(&cfg)?;
            println!(
                "{}: OK ({} tenant(s), {} rule(s) in {}, {} exception(s), store {})",
                cli.config.display(),
                cfg.tenants.len(),
                rules.rules.len(),
                cfg.policies_dir.display(),
                exceptions.items.len(),
                cfg.store.url
            );
            Ok(0)
        }
        Command::Plan(args) => {
            let cfg = Config::load(&cli.config)?;
            let opts = run_options(&cfg, &args.scan, false)?;
            let outcomes = crate::run::run(&cfg, None, &opts).await?;
            print_outcomes(&outcomes, args.scan.format, false);
            Ok(exit_for(&outcomes))
        }
        Command::Run(args) => {
            let cfg = Config::load(&cli.config)?;
            let store = open_store(&cfg, true, false)
                .await
                .with_context(|| store_failed(&cfg))?;
            let opts = run_options(&cfg, &args.scan, args.force)?;
            let outcomes = match crate::run::run(&cfg, Some(store.as_ref()), &opts).await {
                Ok(o) => o,
                Err(e @ crate::run::RunError::Store(_)) => {
                    return Err(anyhow::Error::new(e).context(store_failed(&cfg)));
                }
                Err(e) => return Err(e.into()),
            };
            print_outcomes(&outcomes, args.scan.format, true);
            let code = exit_for(&outcomes);
            let exec = execute(&cfg, store.as_ref(), opts.tenant.as_deref(), &opts.actor)
                .await
                .with_context(|| store_failed(&cfg))?;
            Ok(code.max(exec))
        }
        Command::Daemon => {
            crate::daemon::run(&cli.config).await?;
            Ok(0)
        }
        Command::Execute { tenant } => {
            let cfg = Config::load(&cli.config)?;
            if let Some(t) = &tenant
                && cfg.tenant(t).is_none()
            {
                bail!("no tenant named {t:?} in the config");
            }
            let store = open_store(&cfg, true, false)
                .await
                .with_context(|| store_failed(&cfg))?;
            execute(&cfg, store.as_ref(), tenant.as_deref(), &actor())
                .await
                .with_context(|| store_failed(&cfg))
        }
        Command::Undo { id, by } => {
            let cfg = Config::load(&cli.config)?;
            let store = open_store(&cfg, true, false).await?;
            let (undo_id, state) = crate::execute::request_undo(
                &cfg,
                store.as_ref(),
                id,
                &by,
                &crate::approval::Origin::cli(),
                Utc::now(),
            )
            .await?;
            println!("undo of action {id} recorded as action {undo_id}: {state}");
            if state == ActionState::Ready {
                let a = store
                    .action(undo_id)
                    .await?
                    .context("undo action vanished")?;
                let tenant = cfg.tenant(&a.tenant).context("tenant not configured")?;
                let ex = crate::execute::Executor::new(&cfg, tenant, store.as_ref(), &by)?;
                let report = ex.execute(&[undo_id]).await?;
                print_exec(&a.tenant, &report);
                return Ok(if report.count(ActionState::Failed) > 0 {
                    1
                } else {
                    0
                });
            }
            Ok(0)
        }
        Command::Approvals(cmd) => {
            let cfg = Config::load(&cli.config)?;
            let store = open_store(&cfg, false, false).await?;
            approvals(&cfg, store.as_ref(), cmd).await
        }
        Command::History(a) => {
            let cfg = Config::load(&cli.config)?;
            let store = open_store(&cfg, false, true).await?;
            let filter = Filter {
                tenant: a.tenant,
                identity: a.identity,
                action: a.action,
                state: a.state,
                rule: a.rule,
                run: a.run,
                since: date_or_time_arg("since", &a.since)?,
                until: date_or_time_arg("until", &a.until)?,
                limit: a.limit,
                action_id: None,
            };
            let events = store.events(&filter).await?;
            let recs: Vec<Value> = events
                .iter()
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                .collect();
            print!(
                "{}",
                render(
                    a.format,
                    &[
                        "seq",
                        "at",
                        "tenant",
                        "kind",
                        "action_id",
                        "action_kind",
                        "identity_id",
                        "rule",
                        "state",
                        "actor",
                        "detail"
                    ],
                    &recs
                )
            );
            Ok(0)
        }
        Command::Audit(AuditCmd::Verify { checkpoint }) => {
            let cfg = Config::load(&cli.config)?;
            // Read the checkpoints first: a bad file changes nothing.
            let file =
                checkpoint.or_else(|| cfg.store.checkpoint_file.clone().filter(|f| f.exists()));
            let checkpoints = match &file {
                Some(f) => store::Checkpoint::read_file(f).map_err(anyhow::Error::msg)?,
                None => Vec::new(),
            };
            let store = open_store(&cfg, false, true).await?;
            let mut report = store.verify().await?;
            let cp_problems =
                store::check_checkpoints(store.as_ref(), &report, &checkpoints).await?;
            report.problems.extend(cp_problems);
            // stdout is the verdict; what it rests on goes to stderr.
            eprintln!(
                "{} approval row(s) checked against the chain; chain {}",
                report.approvals,
                match report.keyed_from {
                    Some(seq) => format!("keyed (HMAC-SHA-256) from event {seq} on"),
                    None => "UNKEYED: anyone with write access to the store could recompute it (set [store] history_key_file)".to_string(),
                }
            );
            match &file {
                Some(f) => eprintln!(
                    "compared with {} checkpoint(s) from {}",
                    checkpoints.len(),
                    f.display()
                ),
                None => eprintln!(
                    "no checkpoints compared: a rewrite of the whole store is found only against one kept apart (--checkpoint FILE)"
                ),
            }
            if let Some(head) = &report.head {
                eprintln!(
                    "checkpoint: {}",
                    serde_json::to_string(head).unwrap_or_default()
                );
            }
            if report.problems.is_empty() {
                println!(
                    "history intact: {} events, hash chain verified",
                    report.events
                );
                Ok(0)
            } else {
                for p in &report.problems {
                    println!("TAMPERED: {p}");
                }
                println!(
                    "history NOT intact: {} problem(s) in {} events",
                    report.problems.len(),
                    report.events
                );
                Ok(1)
            }
        }
    }
}

/// The store as messages name it: the SQLite path, or the PostgreSQL URL
/// without its password.
fn store_name(url: &str) -> String {
    store::display_name(url)
}

/// Context for an error of the history store during a run or an execution.
fn store_failed(cfg: &Config) -> String {
    format!(
        "history store {} failed, so this run stopped; nothing is sent to Microsoft Graph before its intent is recorded, and `entra-remediator execute` settles and finishes the rest once the store works again",
        store_name(&cfg.store.url)
    )
}

/// Settles in-flight actions and executes ready and approved ones for each
/// tenant that has any; returns the exit code (1 when something failed). Every
/// error it returns is the store's.
async fn execute(cfg: &Config, store: &dyn Store, only: Option<&str>, actor: &str) -> Result<i32> {
    let mut code = 0;
    for t in cfg
        .tenants
        .iter()
        .filter(|t| only.is_none_or(|o| o == t.name))
    {
        let mut waiting = 0;
        for state in [
            ActionState::Ready,
            ActionState::Approved,
            ActionState::Executing,
        ] {
            waiting += store
                .actions(&Filter {
                    tenant: Some(t.name.clone()),
                    state: Some(state.to_string()),
                    ..Filter::default()
                })
                .await?
                .len();
        }
        if waiting == 0 {
            continue;
        }
        let ex = match crate::execute::Executor::new(cfg, t, store, actor) {
            Ok(ex) => ex,
            Err(e) => {
                eprintln!(
                    "tenant {}: {waiting} action(s) cannot be executed: {e}",
                    t.name
                );
                code = 1;
                continue;
            }
        };
        let settled = ex.reconcile().await?;
        if !settled.results.is_empty() {
            eprintln!(
                "tenant {}: settled {} action(s) left in flight:",
                t.name,
                settled.results.len()
            );
            print_exec(&t.name, &settled);
        }
        let report = ex.run_pending().await?;
        print_exec(&t.name, &report);
        if report.count(ActionState::Failed) > 0 || report.to_retry() > 0 {
            code = 1;
        }
    }
    Ok(code)
}

fn print_exec(tenant: &str, report: &crate::domain::ExecReport) {
    for r in &report.results {
        eprintln!("  action {}: {}: {}", r.id, r.state, printable(&r.reason));
    }
    if !report.results.is_empty() {
        eprintln!(
            "tenant {tenant}: executed {} action(s): {} done, {} already done, {} refused, {} failed, {} to retry",
            report.results.len(),
            report.count(ActionState::Done),
            report.count(ActionState::AlreadyDone),
            report.count(ActionState::Refused),
            report.count(ActionState::Failed),
            report.to_retry()
        );
    }
}

fn run_options(cfg: &Config, a: &ScanArgs, force: bool) -> Result<RunOptions> {
    if a.scan.is_some() && a.tenant.is_none() && cfg.tenants.len() != 1 {
        bail!(
            "--scan FILE needs --tenant NAME when the config has {} tenants",
            cfg.tenants.len()
        );
    }
    if cfg.tenants.is_empty() {
        bail!("{}: no [[tenant]] configured", cfg.path.display());
    }
    Ok(RunOptions {
        tenant: a.tenant.clone(),
        scan: ScanRequest {
            file: a.scan.clone(),
            scanned_at: time_arg("scanned-at", &a.scanned_at)?,
        },
        force,
        actor: actor(),
        now: Utc::now(),
    })
}

fn exit_for(outcomes: &[TenantOutcome]) -> i32 {
    if outcomes
        .iter()
        .any(|o| matches!(o, TenantOutcome::Rejected { .. }))
    {
        2
    } else {
        0
    }
}

fn print_outcomes(outcomes: &[TenantOutcome], format: Format, recorded: bool) {
    for o in outcomes {
        match o {
            TenantOutcome::Rejected { tenant, error } => {
                eprintln!(
                    "tenant {tenant}: scan refused, nothing planned: {}",
                    printable(&error.to_string())
                );
            }
            TenantOutcome::AlreadyProcessed {
                tenant,
                scan_source,
            } => {
                eprintln!(
                    "tenant {tenant}: {scan_source} was already processed; nothing to do (use --force to process it again)"
                );
            }
            TenantOutcome::Planned {
                tenant,
                run_id,
                scan_source,
                plan,
                ids,
                failures,
                rule_set_hash,
            } => {
                let recs = plan
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let why = match &a.decision {
                            Verdict::Proceed => a
                                .reasons
                                .iter()
                                .map(|r| format!("[{}] {}", r.rule, r.reason))
                                .collect::<Vec<_>>()
                                .join("; "),
                            Verdict::Refused(w) | Verdict::Excepted(w) => w.clone(),
                        };
                        let mut rec = json!({
                            "id": ids.get(i),
                            "tenant": tenant,
                            "run_id": run_id,
                            "state": a.state(),
                            "mode": a.mode.as_str(),
                            "action": a.kind.as_str(),
                            "identity_id": a.identity_id,
                            "upn": a.identity_upn,
                            "targets": a.targets.join(" "),
                            "rules": a.reasons.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>().join(","),
                            "reasons": a.reasons,
                            "why": why,
                        });
                        // A preview records nothing: no action id, no run id to look up.
                        if !recorded && let Some(o) = rec.as_object_mut() {
                            o.remove("id");
                            o.remove("run_id");
                        }
                        rec
                    });
                let cols: &[&str] = if recorded {
                    &["id", "state", "action", "upn", "targets", "why"]
                } else {
                    &["state", "action", "upn", "targets", "why"]
                };
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                if let Err(e) =
                    write_records(&mut out, format, cols, recs).and_then(|()| out.flush())
                {
                    tracing::warn!("cannot write the plan to stdout: {e}");
                }
                let count = |s: &str| plan.actions.iter().filter(|a| a.state() == s).count();
                eprintln!(
                    "\ntenant {tenant}: scan {scan_source}\n  {}, mode {}, rule set {}\n  {} action(s): {} planned (dry-run), {} pending approval, {} ready to execute, {} refused by guardrails, {} skipped by exceptions; {} rule error(s)",
                    if recorded {
                        format!("run {run_id} (recorded in history)")
                    } else {
                        "preview, nothing recorded".to_string()
                    },
                    plan.mode,
                    &rule_set_hash[..12.min(rule_set_hash.len())],
                    plan.actions.len(),
                    count("planned"),
                    count("pending"),
                    count("ready"),
                    count("refused"),
                    count("skipped"),
                    failures.len()
                );
                if count("carried_over") > 0 {
                    eprintln!(
                        "  {} action(s) carried over: still pending approval from an earlier scan, not queued again",
                        count("carried_over")
                    );
                }
                for d in &plan.downgrades {
                    eprintln!(
                        "  run-size guardrail: {d}; actions that would execute are held for approval"
                    );
                }
                for f in failures {
                    eprintln!(
                        "  rule error: {} for identity {}: {}",
                        f.rule,
                        printable(&f.identity_id),
                        printable(&f.message)
                    );
                }
            }
        }
    }
}

fn load_rules_for(config: &Path, dir: Option<PathBuf>) -> Result<(PathBuf, RuleSet)> {
    // With an explicit DIR the config is optional (its rule limits apply if present).
    let (dir, limits) = match dir {
        Some(d) => {
            let limits = if config.exists() {
                Config::load(config)?.rules
            } else {
                RuleLimits::default()
            };
            (d, limits)
        }
        None => {
            let cfg = Config::load(config)?;
            (cfg.policies_dir.clone(), cfg.rules.clone())
        }
    };
    let rules = RuleSet::load(&dir, &limits)?;
    Ok((dir, rules))
}

fn policy(config: &Path, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Check { dir } => {
            let explicit_dir = dir.is_some();
            let (dir, rules) = load_rules_for(config, dir)?;
            // A rules directory checked on its own has its optional exceptions.toml;
            // otherwise the config says where the exceptions are.
            let source = if explicit_dir {
                crate::exceptions::ExceptionsSource {
                    path: dir.join("exceptions.toml"),
                    configured_in: None,
                }
            } else {
                crate::exceptions::ExceptionsSource::from_config(&Config::load(config)?)
            };
            crate::exceptions::Exceptions::load_from(&source)?
                .check_rules(rules.rules.iter().map(|r| r.name.as_str()))?;
            for w in rules.rules.iter().flat_map(|r| &r.warnings) {
                eprintln!("warning: {w}");
            }
            for r in &rules.rules {
                println!(
                    "ok  {:<40} {}{}{}",
                    r.name,
                    r.file.display(),
                    r.mode.map(|m| format!(" (mode {m})")).unwrap_or_default(),
                    if r.enabled { "" } else { " (disabled)" }
                );
            }
            println!("{} rule file(s) OK in {}", rules.rules.len(), dir.display());
            Ok(0)
        }
        PolicyCmd::Test { dir } => {
            let (dir, rules) = load_rules_for(config, dir)?;
            let outcomes = rule_test::run_dir(&dir, &rules)?;
            let failed = outcomes.iter().filter(|o| !o.problems.is_empty()).count();
            for o in &outcomes {
                if o.problems.is_empty() {
                    println!("PASS {} — {}", o.file.display(), o.description);
                } else {
                    println!("FAIL {} — {}", o.file.display(), o.description);
                    for p in &o.problems {
                        println!("     {p}");
                    }
                }
            }
            println!("{} passed, {} failed", outcomes.len() - failed, failed);
            Ok(if failed > 0 || outcomes.is_empty() {
                1
            } else {
                0
            })
        }
    }
}

async fn approvals(cfg: &Config, store: &dyn Store, cmd: ApprovalsCmd) -> Result<i32> {
    let now = Utc::now();
    store.expire_due(now).await?;
    let policy = ApprovalPolicy::from(&cfg.approvals);
    let action_cols = [
        "id",
        "tenant",
        "state",
        "action",
        "identity_upn",
        "targets",
        "rules",
        "expires_at",
    ];
    match cmd {
        ApprovalsCmd::List {
            tenant,
            run,
            all,
            format,
        } => {
            let rows = store
                .actions(&Filter {
                    tenant,
                    run,
                    state: (!all).then(|| ActionState::Pending.to_string()),
                    ..Filter::default()
                })
                .await?;
            let recs: Vec<Value> = rows.iter().map(action_json).collect();
            print!("{}", render(format, &action_cols, &recs));
            Ok(0)
        }
        ApprovalsCmd::Show { id, format } => {
            let a = store
                .action(id)
                .await?
                .with_context(|| format!("action {id} does not exist"))?;
            let approvals = store.approvals(id).await?;
            let events = store
                .events(&Filter {
                    action_id: Some(id),
                    ..Filter::default()
                })
                .await?;
            let mut rec = action_json(&a);
            rec["approvals"] = serde_json::to_value(&approvals).unwrap_or(Value::Null);
            rec["history"] = serde_json::to_value(&events).unwrap_or(Value::Null);
            match format {
                Format::Table => {
                    for (k, v) in rec.as_object().into_iter().flatten() {
                        if k != "history" && k != "approvals" {
                            println!(
                                "{k:<14} {}",
                                printable(
                                    &v.as_str().map_or_else(|| v.to_string(), str::to_string)
                                )
                            );
                        }
                    }
                    println!("approvals:");
                    for ap in &approvals {
                        let origin = match (&ap.interface, &ap.os_user) {
                            (Some(i), Some(u)) => format!(" (via {i}, OS user {u})"),
                            (Some(i), None) => format!(" (via {i})"),
                            _ => String::new(),
                        };
                        println!(
                            "  {} {} at {}{origin}: {}",
                            printable(&ap.approver),
                            ap.decision,
                            ap.at,
                            printable(ap.comment.as_deref().unwrap_or(""))
                        );
                    }
                    println!("history:");
                    for e in &events {
                        println!(
                            "  {} {} {} by {}: {}",
                            e.at,
                            e.kind,
                            e.state.as_deref().unwrap_or(""),
                            printable(&e.actor),
                            printable(&e.detail)
                        );
                    }
                }
                _ => print!("{}", render(format, &action_cols, &[rec])),
            }
            Ok(0)
        }
        ApprovalsCmd::Approve(a) => decide(store, &policy, a, Decision::Approve, now).await,
        ApprovalsCmd::Reject(a) => decide(store, &policy, a, Decision::Reject, now).await,
    }
}

async fn decide(
    store: &dyn Store,
    policy: &ApprovalPolicy,
    a: DecideArgs,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<i32> {
    let (ids, bulk) = match &a.run {
        Some(run) => {
            let pending = store
                .actions(&Filter {
                    run: Some(run.clone()),
                    state: Some(ActionState::Pending.to_string()),
                    ..Filter::default()
                })
                .await?;
            let mut ids = Vec::new();
            for p in &pending {
                let single = p.kind.is_single_identity();
                if decision == Decision::Approve && single {
                    eprintln!(
                        "skipped action {} ({} for {}): single-identity actions must be approved on their own",
                        p.id,
                        p.kind,
                        printable(&p.identity_upn)
                    );
                } else {
                    ids.push(p.id);
                }
            }
            if ids.is_empty() {
                bail!("run {run} has no pending actions that can be decided in bulk");
            }
            (ids, true)
        }
        None => (a.ids.clone(), false),
    };
    let req = DecisionRequest {
        ids,
        decision,
        by: a.by.clone(),
        comment: a.comment.clone(),
        bulk,
        now,
        origin: crate::approval::Origin::cli(),
    };
    let rows = approvals::decide(store, &req, policy).await?;
    for r in &rows {
        let note = if r.state == "pending" {
            " (first approval recorded; a second approver is required)"
        } else {
            ""
        };
        println!(
            "action {}: {} {} for {}: now {}{note}",
            r.id,
            r.kind,
            decision.as_str(),
            printable(&r.identity_upn),
            r.state
        );
    }
    Ok(0)
}
