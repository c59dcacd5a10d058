//! From proposals to a plan: merge duplicates, apply exceptions and guardrails,
//! work out each action's mode and the run-wide downgrades. Plain data in, plain
//! data out: no I/O here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, TenantConfig};
use crate::domain::{ActionKind, Mode, Reason};
use crate::exceptions::Exceptions;
use crate::guard::{self, LastAdmin};
use crate::policy::{Evaluation, RuleSet};
use crate::scan::Scan;

/// The plan's verdict on one action (not an approver's `approval::Decision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "why", rename_all = "snake_case")]
pub enum Verdict {
    /// It goes ahead under its mode.
    Proceed,
    /// A guardrail refused it.
    Refused(String),
    /// An exception covers it.
    Excepted(String),
}

/// One merged, checked action.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedAction {
    /// Index of the identity in the scan.
    #[serde(skip)]
    pub identity: usize,
    /// Identity object id.
    pub identity_id: String,
    /// Identity UPN.
    pub identity_upn: String,
    /// Identity display name.
    pub identity_name: String,
    /// The action.
    pub kind: ActionKind,
    /// Role assignment / group ids for removals.
    pub targets: Vec<String>,
    /// Every reason, from every rule and finding that asked for it.
    pub reasons: Vec<Reason>,
    /// The strictest of config, tenant, rules and run downgrades.
    pub mode: Mode,
    /// Go ahead, refused or excepted.
    pub decision: Verdict,
    /// The id of the same action (tenant, identity, kind, targets) still pending
    /// from an earlier scan: this one is recorded as carried over to it rather
    /// than queued for approval again. Set when the run is recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried_over: Option<i64>,
}

impl PlannedAction {
    /// The state this action is recorded in.
    pub fn state(&self) -> &'static str {
        match (&self.decision, self.mode) {
            (Verdict::Proceed, Mode::Approval) if self.carried_over.is_some() => "carried_over",
            (Verdict::Refused(_), _) => "refused",
            (Verdict::Excepted(_), _) => "skipped",
            (Verdict::Proceed, Mode::DryRun) => "planned",
            (Verdict::Proceed, Mode::Approval) => "pending",
            (Verdict::Proceed, Mode::Enforce) => "ready",
        }
    }
}

/// The plan for one scan of one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Tenant name.
    pub tenant: String,
    /// The mode before per-rule strictness: config and tenant, then downgrades.
    pub mode: Mode,
    /// Why the run was downgraded to approval, if it was.
    pub downgrades: Vec<String>,
    /// The actions, in a stable order.
    pub actions: Vec<PlannedAction>,
}

impl Plan {
    /// How many actions go ahead (not refused or excepted).
    pub fn proceeding(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.decision == Verdict::Proceed)
            .count()
    }
}

/// What a plan is built from, besides the config.
pub struct Inputs<'a> {
    /// The scan.
    pub scan: &'a Scan,
    /// The rules (for their modes).
    pub rules: &'a RuleSet,
    /// What the rules proposed.
    pub eval: &'a Evaluation,
    /// The exceptions.
    pub exceptions: &'a Exceptions,
    /// Actions the tenant's previous run went ahead with, for the circuit breaker.
    pub previous: Option<i64>,
    /// The current time (exception expiry).
    pub now: DateTime<Utc>,
}

/// Builds the plan from what the rules proposed.
pub fn build(cfg: &Config, tenant: &TenantConfig, input: &Inputs<'_>) -> Plan {
    let Inputs {
        scan,
        rules,
        eval,
        exceptions,
        previous,
        now,
    } = *input;
    let rule_modes: HashMap<&str, Option<Mode>> = rules
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.mode))
        .collect();
    let base = tenant.mode.map_or(cfg.mode, |m| cfg.mode.strictest(m));

    // Merge: one action per (identity, kind, targets), carrying every reason.
    let mut order: Vec<(usize, ActionKind, Vec<String>)> = Vec::new();
    let mut merged: HashMap<(usize, ActionKind, Vec<String>), Vec<Reason>> = HashMap::new();
    for p in &eval.proposals {
        let key = (p.identity, p.kind, p.targets.clone());
        let reasons = merged.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        let r = Reason {
            rule: p.rule.clone(),
            finding: p.finding.clone(),
            reason: p.reason.clone(),
        };
        if !reasons.contains(&r) {
            reasons.push(r);
        }
    }

    let mut last_admin = LastAdmin::new(scan);
    let mut actions = Vec::with_capacity(order.len());
    for key in order {
        let reasons = merged.remove(&key).unwrap_or_default();
        let (idx, kind, targets) = key;
        let id = &scan.identities[idx];
        let mode = reasons
            .iter()
            .filter_map(|r| rule_modes.get(r.rule.as_str()).copied().flatten())
            .fold(base, Mode::strictest);
        let excepted = || -> Option<String> {
            let mut found = None;
            for r in &reasons {
                let e = exceptions.find(id, &r.rule, kind, now)?;
                found = Some(format!(
                    "exception until {} (owner {}): {}",
                    e.expires, e.owner, e.reason
                ));
            }
            found
        };
        let decision = match guard::check_protected(&cfg.protected, id) {
            Err(refusal) => Verdict::Refused(refusal.to_string()),
            Ok(()) => match excepted() {
                Some(why) => Verdict::Excepted(why),
                None => match guard::check_action(kind, &targets, id)
                    .and_then(|()| last_admin.check(idx, id, kind, &targets))
                {
                    Ok(()) => Verdict::Proceed,
                    Err(refusal) => Verdict::Refused(refusal.to_string()),
                },
            },
        };
        actions.push(PlannedAction {
            identity: idx,
            identity_id: id.id.0.clone(),
            identity_upn: id.user_principal_name.clone(),
            identity_name: id.display_name.clone(),
            kind,
            targets,
            reasons,
            mode,
            decision,
            carried_over: None,
        });
    }

    let mut plan = Plan {
        tenant: tenant.name.clone(),
        mode: base,
        downgrades: Vec::new(),
        actions,
    };
    let n = plan.proceeding();
    let g = &cfg.guardrails;
    if n > g.max_actions_per_run {
        plan.downgrades.push(format!(
            "max_actions_per_run: {n} actions planned, the limit is {}",
            g.max_actions_per_run
        ));
    }
    let touched: std::collections::HashSet<usize> = plan
        .actions
        .iter()
        .filter(|a| a.decision == Verdict::Proceed)
        .map(|a| a.identity)
        .collect();
    let pct = touched.len() as f64 * 100.0 / scan.identities.len().max(1) as f64;
    if pct > g.max_actions_percent {
        plan.downgrades.push(format!(
            "max_actions_percent: actions on {} of {} identities ({pct:.1}%), the limit is {}%",
            touched.len(),
            scan.identities.len(),
            g.max_actions_percent
        ));
    }
    if let Some(prev) = previous
        && n >= g.circuit_breaker_min_actions
        && n as f64 > prev as f64 * g.circuit_breaker_factor
    {
        plan.downgrades.push(format!(
            "circuit breaker: {n} actions planned against {prev} in the previous run (factor {})",
            g.circuit_breaker_factor
        ));
    }
    if !plan.downgrades.is_empty() {
        plan.mode = plan.mode.strictest(Mode::Approval);
        for a in &mut plan.actions {
            a.mode = a.mode.strictest(Mode::Approval);
        }
    }
    plan
}
