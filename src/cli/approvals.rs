//! `approvals list|show|approve|reject`: overdue approvals are expired first,
//! then the use case is called and its result printed.

use std::path::Path;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::args::{ApprovalsCmd, DecideArgs};
use super::open_store;
use crate::approval::{ApprovalPolicy, Decision, Origin};
use crate::config::Config;
use crate::domain::ActionState;
use crate::output::{Format, action_json, detail_json, render};
use crate::service::approvals::{self, DecisionRequest};
use crate::service::run_decision::{self, RunDecisionError};
use crate::service::show::ActionDetail;
use crate::service::{actions, show};
use crate::store::{Filter, Store};
use crate::text::printable;

/// The columns an action is listed with.
const ACTION_COLUMNS: [&str; 8] = [
    "id",
    "tenant",
    "state",
    "action",
    "identity_upn",
    "targets",
    "rules",
    "expires_at",
];

/// Runs an `approvals` subcommand.
pub(super) async fn approvals(config: &Path, cmd: ApprovalsCmd) -> Result<i32> {
    let cfg = Config::load(config)?;
    let store = open_store(&cfg, false, false).await?;
    let store = store.as_ref();
    let now = Utc::now();
    actions::expire_overdue(store, now).await?;
    let policy = ApprovalPolicy::from(&cfg.approvals);
    match cmd {
        ApprovalsCmd::List {
            tenant,
            run,
            all,
            format,
        } => {
            let rows = if all {
                let filter = Filter {
                    tenant,
                    run,
                    ..Filter::default()
                };
                actions::list(store, &filter, now).await?
            } else {
                actions::pending(store, tenant, run, now).await?
            };
            let recs: Vec<Value> = rows.iter().map(action_json).collect();
            print!("{}", render(format, &ACTION_COLUMNS, &recs));
            Ok(0)
        }
        ApprovalsCmd::Show { id, format } => {
            let Some(detail) = show::show(store, id, now).await? else {
                bail!("action {id} does not exist");
            };
            match format {
                Format::Table => print_detail(&detail),
                _ => print!(
                    "{}",
                    render(format, &ACTION_COLUMNS, &[detail_json(&detail)])
                ),
            }
            Ok(0)
        }
        ApprovalsCmd::Approve(a) => decide(store, &policy, a, Decision::Approve, now).await,
        ApprovalsCmd::Reject(a) => decide(store, &policy, a, Decision::Reject, now).await,
    }
}

/// `approvals show` as a table: the action's fields, its approvals, its history.
fn print_detail(d: &ActionDetail) {
    let rec = action_json(&d.action);
    for (k, v) in rec.as_object().into_iter().flatten() {
        println!(
            "{k:<14} {}",
            printable(&v.as_str().map_or_else(|| v.to_string(), str::to_string))
        );
    }
    println!("approvals:");
    for ap in &d.approvals {
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
    for e in &d.history {
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

/// The actions to decide: the ids given, or the run's pending actions a bulk
/// decision covers (single-identity ones skipped with a note on stderr).
async fn decided_ids(
    store: &dyn Store,
    a: &DecideArgs,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<(Vec<i64>, bool)> {
    let Some(run) = &a.run else {
        return Ok((a.ids.clone(), false));
    };
    let selection = match run_decision::select(store, run, decision, now).await {
        Ok(s) => s,
        Err(RunDecisionError::Store(e)) => return Err(e.into()),
        Err(RunDecisionError::UnknownRun(_) | RunDecisionError::NothingToDecide { .. }) => {
            bail!("run {run} has no pending actions that can be decided in bulk")
        }
    };
    for p in &selection.skipped {
        eprintln!(
            "skipped action {} ({} for {}): single-identity actions must be approved on their own",
            p.id,
            p.kind,
            printable(&p.identity_upn)
        );
    }
    Ok((selection.ids, true))
}

async fn decide(
    store: &dyn Store,
    policy: &ApprovalPolicy,
    a: DecideArgs,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<i32> {
    let (ids, bulk) = decided_ids(store, &a, decision, now).await?;
    let req = DecisionRequest {
        ids,
        decision,
        by: a.by,
        comment: a.comment,
        bulk,
        now,
        origin: Origin::cli(),
    };
    let rows = approvals::decide(store, &req, policy).await?;
    for r in &rows {
        let note = if r.state == ActionState::Pending {
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
