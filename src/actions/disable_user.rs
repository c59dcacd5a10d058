//! Disable a user: `accountEnabled` set to false; undone by enabling it again.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Ctx, Work, map_error};
use super::reads::{Ahead, Reads, peek};
use super::{Landed, Remediation};
use crate::domain::{Action, Outcome, Snapshot};
use crate::graph::GraphRequest;
use crate::guard::{Refusal, refuse};
use crate::scan::Identity;

/// The disable action.
pub(crate) struct DisableUser;

fn disabled_path(uid: &str) -> String {
    format!("/users/{uid}?$select=id,accountEnabled")
}

fn set_enabled(uid: &str, enabled: bool) -> GraphRequest {
    GraphRequest::with_body(
        Method::PATCH,
        format!("/users/{uid}"),
        json!({"accountEnabled": enabled}),
    )
}

#[async_trait]
impl Remediation for DisableUser {
    fn check_scan(&self, _targets: &[String], id: &Identity) -> Result<(), Refusal> {
        if id.account_enabled == Some(false) {
            return refuse(
                "already-disabled",
                format!("{} is already disabled in the scan", id.label()),
            );
        }
        Ok(())
    }

    fn removes_global_admin(&self, _targets: &[String], _id: &Identity) -> bool {
        true
    }

    async fn decide(&self, _cx: &Ctx<'_>, work: &mut [Work], idx: &[usize], _reads: &mut Reads) {
        for &i in idx {
            let w = &mut work[i];
            let Some(user) = &w.live_user else { continue };
            if user["accountEnabled"] == json!(false) {
                let upn = w.live_upn();
                w.decide(Outcome::AlreadyDone(format!("{upn} is already disabled")));
            } else {
                w.snapshot = Some(Snapshot {
                    account_enabled: Some(true),
                    ..Snapshot::default()
                });
                w.writes.push(set_enabled(&w.action.identity_id, false));
            }
        }
    }

    fn gone_is_done(&self) -> bool {
        false
    }

    fn done_text(&self, a: &Action) -> String {
        format!("{} disabled", a.identity_upn)
    }

    async fn plan_undo(&self, cx: &Ctx<'_>, w: &mut Work, orig: &Action, _s: &Snapshot) {
        // Re-enabled meanwhile (by a person, or by another undo): nothing to write.
        let uid = &orig.identity_id;
        let Some(r) = w.get(cx, disabled_path(uid)).await else {
            return;
        };
        if !r.ok() {
            w.decide(map_error(&r, "read user"));
            return;
        }
        if r.body["accountEnabled"] == json!(true) {
            w.decide(Outcome::AlreadyDone(format!(
                "{} is already enabled",
                orig.identity_upn
            )));
            return;
        }
        w.snapshot = Some(Snapshot {
            undo_of: Some(orig.id),
            ..Snapshot::default()
        });
        w.writes.push(set_enabled(uid, true));
    }

    async fn settle_reads(&self, _cx: &Ctx<'_>, a: &Action, _s: &Snapshot, ahead: &mut Ahead) {
        ahead.paths.push(disabled_path(&a.identity_id));
    }

    async fn landed(
        &self,
        cx: &Ctx<'_>,
        a: &Action,
        _s: &Snapshot,
        calls: &mut Vec<Value>,
        reads: &Reads,
    ) -> Landed {
        match peek(cx, calls, reads, disabled_path(&a.identity_id)).await {
            Some(r) if r.ok() && r.body["accountEnabled"] == json!(false) => {
                Landed::Applied("the account is disabled".into())
            }
            Some(r) if r.ok() => Landed::NotApplied("the account is still enabled".into()),
            _ => Landed::Unknown("the account could not be read".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::actions::handler;
    use crate::domain::ActionKind;
    use crate::guard::test_identities::{identity, refusal};

    #[test]
    fn a_disabled_account_is_not_disabled_again() {
        let id = identity(1, "off@t.com", json!({ "account_enabled": false }));
        assert_eq!(
            refusal(handler(ActionKind::DisableUser).check_scan(&[], &id)),
            (
                "already-disabled",
                "off@t.com is already disabled in the scan".into()
            )
        );
    }
}
