//! `plan`, `run --once` and `execute`: preview or record a cycle, then settle
//! and execute what is ready, printing plans and execution reports.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use serde_json::{Value, json};

use super::args::{PlanArgs, RunArgs, ScanArgs, time_arg};
use super::{actor, open_store};
use crate::config::Config;
use crate::domain::{ActionState, ExecReport};
use crate::output::{Format, write_records};
use crate::plan::{Plan, PlannedAction, Verdict};
use crate::scan::ScanRequest;
use crate::service::cycle::{RunOptions, TenantOutcome};
use crate::service::execution::{OnSettleError, Pass, settle_and_execute};
use crate::store::{self, Store};
use crate::text::printable;

/// `plan`: previews the plan of the newest scan; records nothing.
pub(super) async fn plan(config: &Path, args: PlanArgs) -> Result<i32> {
    let cfg = Config::load(config)?;
    let opts = run_options(&cfg, &args.scan, false)?;
    let outcomes = crate::service::run::run(&cfg, None, &opts).await?;
    print_outcomes(&outcomes, args.scan.format, false);
    let code = exit_for(&outcomes);
    leave_to_exit(outcomes);
    Ok(code)
}

/// The end of a one-shot command: its plans (tens of thousands of small
/// allocations at 100k identities) are left to the operating system, which
/// reclaims the whole heap at exit, instead of being freed one by one first.
/// The scans are kept the same way (`RunOptions::keep_scans_until_exit`).
fn leave_to_exit(outcomes: Vec<TenantOutcome>) {
    std::mem::forget(outcomes);
}

/// `run --once`: records one cycle, then executes what it made ready.
pub(super) async fn run_once(config: &Path, args: RunArgs) -> Result<i32> {
    let cfg = Config::load(config)?;
    let store = open_store(&cfg, true, false)
        .await
        .with_context(|| store_failed(&cfg))?;
    let opts = run_options(&cfg, &args.scan, args.force)?;
    let outcomes = match crate::service::run::run(&cfg, Some(store.as_ref()), &opts).await {
        Ok(o) => o,
        Err(e @ crate::service::cycle::RunError::Store(_)) => {
            return Err(anyhow::Error::new(e).context(store_failed(&cfg)));
        }
        Err(e) => return Err(e.into()),
    };
    print_outcomes(&outcomes, args.scan.format, true);
    let code = exit_for(&outcomes);
    leave_to_exit(outcomes);
    let exec = execute(&cfg, store.as_ref(), opts.tenant.as_deref(), &opts.actor)
        .await
        .with_context(|| store_failed(&cfg))?;
    Ok(code.max(exec))
}

/// `execute`: settles and executes ready and approved actions.
pub(super) async fn execute_cmd(config: &Path, tenant: Option<String>) -> Result<i32> {
    let cfg = Config::load(config)?;
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

/// Context for an error of the history store during a run or an execution.
fn store_failed(cfg: &Config) -> String {
    format!(
        "history store {} failed, so this run stopped; nothing is sent to Microsoft Graph before its intent is recorded, and `entra-remediator execute` settles and finishes the rest once the store works again",
        store::display_name(&cfg.store.url)
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
        match settle_and_execute(cfg, t, store, actor, None, OnSettleError::Stop).await? {
            Pass::Idle => {}
            Pass::Unavailable { waiting, error } => {
                eprintln!(
                    "tenant {}: {waiting} action(s) cannot be executed: {error}",
                    t.name
                );
                code = 1;
            }
            Pass::Ran { settled, executed } => {
                let settled = settled?;
                if !settled.results.is_empty() {
                    eprintln!(
                        "tenant {}: settled {} action(s) left in flight:",
                        t.name,
                        settled.results.len()
                    );
                    print_exec(&t.name, &settled);
                }
                if let Some(report) = executed {
                    let report = report?;
                    print_exec(&t.name, &report);
                    if report.count(ActionState::Failed) > 0 || report.to_retry() > 0 {
                        code = 1;
                    }
                }
            }
        }
    }
    Ok(code)
}

/// Prints an execution report to stderr: one line per action and a summary.
pub(super) fn print_exec(tenant: &str, report: &ExecReport) {
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
        keep_scans_until_exit: true,
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

/// One tenant's planned run (recorded or a preview), as the printers need it.
struct PlannedRun<'a> {
    tenant: &'a str,
    run_id: &'a str,
    scan_source: &'a str,
    plan: &'a Plan,
    ids: &'a [i64],
    failures: &'a [crate::policy::RuleFailure],
    rule_set_hash: &'a str,
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
                let r = PlannedRun {
                    tenant,
                    run_id,
                    scan_source,
                    plan,
                    ids,
                    failures,
                    rule_set_hash,
                };
                print_plan(&r, format, recorded);
                print_summary(&r, recorded);
            }
        }
    }
}

/// One record of a planned action: why it is planned, and (when recorded) its
/// action and run ids.
fn plan_record(r: &PlannedRun, i: usize, a: &PlannedAction, recorded: bool) -> Value {
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
        "id": r.ids.get(i),
        "tenant": r.tenant,
        "run_id": r.run_id,
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
}

/// The plan's actions on stdout, streamed in the chosen format.
fn print_plan(r: &PlannedRun, format: Format, recorded: bool) {
    let recs = r
        .plan
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| plan_record(r, i, a, recorded));
    let cols: &[&str] = if recorded {
        &["id", "state", "action", "upn", "targets", "why"]
    } else {
        &["state", "action", "upn", "targets", "why"]
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Err(e) = write_records(&mut out, format, cols, recs).and_then(|()| out.flush()) {
        tracing::warn!("cannot write the plan to stdout: {e}");
    }
}

/// The run's summary on stderr: counts by state, downgrades and rule errors.
fn print_summary(r: &PlannedRun, recorded: bool) {
    let plan = r.plan;
    let count = |s: ActionState| plan.actions.iter().filter(|a| a.state() == s).count();
    eprintln!(
        "\ntenant {}: scan {}\n  {}, mode {}, rule set {}\n  {} action(s): {} planned (dry-run), {} pending approval, {} ready to execute, {} refused by guardrails, {} skipped by exceptions; {} rule error(s)",
        r.tenant,
        r.scan_source,
        if recorded {
            format!("run {} (recorded in history)", r.run_id)
        } else {
            "preview, nothing recorded".to_string()
        },
        plan.mode,
        &r.rule_set_hash[..12.min(r.rule_set_hash.len())],
        plan.actions.len(),
        count(ActionState::Planned),
        count(ActionState::Pending),
        count(ActionState::Ready),
        count(ActionState::Refused),
        count(ActionState::Skipped),
        r.failures.len()
    );
    if count(ActionState::CarriedOver) > 0 {
        eprintln!(
            "  {} action(s) carried over: still pending approval from an earlier scan, not queued again",
            count(ActionState::CarriedOver)
        );
    }
    for d in &plan.downgrades {
        eprintln!("  run-size guardrail: {d}; actions that would execute are held for approval");
    }
    for f in r.failures {
        eprintln!(
            "  rule error: {} for identity {}: {}",
            f.rule,
            printable(&f.identity_id),
            printable(&f.message)
        );
    }
}
