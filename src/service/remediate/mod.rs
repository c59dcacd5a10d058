//! Manual remediation: a person asks for an action on chosen identities (or on
//! everyone a finding affects), with a reason. The request becomes proposals of
//! the rule `manual` and goes through the same planner as a rule's proposals
//! (guardrails, protected identities, exceptions, run-size limits, the tenant's
//! mode); `submit` records it as a run of kind `manual` whose actor is the
//! requester. The console, the CLI and the API all call these two use cases.

use chrono::{DateTime, Utc};

use crate::access::{Caller, Role};
use crate::config::{Config, TenantConfig};
use crate::domain::ActionKind;
use crate::exceptions::{ExceptionError, Exceptions, ExceptionsSource};
use crate::plan::{self, Plan};
use crate::policy::{Evaluation, PolicyError, Proposal, RuleSet};
use crate::scan::{LoadedScan, ScanError, ScanRequest};
use crate::store::{NewRun, Store, StoreError};

mod select;

use select::Selected;

/// The rule name a person's request is recorded under (in each action's
/// reasons); an action of this rule has its run's actor as requester.
pub const RULE: &str = "manual";

/// The run kind of a person's request: never counted as the scan's processing,
/// so the scheduled rule run of the same scan still happens.
pub const RUN_KIND: &str = "manual";

/// The longest reason taken, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// Which identities a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These identities: object ids or UPNs as in the scan.
    Identities(Vec<String>),
    /// Everyone the finding (its id in the scan) affects.
    Finding(String),
}

/// A person's request for one action on a selection of identities.
#[derive(Debug, Clone)]
pub struct RemediationRequest {
    /// The tenant's configured name.
    pub tenant: String,
    /// The action.
    pub kind: ActionKind,
    /// Who it is for.
    pub selection: Selection,
    /// Role assignment ids / group ids: only for the two single-identity
    /// kinds, and required there.
    pub targets: Vec<String>,
    /// Why (required, at most `MAX_REASON_CHARS` characters once trimmed).
    pub reason: String,
    /// Who asks; needs `Role::Operator`.
    pub caller: Caller,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// What a request would do, before anything is recorded.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The plan: each action with its mode, and the refusals with their reasons.
    pub plan: Plan,
    /// The scan's file path or URL.
    pub scan_source: String,
    /// When the scan was taken.
    pub scanned_at: DateTime<Utc>,
    /// SHA-256 of the scan.
    pub sha256: String,
    /// How many identities were selected.
    pub identities: usize,
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The run it was recorded as.
    pub run_id: String,
    /// The recorded action ids, in plan order.
    pub ids: Vec<i64>,
    /// The plan as recorded (carried-over actions marked).
    pub plan: Plan,
}

/// Why a request was refused; nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum RemediateError {
    /// The caller may not request remediations.
    #[error("{0} may not request remediations: that needs the operator role")]
    Forbidden(String),
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such tenant in the config.
    #[error("no tenant named {0:?} in the config")]
    UnknownTenant(String),
    /// A named identity is not in the scan.
    #[error("identities: {0:?} is not an identity (object id or UPN) in the scan")]
    UnknownIdentity(String),
    /// The finding is not in the scan.
    #[error("finding: {0:?} is not a finding in the scan")]
    UnknownFinding(String),
    /// The scan could not be loaded.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The exceptions file is invalid.
    #[error(transparent)]
    Exceptions(#[from] ExceptionError),
    /// The (empty) rule set for the planner could not be made.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses a caller without `Role::Operator`; edges call it before loading a
/// scan, and both use cases call it again.
pub fn authorize(caller: &Caller) -> Result<(), RemediateError> {
    if caller.may(Role::Operator) {
        Ok(())
    } else {
        Err(RemediateError::Forbidden(caller.name.clone()))
    }
}

/// Loads the tenant's scan for a request: the newest, or the one taken at
/// `scanned_at` (for the CLI and the API; the console passes a cached one).
pub async fn load_scan(
    cfg: &Config,
    tenant: &str,
    scanned_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<LoadedScan, RemediateError> {
    let t = tenant_of(cfg, tenant)?;
    let req = ScanRequest {
        file: None,
        scanned_at,
    };
    Ok(crate::scan::load_for_tenant(cfg, t, &req, now).await?)
}

fn tenant_of<'a>(cfg: &'a Config, name: &str) -> Result<&'a TenantConfig, RemediateError> {
    cfg.tenant(name)
        .ok_or_else(|| RemediateError::UnknownTenant(name.to_string()))
}

/// What the request would do: the plan built exactly as for a rule's
/// proposals. With a store, the circuit breaker compares with the tenant's
/// previous scheduled run. Writes nothing.
pub async fn preview(
    cfg: &Config,
    store: Option<&dyn Store>,
    scan: &LoadedScan,
    req: &RemediationRequest,
) -> Result<Preview, RemediateError> {
    authorize(&req.caller)?;
    let tenant = tenant_of(cfg, &req.tenant)?;
    let selected = select::select(tenant, scan, req)?;
    let reason = format!(
        "{} [requested by {} through the {}]",
        selected.reason,
        req.caller.name,
        req.caller.interface.as_str()
    );
    let eval = Evaluation {
        proposals: proposals(req, &selected, &reason),
        ..Evaluation::default()
    };
    let exceptions = Exceptions::load_from(&ExceptionsSource::from_config(cfg))?;
    // No rule: "manual" has no rule mode, the tenant's and config's mode apply.
    let no_rules = RuleSet::from_sources(Vec::new(), &cfg.rules)?;
    let previous = match store {
        Some(s) => s.previous_action_count(&tenant.name).await?,
        None => None,
    };
    let plan = plan::build(
        cfg,
        tenant,
        &plan::Inputs {
            scan: &scan.scan,
            rules: &no_rules,
            eval: &eval,
            exceptions: &exceptions,
            previous,
            now: req.now,
        },
    );
    Ok(Preview {
        plan,
        scan_source: scan.source_name.clone(),
        scanned_at: scan.scan.scanned_at,
        sha256: scan.sha256.clone(),
        identities: selected.identities.len(),
    })
}

/// One proposal per selected identity (the removals: one identity, every
/// chosen target in one action).
fn proposals(req: &RemediationRequest, s: &Selected, reason: &str) -> Vec<Proposal> {
    s.identities
        .iter()
        .map(|&identity| Proposal {
            rule: RULE.to_string(),
            finding: s.finding.clone().unwrap_or_default(),
            identity,
            kind: req.kind,
            targets: s.targets.clone(),
            reason: reason.to_string(),
        })
        .collect()
}

/// Records the request as a run of kind `manual` (actor: the caller) with its
/// actions in the tenant's mode: planned (dry-run), pending (approval) or
/// ready (enforce; the daemon's executor runs them), refusals as refused.
pub async fn submit(
    cfg: &Config,
    store: &dyn Store,
    scan: &LoadedScan,
    req: &RemediationRequest,
) -> Result<Submitted, RemediateError> {
    let Preview {
        mut plan,
        scan_source,
        scanned_at,
        sha256,
        ..
    } = preview(cfg, Some(store), scan, req).await?;
    // As before a rule run: an approval already overdue is expired, so the
    // request is never carried over to an action that can no longer be approved.
    crate::service::actions::expire_overdue(store, req.now).await?;
    let run = NewRun {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: plan.tenant.clone(),
        scan_source,
        scan_sha256: sha256,
        scanned_at,
        rule_set_hash: String::new(),
        mode: plan.mode.to_string(),
        downgrades: plan.downgrades.clone(),
        identities: scan.scan.identities.len() as i64,
        findings: scan.scan.findings.len() as i64,
        started_at: req.now,
        actor: req.caller.name.clone(),
        kind: RUN_KIND.into(),
    };
    let expires = cfg.approval_expiry(req.now);
    let ids = crate::service::record_run::record_plan(store, &run, &mut plan, &[], expires, false)
        .await?;
    tracing::info!(run = %run.id, tenant = %run.tenant, by = %run.actor, actions = ids.len(), "manual remediation recorded");
    Ok(Submitted {
        run_id: run.id,
        ids,
        plan,
    })
}

/// The webhook notice of a recorded request: its actions waiting for
/// approval (`None` when none waits, e.g. in enforce or dry-run mode).
pub async fn pending_notice(
    store: &dyn Store,
    tenant: &str,
    run_id: &str,
) -> Result<Option<crate::notify::notice::Notice>, StoreError> {
    let pending = store
        .actions(&crate::store::Filter {
            tenant: Some(tenant.to_string()),
            run: Some(run_id.to_string()),
            state: Some(crate::domain::ActionState::Pending.to_string()),
            ..crate::store::Filter::default()
        })
        .await?;
    if pending.is_empty() {
        return Ok(None);
    }
    let actions = pending
        .iter()
        .map(|a| {
            crate::notify::notice::NoticeAction::new(
                a.id,
                a.kind.as_str(),
                &a.identity_upn,
                &a.reasons,
            )
        })
        .collect();
    Ok(Some(crate::notify::notice::Notice::ApprovalPending {
        tenant: tenant.to_string(),
        run_id: run_id.to_string(),
        actions,
    }))
}
