//! What keeps a run from doing harm: the rule sandbox (`[rules]`), the
//! `[guardrails]` that downgrade a run to approval, `[protected]` identities
//! and who may approve (`[approvals]`).

use serde::Deserialize;

use crate::domain::ActionKind;

/// Largest `rules.max_call_depth` accepted: rule threads get a stack sized for
/// it, and a deeper limit would let a recursive rule overflow even that.
pub const MAX_CALL_DEPTH: usize = 256;

/// Sandbox limits applied to every rule evaluation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleLimits {
    /// Maximum Rhai operations per evaluation.
    pub max_operations: u64,
    /// Wall-clock limit per evaluation, in milliseconds.
    pub timeout_ms: u64,
    /// Maximum function call depth (1 to [`MAX_CALL_DEPTH`]).
    #[serde(deserialize_with = "call_depth")]
    pub max_call_depth: usize,
    /// Maximum string length in bytes.
    pub max_string_size: usize,
    /// Maximum array length.
    pub max_array_size: usize,
    /// Maximum map size.
    pub max_map_size: usize,
}

impl Default for RuleLimits {
    fn default() -> Self {
        Self {
            max_operations: 200_000,
            timeout_ms: 250,
            max_call_depth: 32,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}

/// Reads `rules.max_call_depth`, refusing values beyond what the rule threads'
/// stack is sized for (the error is toml's, with the line and column).
fn call_depth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = u64::deserialize(d)?;
    match usize::try_from(v) {
        Ok(n) if (1..=MAX_CALL_DEPTH).contains(&n) => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "rules.max_call_depth {v} must be 1 to {MAX_CALL_DEPTH} (deeper recursion would overflow the rule threads' stack)"
        ))),
    }
}

/// Limits on how much one run may do before a person must look.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guardrails {
    /// More actions than this in one run downgrades the run to approval.
    pub max_actions_per_run: usize,
    /// Acting on more than this percentage of the scan's identities downgrades the run.
    pub max_actions_percent: f64,
    /// A run planning more than `factor` times the previous scan's actions is downgraded.
    pub circuit_breaker_factor: f64,
    /// The circuit breaker ignores runs with fewer actions than this.
    pub circuit_breaker_min_actions: usize,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            max_actions_per_run: 100,
            max_actions_percent: 20.0,
            circuit_breaker_factor: 3.0,
            circuit_breaker_min_actions: 10,
        }
    }
}

/// Identities that no action may ever touch (break-glass accounts and the like).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protected {
    /// Object ids.
    pub ids: Vec<String>,
    /// User principal names (case-insensitive).
    pub upns: Vec<String>,
    /// Group ids or display names whose members are protected.
    pub groups: Vec<String>,
}

/// Which `[protected]` list covers an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtectedBy {
    /// Its object id is in `protected.ids`.
    Id,
    /// Its UPN is in `protected.upns`.
    Upn,
    /// It is a member of this group (display name) of `protected.groups`.
    Group(String),
    /// Its UPN is unknown while `protected.upns` is set: protection cannot be ruled out.
    UpnUnknown,
}

impl Protected {
    /// Which list covers the account with this object id, UPN (when known) and
    /// groups (id, display name), if any: the one matching of protection, for
    /// the scan's view and the live tenant's alike.
    pub fn covers(
        &self,
        id: &str,
        upn: Option<&str>,
        groups: &[(&str, &str)],
    ) -> Option<ProtectedBy> {
        if self.ids.iter().any(|x| x.eq_ignore_ascii_case(id)) {
            return Some(ProtectedBy::Id);
        }
        if let Some(upn) = upn
            && self.upns.iter().any(|x| x.eq_ignore_ascii_case(upn))
        {
            return Some(ProtectedBy::Upn);
        }
        if let Some((_, name)) = groups.iter().find(|(gid, name)| {
            self.groups
                .iter()
                .any(|x| x.eq_ignore_ascii_case(gid) || x.eq_ignore_ascii_case(name))
        }) {
            return Some(ProtectedBy::Group((*name).to_string()));
        }
        if upn.is_none() && !self.upns.is_empty() {
            return Some(ProtectedBy::UpnUnknown);
        }
        None
    }
}

/// Approval policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Names allowed to approve or reject; empty means anyone.
    pub approvers: Vec<String>,
    /// Actions that need two distinct approvers.
    pub four_eyes: Vec<ActionKind>,
    /// Two command-line approvals of one action must come from two different
    /// operating-system users (default true); false only where several people
    /// share one OS account (the OS user is recorded either way).
    pub distinct_os_users: bool,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            approvers: Vec::new(),
            four_eyes: Vec::new(),
            distinct_os_users: true,
        }
    }
}
