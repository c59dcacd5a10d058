//! From proposals to a plan: merge duplicates, apply exceptions and guardrails,
//! work out each action's mode and the run-wide downgrades. Plain data in, plain
//! data out: no I/O here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::actions;
use crate::config::{Config, Guardrails, Protected, TenantConfig};
use crate::domain::{ActionKind, ActionState, Mode, Reason};
use crate::exceptions::Exceptions;
use crate::guard::{self, LastAdmin};
use crate::policy::{Evaluation, Proposal, RuleSet};
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
    pub fn state(&self) -> ActionState {
        match (&self.decision, self.mode) {
            (Verdict::Proceed, Mode::Approval) if self.carried_over.is_some() => {
                ActionState::CarriedOver
            }
            (Verdict::Refused(_), _) => ActionState::Refused,
            (Verdict::Excepted(_), _) => ActionState::Skipped,
            (Verdict::Proceed, mode) => crate::domain::initial_state(mode),
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
    let base = tenant.mode_under(cfg.mode);
    let mut planner = Planner {
        protected: &cfg.protected,
        scan: input.scan,
        exceptions: input.exceptions,
        now: input.now,
        base,
        rule_modes: input
            .rules
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.mode))
            .collect(),
        last_admin: LastAdmin::new(input.scan),
    };
    let actions = merge(&input.eval.proposals)
        .into_iter()
        .map(|m| planner.action(m))
        .collect();
    let mut plan = Plan {
        tenant: tenant.name.clone(),
        mode: base,
        downgrades: Vec::new(),
        actions,
    };
    plan.downgrades = downgrades(
        &cfg.guardrails,
        &plan,
        input.scan.identities.len(),
        input.previous,
    );
    if !plan.downgrades.is_empty() {
        plan.mode = plan.mode.strictest(Mode::Approval);
        for a in &mut plan.actions {
            a.mode = a.mode.strictest(Mode::Approval);
        }
    }
    plan
}

/// Proposals merged into one action: one per (identity, kind, targets).
struct Merged {
    identity: usize,
    kind: ActionKind,
    targets: Vec<String>,
    reasons: Vec<Reason>,
}

/// One action per (identity, kind, targets), in the order first proposed,
/// carrying every distinct reason.
fn merge(proposals: &[Proposal]) -> Vec<Merged> {
    let mut merged: Vec<Merged> = Vec::new();
    let mut at: HashMap<(usize, ActionKind, &[String]), usize> = HashMap::new();
    for p in proposals {
        let n = *at
            .entry((p.identity, p.kind, p.targets.as_slice()))
            .or_insert_with(|| {
                merged.push(Merged {
                    identity: p.identity,
                    kind: p.kind,
                    targets: p.targets.clone(),
                    reasons: Vec::new(),
                });
                merged.len() - 1
            });
        let r = Reason {
            rule: p.rule.clone(),
            finding: p.finding.clone(),
            reason: p.reason.clone(),
        };
        if !merged[n].reasons.contains(&r) {
            merged[n].reasons.push(r);
        }
    }
    merged
}

/// What deciding each merged action needs, kept across actions: the
/// last-Global-Administrator count changes as actions go ahead.
struct Planner<'a> {
    protected: &'a Protected,
    scan: &'a Scan,
    exceptions: &'a Exceptions,
    now: DateTime<Utc>,
    base: Mode,
    rule_modes: HashMap<&'a str, Option<Mode>>,
    last_admin: LastAdmin,
}

impl Planner<'_> {
    /// The planned action for merged proposals: its mode and verdict.
    fn action(&mut self, m: Merged) -> PlannedAction {
        let id = &self.scan.identities[m.identity];
        let mode = m
            .reasons
            .iter()
            .filter_map(|r| self.rule_modes.get(r.rule.as_str()).copied().flatten())
            .fold(self.base, Mode::strictest);
        let decision = self.verdict(&m);
        PlannedAction {
            identity: m.identity,
            identity_id: id.id.0.to_string(),
            identity_upn: id.label().to_string(),
            identity_name: id.display_name.clone(),
            kind: m.kind,
            targets: m.targets,
            reasons: m.reasons,
            mode,
            decision,
            carried_over: None,
        }
    }

    /// Protection first, then exceptions, then the action's own guardrails and
    /// the last Global Administrator.
    fn verdict(&mut self, m: &Merged) -> Verdict {
        let id = &self.scan.identities[m.identity];
        if let Err(refusal) = guard::check_protected(self.protected, id) {
            return Verdict::Refused(refusal.to_string());
        }
        if let Some(why) = self.exception(m) {
            return Verdict::Excepted(why);
        }
        let action = actions::handler(m.kind);
        match action.check_scan(&m.targets, id).and_then(|()| {
            let removes_ga = action.removes_global_admin(&m.targets, id);
            self.last_admin.check(m.identity, id, removes_ga)
        }) {
            Ok(()) => Verdict::Proceed,
            Err(refusal) => Verdict::Refused(refusal.to_string()),
        }
    }

    /// Why the action is excepted: only when an unexpired exception covers every
    /// reason's rule; the words are those of the last reason's exception.
    fn exception(&self, m: &Merged) -> Option<String> {
        let id = &self.scan.identities[m.identity];
        let mut found = None;
        for r in &m.reasons {
            found = Some(self.exceptions.find(id, &r.rule, m.kind, self.now)?);
        }
        found.map(|e| {
            format!(
                "exception until {} (owner {}): {}",
                e.expires, e.owner, e.reason
            )
        })
    }
}

/// Why the run goes to approval: too many actions, on too many of the scan's
/// identities, or far more than the previous run (the circuit breaker).
fn downgrades(
    g: &Guardrails,
    plan: &Plan,
    identities: usize,
    previous: Option<i64>,
) -> Vec<String> {
    let mut out = Vec::new();
    let n = plan.proceeding();
    if n > g.max_actions_per_run {
        out.push(format!(
            "max_actions_per_run: {n} actions planned, the limit is {}",
            g.max_actions_per_run
        ));
    }
    let touched: HashSet<usize> = plan
        .actions
        .iter()
        .filter(|a| a.decision == Verdict::Proceed)
        .map(|a| a.identity)
        .collect();
    let pct = touched.len() as f64 * 100.0 / identities.max(1) as f64;
    if pct > g.max_actions_percent {
        out.push(format!(
            "max_actions_percent: actions on {} of {identities} identities ({pct:.1}%), the limit is {}%",
            touched.len(),
            g.max_actions_percent
        ));
    }
    if let Some(prev) = previous
        && n >= g.circuit_breaker_min_actions
        && n as f64 > prev as f64 * g.circuit_breaker_factor
    {
        out.push(format!(
            "circuit breaker: {n} actions planned against {prev} in the previous run (factor {})",
            g.circuit_breaker_factor
        ));
    }
    out
}

#[cfg(test)]
mod tests;
