//! The notices: what happened, for whom, and the one-line summary every
//! payload format starts from.

use crate::config::NoticeKind;
use crate::text::truncate_chars;

/// Something worth telling people about.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    /// Actions of a run wait for approval.
    ApprovalPending {
        /// The tenant's configured name.
        tenant: String,
        /// The run that planned them.
        run_id: String,
        /// The actions waiting.
        actions: Vec<NoticeAction>,
    },
    /// A guardrail held a run for approval.
    RunDowngraded {
        /// The tenant's configured name.
        tenant: String,
        /// The run held back.
        run_id: String,
        /// Why, one line per guardrail.
        reasons: Vec<String>,
    },
    /// Actions failed to execute.
    ActionFailed {
        /// The tenant's configured name.
        tenant: String,
        /// The failed actions, with the failure as `reason`.
        actions: Vec<NoticeAction>,
    },
    /// The rule set could not be loaded.
    RulesError {
        /// What is wrong.
        message: String,
    },
}

/// One action mentioned in a notice.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NoticeAction {
    /// The action's id (as in `approvals show ID`).
    pub id: i64,
    /// The action kind, e.g. `disable_user`.
    pub kind: String,
    /// The identity's user principal name.
    pub upn: String,
    /// Why it was planned, or why it failed.
    pub reason: String,
}

impl NoticeAction {
    /// The notice line of one action: its reasons joined.
    pub fn new(id: i64, kind: &str, upn: &str, reasons: &[crate::domain::Reason]) -> NoticeAction {
        NoticeAction {
            id,
            kind: kind.to_string(),
            upn: upn.to_string(),
            reason: reasons
                .iter()
                .map(|r| r.reason.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl Notice {
    /// The event kind, as used in `notify.webhook.events`.
    pub fn kind(&self) -> NoticeKind {
        match self {
            Notice::ApprovalPending { .. } => NoticeKind::ApprovalPending,
            Notice::RunDowngraded { .. } => NoticeKind::RunDowngraded,
            Notice::ActionFailed { .. } => NoticeKind::ActionFailed,
            Notice::RulesError { .. } => NoticeKind::RulesError,
        }
    }

    /// The event name, e.g. `approval_pending`.
    pub fn event(&self) -> &'static str {
        match self.kind() {
            NoticeKind::ApprovalPending => "approval_pending",
            NoticeKind::RunDowngraded => "run_downgraded",
            NoticeKind::ActionFailed => "action_failed",
            NoticeKind::RulesError => "rules_error",
        }
    }

    /// The tenant concerned, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Notice::ApprovalPending { tenant, .. }
            | Notice::RunDowngraded { tenant, .. }
            | Notice::ActionFailed { tenant, .. } => Some(tenant),
            Notice::RulesError { .. } => None,
        }
    }

    /// One line for people, e.g. "3 actions wait for approval in tenant contoso".
    pub fn summary(&self) -> String {
        let n_actions = |n: usize| {
            if n == 1 {
                "1 action".to_string()
            } else {
                format!("{n} actions")
            }
        };
        match self {
            Notice::ApprovalPending {
                tenant, actions, ..
            } => {
                let verb = if actions.len() == 1 { "waits" } else { "wait" };
                format!(
                    "{} {verb} for approval in tenant {tenant}",
                    n_actions(actions.len())
                )
            }
            Notice::RunDowngraded { tenant, run_id, .. } => {
                format!("Run {run_id} in tenant {tenant} was held for approval by a guardrail")
            }
            Notice::ActionFailed { tenant, actions } => {
                format!("{} failed in tenant {tenant}", n_actions(actions.len()))
            }
            Notice::RulesError { message } => {
                let first = message.lines().next().unwrap_or_default();
                format!(
                    "The rule set could not be loaded: {}",
                    truncate_chars(first, 200)
                )
            }
        }
    }

    /// The actions it lists, none for notices about a whole run or the rules.
    pub(super) fn actions(&self) -> &[NoticeAction] {
        match self {
            Notice::ApprovalPending { actions, .. } | Notice::ActionFailed { actions, .. } => {
                actions
            }
            _ => &[],
        }
    }

    /// The run concerned, if any.
    pub(super) fn run_id(&self) -> Option<&str> {
        match self {
            Notice::ApprovalPending { run_id, .. } | Notice::RunDowngraded { run_id, .. } => {
                Some(run_id)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(n: i64) -> Vec<NoticeAction> {
        (1..=n)
            .map(|i| NoticeAction {
                id: i,
                kind: "disable_user".into(),
                upn: format!("u{i}@contoso.com"),
                reason: "stale".into(),
            })
            .collect()
    }

    #[test]
    fn summaries_count_actions() {
        let n = Notice::ApprovalPending {
            tenant: "contoso".into(),
            run_id: "r1".into(),
            actions: actions(3),
        };
        assert_eq!(n.summary(), "3 actions wait for approval in tenant contoso");
        let n = Notice::ApprovalPending {
            tenant: "contoso".into(),
            run_id: "r1".into(),
            actions: actions(1),
        };
        assert_eq!(n.summary(), "1 action waits for approval in tenant contoso");
    }
}
