//! `remediate`: a person's request for one action, previewed (each target, its
//! effect, the refusals with their reasons, the mode) and recorded with `--yes`.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use chrono::Utc;
use serde_json::Value;

use super::args::{RemediateArgs, time_arg};
use super::open_store;
use crate::access::{Caller, Interface, Role, Roles};
use crate::config::Config;
use crate::domain::{ActionKind, ActionState};
use crate::output::{planned_json, write_records};
use crate::plan::Plan;
use crate::service::remediate::{self, RemediationRequest, Selection};
use crate::text::printable;

/// `remediate ...`: previews the request; records it with `--yes`.
pub(super) async fn remediate(config: &Path, args: RemediateArgs) -> Result<i32> {
    let cfg = Config::load(config)?;
    let Some(kind) = ActionKind::parse(&args.action.trim().replace('-', "_")) else {
        let names: Vec<String> = ActionKind::ALL
            .iter()
            .map(|k| k.as_str().replace('_', "-"))
            .collect();
        bail!(
            "--action {:?} is not an action; one of: {}",
            args.action,
            names.join(", ")
        );
    };
    let now = Utc::now();
    // The command line's user holds the store's file permissions anyway.
    let caller = Caller {
        name: args.by.trim().to_string(),
        interface: Interface::Cli,
        roles: Roles::of(&Role::ALL),
    };
    if caller.name.is_empty() {
        bail!("--by must name who asks (recorded in history as the requester)");
    }
    let scanned_at = time_arg("scan", &args.scanned_at)?;
    let scan = remediate::load_scan(&cfg, &args.tenant, scanned_at, now).await?;
    let req = RemediationRequest {
        tenant: args.tenant.clone(),
        kind,
        selection: match args.finding {
            Some(f) => Selection::Finding(f),
            None => Selection::Identities(args.identities),
        },
        targets: args.targets,
        reason: args.reason,
        caller,
        now,
    };
    if !args.yes {
        // The store, when there is one, only for the circuit breaker's previous
        // run: the preview then shows what `--yes` would record.
        let store = open_store(&cfg, false, true).await.ok();
        let p = remediate::preview(&cfg, store.as_deref(), &scan, &req).await?;
        print_plan(&p.plan, &[], args.format);
        eprintln!(
            "\ntenant {}: scan {} (taken {})\n  preview of {} for {} identit(ies), nothing recorded",
            p.plan.tenant,
            p.scan_source,
            p.scanned_at.to_rfc3339(),
            kind,
            p.identities
        );
        print_summary(&p.plan, kind);
        eprintln!("  to record this request, run the same command with --yes");
        return Ok(0);
    }
    let store = open_store(&cfg, true, false).await?;
    let s = remediate::submit(&cfg, store.as_ref(), &scan, &req).await?;
    print_plan(&s.plan, &s.ids, args.format);
    eprintln!(
        "\ntenant {}: recorded as run {} by {}",
        s.plan.tenant, s.run_id, req.caller.name
    );
    print_summary(&s.plan, kind);
    if s.plan
        .actions
        .iter()
        .any(|a| a.state() == ActionState::Ready)
    {
        eprintln!(
            "  ready actions run at the daemon's next execution, or now with `entra-remediator execute --tenant {}`",
            s.plan.tenant
        );
    }
    Ok(0)
}

/// The plan's actions on stdout: state, action, identity, targets, and what
/// it changes or why it was refused.
fn print_plan(plan: &Plan, ids: &[i64], format: crate::output::Format) {
    let recs = plan.actions.iter().enumerate().map(|(i, a)| {
        let mut rec = planned_json(a, ids.get(i).copied());
        rec["targets"] = Value::String(a.targets.join(" "));
        if rec["why"].is_null() {
            rec["why"] = Value::String(a.kind.effect().to_string());
        }
        rec
    });
    let cols: &[&str] = if ids.is_empty() {
        &["state", "action", "upn", "targets", "why"]
    } else {
        &["id", "state", "action", "upn", "targets", "why"]
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Err(e) = write_records(&mut out, format, cols, recs).and_then(|()| out.flush()) {
        tracing::warn!("cannot write the plan to stdout: {e}");
    }
}

/// The mode, the effect, the counts by state and the run-size downgrades, on stderr.
fn print_summary(plan: &Plan, kind: ActionKind) {
    let count = |s: ActionState| plan.actions.iter().filter(|a| a.state() == s).count();
    eprintln!(
        "  mode {}; {kind} {}\n  {} action(s): {} planned (dry-run), {} pending approval, {} ready to execute, {} refused by guardrails, {} skipped by exceptions, {} carried over",
        plan.mode,
        kind.effect(),
        plan.actions.len(),
        count(ActionState::Planned),
        count(ActionState::Pending),
        count(ActionState::Ready),
        count(ActionState::Refused),
        count(ActionState::Skipped),
        count(ActionState::CarriedOver),
    );
    for d in &plan.downgrades {
        eprintln!(
            "  run-size guardrail: {}; actions that would execute are held for approval",
            printable(d)
        );
    }
}
