//! From proposals to a plan: merge duplicates, apply exceptions and guardrails,
//! work out each action's mode and the run-wide downgrades. Plain data in, plain
//! data out: no I/O here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, Guardrails, Protected, TenantConfig};
use crate::domain::{ActionKind, Mode, Reason};
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
    let base = tenant.mode.map_or(cfg.mode, |m| cfg.mode.strictest(m));
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
            identity_id: id.id.0.clone(),
            identity_upn: id.user_principal_name.clone(),
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
        match guard::check_action(m.kind, &m.targets, id)
            .and_then(|()| self.last_admin.check(m.identity, id, m.kind, &m.targets))
        {
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
mod tests {
    use std::path::PathBuf;

    use chrono::TimeZone;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::RuleLimits;
    use crate::exceptions::Exception;
    use crate::scan::GLOBAL_ADMIN_TEMPLATE;

    fn guid(n: u32) -> String {
        format!("00000000-0000-0000-0000-{n:012x}")
    }

    fn ident(n: u32, upn: &str) -> Value {
        json!({
            "id": guid(n), "user_principal_name": upn, "display_name": upn,
            "user_type": "Member", "account_enabled": true, "last_sign_in": null,
            "roles": [], "groups": []
        })
    }

    fn ga(n: u32, upn: &str) -> Value {
        let mut v = ident(n, upn);
        v["roles"] = json!([{
            "assignment_id": format!("ga-{n}"), "role_definition_id": GLOBAL_ADMIN_TEMPLATE,
            "role_name": "Global Administrator", "directory_scope_id": "/",
            "assignment_type": "active"
        }]);
        v
    }

    /// A scan of `n` plain members u1@t.com.. plus `more`.
    fn scan(n: u32, more: Vec<Value>) -> Scan {
        let mut identities: Vec<Value> =
            (1..=n).map(|i| ident(i, &format!("u{i}@t.com"))).collect();
        identities.extend(more);
        let doc = json!({
            "schema_version": 1, "tenant_id": guid(999), "tenant_name": "T",
            "scanned_at": "2026-11-20T00:00:00Z", "identities": identities, "findings": []
        });
        Scan::from_slice(doc.to_string().as_bytes(), "test scan").unwrap()
    }

    /// Config with `top` keys and tables, and one tenant with `tenant` keys.
    fn config(top: &str, tenant: &str) -> Config {
        toml::from_str(&format!(
            "{top}\n[[tenant]]\nname = \"t\"\ntenant_id = \"{}\"\nsource = {{ dir = \"scans\" }}\n{tenant}\n",
            guid(999)
        ))
        .unwrap()
    }

    /// Guardrail limits that stay out of the way.
    const ROOMY: &str = "[guardrails]\nmax_actions_percent = 100.0";

    /// Rule `plain` has no mode of its own; rule `careful` asks for approval.
    fn rules() -> RuleSet {
        let rule = |name: &str, mode: &str| {
            (
                PathBuf::from(format!("{name}.rhai")),
                format!(
                    "fn metadata() {{ #{{ name: \"{name}\", description: \"d\"{mode} }} }}\nfn evaluate(finding, identity, tenant) {{ () }}\n"
                ),
            )
        };
        RuleSet::from_sources(
            vec![rule("plain", ""), rule("careful", ", mode: \"approval\"")],
            &RuleLimits::default(),
        )
        .unwrap()
    }

    fn proposal(rule: &str, identity: usize, kind: ActionKind, targets: &[&str]) -> Proposal {
        Proposal {
            rule: rule.into(),
            finding: "F1".into(),
            identity,
            kind,
            targets: targets.iter().map(|t| t.to_string()).collect(),
            reason: format!("{rule} says so"),
        }
    }

    fn exceptions(items: &[&str]) -> Exceptions {
        let mut ex = Exceptions::default();
        ex.items = items
            .iter()
            .map(|t| toml::from_str::<Exception>(t).unwrap())
            .collect();
        ex
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 1, 12, 0, 0).unwrap()
    }

    fn plan_of(
        cfg: &Config,
        scan: &Scan,
        proposals: Vec<Proposal>,
        exceptions: &Exceptions,
        previous: Option<i64>,
    ) -> Plan {
        let rules = rules();
        let eval = Evaluation {
            proposals,
            ..Evaluation::default()
        };
        let input = Inputs {
            scan,
            rules: &rules,
            eval: &eval,
            exceptions,
            previous,
            now: now(),
        };
        build(cfg, &cfg.tenants[0], &input)
    }

    fn verdicts(plan: &Plan) -> Vec<&Verdict> {
        plan.actions.iter().map(|a| &a.decision).collect()
    }

    #[test]
    fn duplicate_proposals_merge_into_one_action_with_every_reason() {
        let cfg = config(ROOMY, "");
        let p = plan_of(
            &cfg,
            &scan(2, vec![]),
            vec![
                proposal("plain", 0, ActionKind::EnforceMfa, &[]),
                proposal("plain", 1, ActionKind::EnforceMfa, &[]),
                proposal("careful", 0, ActionKind::EnforceMfa, &[]),
                proposal("plain", 0, ActionKind::EnforceMfa, &[]),
                proposal("plain", 0, ActionKind::RemoveRoleAssignment, &["a"]),
                proposal("plain", 0, ActionKind::RemoveRoleAssignment, &["b"]),
            ],
            &Exceptions::default(),
            None,
        );
        let keys: Vec<(&str, ActionKind, &[String])> = p
            .actions
            .iter()
            .map(|a| (a.identity_upn.as_str(), a.kind, a.targets.as_slice()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("u1@t.com", ActionKind::EnforceMfa, &[][..]),
                ("u2@t.com", ActionKind::EnforceMfa, &[][..]),
                (
                    "u1@t.com",
                    ActionKind::RemoveRoleAssignment,
                    &["a".to_string()][..]
                ),
                (
                    "u1@t.com",
                    ActionKind::RemoveRoleAssignment,
                    &["b".to_string()][..]
                ),
            ]
        );
        let rules: Vec<&str> = p.actions[0]
            .reasons
            .iter()
            .map(|r| r.rule.as_str())
            .collect();
        assert_eq!(rules, ["plain", "careful"]);
        assert_eq!(p.actions[0].reasons[1].reason, "careful says so");
    }

    #[test]
    fn the_strictest_of_config_tenant_and_rule_modes_wins() {
        let proposals = || {
            vec![
                proposal("plain", 0, ActionKind::EnforceMfa, &[]),
                proposal("careful", 1, ActionKind::EnforceMfa, &[]),
                proposal("plain", 1, ActionKind::EnforceMfa, &[]),
            ]
        };
        let cfg = config(&format!("mode = \"enforce\"\n{ROOMY}"), "");
        let p = plan_of(
            &cfg,
            &scan(2, vec![]),
            proposals(),
            &Exceptions::default(),
            None,
        );
        assert_eq!(p.mode, Mode::Enforce);
        let modes: Vec<(Mode, &str)> = p.actions.iter().map(|a| (a.mode, a.state())).collect();
        assert_eq!(
            modes,
            [(Mode::Enforce, "ready"), (Mode::Approval, "pending")]
        );

        let cfg = config(
            &format!("mode = \"enforce\"\n{ROOMY}"),
            "mode = \"dry-run\"",
        );
        let p = plan_of(
            &cfg,
            &scan(2, vec![]),
            proposals(),
            &Exceptions::default(),
            None,
        );
        assert_eq!(p.mode, Mode::DryRun);
        let modes: Vec<(Mode, &str)> = p.actions.iter().map(|a| (a.mode, a.state())).collect();
        assert_eq!(
            modes,
            [(Mode::DryRun, "planned"), (Mode::DryRun, "planned")]
        );
    }

    #[test]
    fn too_many_actions_downgrade_the_run_and_refused_ones_do_not_count() {
        let cfg = config(
            "mode = \"enforce\"\n[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 2",
            "",
        );
        let guest = {
            let mut g = ident(9, "g@t.com");
            g["user_type"] = json!("Guest");
            g
        };
        let mut proposals: Vec<Proposal> = (0..2)
            .map(|i| proposal("plain", i, ActionKind::EnforceMfa, &[]))
            .collect();
        proposals.push(proposal("plain", 2, ActionKind::RevokeSessions, &[]));
        let p = plan_of(
            &cfg,
            &scan(2, vec![guest.clone()]),
            proposals.clone(),
            &Exceptions::default(),
            None,
        );
        assert!(p.downgrades.is_empty(), "{:?}", p.downgrades);
        assert_eq!(p.proceeding(), 2);

        proposals.push(proposal("plain", 2, ActionKind::EnforceMfa, &[]));
        let p = plan_of(
            &cfg,
            &scan(2, vec![guest]),
            proposals,
            &Exceptions::default(),
            None,
        );
        assert_eq!(
            p.downgrades,
            ["max_actions_per_run: 3 actions planned, the limit is 2"]
        );
        assert_eq!(p.mode, Mode::Approval);
        assert!(p.actions.iter().all(|a| a.mode == Mode::Approval));
    }

    #[test]
    fn acting_on_too_large_a_share_of_identities_downgrades_the_run() {
        let cfg = config("mode = \"enforce\"", "");
        let two = vec![
            proposal("plain", 0, ActionKind::EnforceMfa, &[]),
            proposal("plain", 0, ActionKind::RevokeSessions, &[]),
            proposal("plain", 1, ActionKind::EnforceMfa, &[]),
        ];
        let p = plan_of(
            &cfg,
            &scan(10, vec![]),
            two.clone(),
            &Exceptions::default(),
            None,
        );
        assert!(p.downgrades.is_empty(), "20% is the limit, not over it");
        assert_eq!(p.mode, Mode::Enforce);

        let mut three = two;
        three.push(proposal("plain", 2, ActionKind::EnforceMfa, &[]));
        let p = plan_of(&cfg, &scan(10, vec![]), three, &Exceptions::default(), None);
        assert_eq!(
            p.downgrades,
            ["max_actions_percent: actions on 3 of 10 identities (30.0%), the limit is 20%"]
        );
        assert_eq!(verdicts(&p), [&Verdict::Proceed; 4]);
        assert!(p.actions.iter().all(|a| a.state() == "pending"));
    }

    #[test]
    fn the_circuit_breaker_compares_with_the_previous_run() {
        let cfg = config(
            "mode = \"enforce\"\n[guardrails]\nmax_actions_percent = 100.0\ncircuit_breaker_factor = 2.0\ncircuit_breaker_min_actions = 3",
            "",
        );
        let proposals: Vec<Proposal> = (0..3)
            .map(|i| proposal("plain", i, ActionKind::EnforceMfa, &[]))
            .collect();
        let run = |previous| {
            plan_of(
                &cfg,
                &scan(3, vec![]),
                proposals.clone(),
                &Exceptions::default(),
                previous,
            )
        };
        assert!(run(None).downgrades.is_empty());
        assert!(run(Some(2)).downgrades.is_empty(), "3 is not over 2 x 2");
        let p = run(Some(1));
        assert_eq!(
            p.downgrades,
            ["circuit breaker: 3 actions planned against 1 in the previous run (factor 2)"]
        );
        assert_eq!(p.mode, Mode::Approval);
    }

    const EXCEPTION: &str = "identity = \"u1@t.com\"\nreason = \"vendor migration\"\nowner = \"sec-team\"\nexpires = 2027-06-30";

    #[test]
    fn an_exception_suppresses_the_action_with_its_owner_and_reason() {
        let cfg = config(ROOMY, "");
        let p = plan_of(
            &cfg,
            &scan(2, vec![]),
            vec![
                proposal("plain", 0, ActionKind::DisableUser, &[]),
                proposal("plain", 1, ActionKind::DisableUser, &[]),
            ],
            &exceptions(&[EXCEPTION]),
            None,
        );
        assert_eq!(
            verdicts(&p),
            [
                &Verdict::Excepted(
                    "exception until 2027-06-30 (owner sec-team): vendor migration".into()
                ),
                &Verdict::Proceed
            ]
        );
        assert_eq!(p.actions[0].state(), "skipped");
        assert_eq!(p.proceeding(), 1);
    }

    #[test]
    fn an_exception_for_one_rule_does_not_cover_an_action_another_rule_asked_for() {
        let cfg = config(ROOMY, "");
        let for_plain = format!("rule = \"plain\"\n{EXCEPTION}");
        let p = plan_of(
            &cfg,
            &scan(1, vec![]),
            vec![
                proposal("plain", 0, ActionKind::DisableUser, &[]),
                proposal("careful", 0, ActionKind::DisableUser, &[]),
                proposal("plain", 0, ActionKind::EnforceMfa, &[]),
            ],
            &exceptions(&[&for_plain]),
            None,
        );
        assert_eq!(p.actions[0].decision, Verdict::Proceed);
        assert!(matches!(p.actions[1].decision, Verdict::Excepted(_)));
    }

    #[test]
    fn an_expired_exception_no_longer_suppresses() {
        let cfg = config(ROOMY, "");
        let expired = EXCEPTION.replace("2027-06-30", "2026-12-31");
        let p = plan_of(
            &cfg,
            &scan(1, vec![]),
            vec![proposal("plain", 0, ActionKind::DisableUser, &[])],
            &exceptions(&[&expired]),
            None,
        );
        assert_eq!(verdicts(&p), [&Verdict::Proceed]);
    }

    #[test]
    fn protection_refuses_before_any_exception_applies() {
        let cfg = config(&format!("{ROOMY}\n[protected]\nupns = [\"u1@t.com\"]"), "");
        let p = plan_of(
            &cfg,
            &scan(1, vec![]),
            vec![proposal("plain", 0, ActionKind::DisableUser, &[])],
            &exceptions(&[EXCEPTION]),
            None,
        );
        assert_eq!(
            verdicts(&p),
            [&Verdict::Refused(
                "protected: u1@t.com is a protected identity (protected.upns)".into()
            )]
        );
        assert_eq!(p.actions[0].state(), "refused");
    }

    #[test]
    fn the_plan_keeps_the_last_global_administrator() {
        let cfg = config(ROOMY, "");
        let p = plan_of(
            &cfg,
            &scan(0, vec![ga(1, "a@t.com"), ga(2, "b@t.com")]),
            vec![
                proposal("plain", 0, ActionKind::DisableUser, &[]),
                proposal("plain", 1, ActionKind::RemoveRoleAssignment, &["ga-2"]),
            ],
            &Exceptions::default(),
            None,
        );
        assert_eq!(
            verdicts(&p),
            [
                &Verdict::Proceed,
                &Verdict::Refused("last-global-admin: b@t.com is the last enabled Global Administrator in the scan; the tenant would be left without one".into())
            ]
        );
    }

    #[test]
    fn an_action_still_pending_from_an_earlier_scan_is_carried_over() {
        let cfg = config(&format!("mode = \"approval\"\n{ROOMY}"), "");
        let mut p = plan_of(
            &cfg,
            &scan(1, vec![]),
            vec![proposal("plain", 0, ActionKind::EnforceMfa, &[])],
            &Exceptions::default(),
            None,
        );
        assert_eq!(p.actions[0].state(), "pending");
        p.actions[0].carried_over = Some(7);
        assert_eq!(p.actions[0].state(), "carried_over");
    }
}
