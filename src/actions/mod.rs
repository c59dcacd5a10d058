//! One home per remediation action: each action's module knows its scan-side
//! guardrails, how to check it against the live tenant and write it, how to tell after a crash whether the
//! write landed, how to undo it and what it writes in history. [`handler`] is
//! the one place that maps an [`ActionKind`] to its module.

pub(crate) mod conditional_access;
pub(crate) mod context;
mod disable_user;
mod enforce_mfa;
mod enforce_phishing_resistant_mfa;
pub(crate) mod reads;
mod remove_group_membership;
mod remove_role_assignment;
mod revoke_sessions;

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::{Action, ActionKind, Snapshot};
use crate::guard::Refusal;
use crate::scan::Identity;
use context::{Ctx, Work};
use reads::{Ahead, Reads};

/// What live state says about an interrupted action's write.
pub(crate) enum Landed {
    /// The change is in place.
    Applied(String),
    /// It is not: the write did not land, so the action can run again.
    NotApplied(String),
    /// Cannot tell from live state; not re-sent.
    Unknown(String),
}

/// Everything one remediation action knows.
#[async_trait]
pub(crate) trait Remediation: Sync {
    /// This action's own guardrails on the scan's view of `id` (protection and
    /// the last Global Administrator are checked by the plan for every action).
    fn check_scan(&self, _targets: &[String], _id: &Identity) -> Result<(), Refusal> {
        Ok(())
    }

    /// Whether doing it takes away `id`'s Global Administrator role, so the
    /// plan can keep the last enabled one.
    fn removes_global_admin(&self, _targets: &[String], _id: &Identity) -> bool {
        false
    }

    /// GETs this action needs beside its user's, sent in the same `$batch`.
    fn user_reads(&self, _uid: &str) -> Vec<String> {
        Vec::new()
    }

    /// What deciding `w` needs read ahead (batched with the pass's other actions).
    fn plan_reads(&self, _w: &Work, _ahead: &mut Ahead) {}

    /// Decides the actions `idx` of this kind against live state (the user is
    /// read and unprotected): an outcome, or writes with their snapshot.
    async fn decide(&self, cx: &Ctx<'_>, work: &mut [Work], idx: &[usize], reads: &mut Reads);

    /// Whether a 404 on one of its writes means the goal is already reached.
    fn gone_is_done(&self) -> bool;

    /// What a successful action did, for history.
    fn done_text(&self, a: &Action) -> String;

    /// Plans the undo `w` of the done action `orig` from its snapshot.
    async fn plan_undo(&self, cx: &Ctx<'_>, w: &mut Work, orig: &Action, snapshot: &Snapshot);

    /// What settling `a` needs read ahead.
    async fn settle_reads(&self, _cx: &Ctx<'_>, _a: &Action, _s: &Snapshot, _ahead: &mut Ahead) {}

    /// Whether the write of the interrupted action `a` landed.
    async fn landed(
        &self,
        cx: &Ctx<'_>,
        a: &Action,
        snapshot: &Snapshot,
        calls: &mut Vec<Value>,
        reads: &Reads,
    ) -> Landed;
}

/// The module of an action kind.
pub(crate) fn handler(kind: ActionKind) -> &'static dyn Remediation {
    match kind {
        ActionKind::DisableUser => &disable_user::DisableUser,
        ActionKind::RevokeSessions => &revoke_sessions::RevokeSessions,
        ActionKind::EnforceMfa => &enforce_mfa::EnforceMfa,
        ActionKind::EnforcePhishingResistantMfa => {
            &enforce_phishing_resistant_mfa::EnforcePhishingResistantMfa
        }
        ActionKind::RemoveRoleAssignment => &remove_role_assignment::RemoveRoleAssignment,
        ActionKind::RemoveGroupMembership => &remove_group_membership::RemoveGroupMembership,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::guard::LastAdmin;
    use crate::guard::test_identities::{ga_json, refusal, scan_of};

    /// The last-Global-Administrator check of an action, as the plan makes it.
    pub(crate) fn check_last_admin(
        last: &mut LastAdmin,
        idx: usize,
        id: &Identity,
        kind: ActionKind,
        targets: &[String],
    ) -> Result<(), Refusal> {
        last.check(idx, id, handler(kind).removes_global_admin(targets, id))
    }

    #[test]
    fn the_last_enabled_global_administrator_is_kept() {
        let scan = scan_of(vec![ga_json(1, "a@t.com"), ga_json(2, "b@t.com")]);
        let mut last = LastAdmin::new(&scan);
        let (a, b) = (&scan.identities[0], &scan.identities[1]);
        assert_eq!(
            check_last_admin(&mut last, 0, a, ActionKind::DisableUser, &[]),
            Ok(())
        );
        // Counted once: acting on the same identity again is still allowed.
        assert_eq!(
            check_last_admin(&mut last, 0, a, ActionKind::EnforceMfa, &[]),
            Ok(())
        );
        assert_eq!(
            refusal(check_last_admin(&mut last, 1, b, ActionKind::RemoveRoleAssignment, &["ga-2".into()])),
            (
                "last-global-admin",
                "b@t.com is the last enabled Global Administrator in the scan; the tenant would be left without one".into()
            )
        );
        assert_eq!(
            refusal(check_last_admin(
                &mut last,
                1,
                b,
                ActionKind::DisableUser,
                &[]
            ))
            .0,
            "last-global-admin"
        );
    }
}
