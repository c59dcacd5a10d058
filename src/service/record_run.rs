//! Record a run: the run, its actions (an action still pending from an earlier
//! scan is carried over rather than queued again) and its rule errors, in one
//! store call.

use crate::domain::{ActionState, WorkKind};
use crate::plan::{Plan, PlannedAction, Verdict};
use crate::policy::{RuleFailure, RuleSet};
use crate::store::{Filter, NewAction, NewRuleError, NewRun, Store, StoreError};

use super::cycle::{RunError, TenantCycle};
use super::plan_run::Planned;

/// Records the planned run as `run_id`; returns the action ids in plan order.
pub(super) async fn record(
    store: &dyn Store,
    cycle: &TenantCycle<'_>,
    rules: &RuleSet,
    planned: &mut Planned,
    run_id: &str,
) -> Result<Vec<i64>, RunError> {
    let TenantCycle {
        cfg, tenant, opts, ..
    } = *cycle;
    let new_run = NewRun {
        id: run_id.to_string(),
        tenant: tenant.name.clone(),
        scan_source: planned.source_name.clone(),
        scan_sha256: planned.sha256.clone(),
        scanned_at: planned.scan.scanned_at,
        rule_set_hash: rules.hash.clone(),
        mode: planned.plan.mode.to_string(),
        downgrades: planned.plan.downgrades.clone(),
        identities: planned.scan.identities.len() as i64,
        findings: planned.scan.findings.len() as i64,
        started_at: opts.now,
        actor: opts.actor.clone(),
        kind: "scan".into(),
    };
    let expires = cfg.approval_expiry(opts.now);
    // Unless forced, the scan is recorded once: checked again in the store's
    // transaction, since another instance may have run it meanwhile.
    Ok(record_plan(
        store,
        &new_run,
        &mut planned.plan,
        &planned.eval.failures,
        expires,
        !opts.force,
    )
    .await?)
}

/// Records `run` with the plan's actions and the rule errors: a rule run and a
/// person's request (`service::remediate`) alike. A pending action expires at
/// `expires`; one still pending from an earlier run is carried over. With
/// `once`, nothing is recorded when a run of this scan is already
/// (`StoreError::AlreadyRecorded`).
pub(super) async fn record_plan(
    store: &dyn Store,
    run: &NewRun,
    plan: &mut Plan,
    failures: &[RuleFailure],
    expires: chrono::DateTime<chrono::Utc>,
    once: bool,
) -> Result<Vec<i64>, StoreError> {
    carry_over(store, &run.tenant, plan).await?;
    let actions: Vec<NewAction> = plan
        .actions
        .iter()
        .map(|a| new_action(a, expires))
        .collect();
    let errors: Vec<NewRuleError> = failures.iter().map(rule_error).collect();
    if once {
        store.record_run_once(run, &actions, &errors).await
    } else {
        store.record_run(run, &actions, &errors).await
    }
}

/// The action to record for a planned one; a pending approval expires at `expires`.
fn new_action(a: &PlannedAction, expires: chrono::DateTime<chrono::Utc>) -> NewAction {
    let state = a.state();
    NewAction {
        identity_id: a.identity_id.clone(),
        identity_upn: a.identity_upn.clone(),
        identity_name: a.identity_name.clone(),
        kind: a.kind.into(),
        targets: a.targets.clone(),
        reasons: a.reasons.clone(),
        mode: a.mode,
        state,
        state_reason: match &a.decision {
            Verdict::Proceed => a
                .carried_over
                .map(|id| format!("still pending as action {id}: carried over, not queued again")),
            Verdict::Refused(w) | Verdict::Excepted(w) => Some(w.clone()),
        },
        expires_at: (state == ActionState::Pending).then_some(expires),
    }
}

fn rule_error(f: &RuleFailure) -> NewRuleError {
    NewRuleError {
        rule: f.rule.clone(),
        finding: f.finding.clone(),
        identity_id: f.identity_id.clone(),
        message: f.message.clone(),
    }
}

/// Links each action that would be queued for approval again to the same action
/// (tenant, identity, kind, targets) still pending from an earlier scan, so that
/// hourly scans do not pile up copies for the approvers (and a webhook each).
async fn carry_over(store: &dyn Store, tenant: &str, plan: &mut Plan) -> Result<(), StoreError> {
    if !plan
        .actions
        .iter()
        .any(|a| a.state() == ActionState::Pending)
    {
        return Ok(());
    }
    let pending = store
        .actions(&Filter {
            tenant: Some(tenant.to_string()),
            state: Some(ActionState::Pending.to_string()),
            ..Filter::default()
        })
        .await?;
    for a in plan
        .actions
        .iter_mut()
        .filter(|a| a.state() == ActionState::Pending)
    {
        let kind = WorkKind::Remedy(a.kind);
        a.carried_over = pending
            .iter()
            .find(|p| {
                p.identity_id.eq_ignore_ascii_case(&a.identity_id) && p.kind == kind && {
                    let mut t = p.targets.clone();
                    t.sort();
                    let mut want = a.targets.clone();
                    want.sort();
                    t == want
                }
            })
            .map(|p| p.id);
    }
    Ok(())
}
