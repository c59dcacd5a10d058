//! Enforce phishing-resistant MFA: put a Global Administrator (checked live)
//! under the phishing-resistant MFA Conditional Access policy.

use async_trait::async_trait;
use serde_json::Value;

use super::conditional_access::{self as ca, CaKind};
use super::context::{Ctx, Work, filter_eq, map_error};
use super::reads::{Ahead, Reads};
use super::{Landed, Remediation};
use crate::domain::{Action, Outcome, Snapshot};
use crate::guard::{Refusal, refuse};
use crate::scan::{GLOBAL_ADMIN_TEMPLATE, Identity};

/// The phishing-resistant MFA action.
pub(crate) struct EnforcePhishingResistantMfa;

const KIND: CaKind = CaKind {
    key: "ca_policy:enforce_phishing_resistant_mfa",
    group_key: "ca_group:enforce_phishing_resistant_mfa",
    nick: "entra-remediator-phishing-resistant-mfa",
    name: "entra-remediator: require phishing-resistant MFA",
    phishing_resistant: true,
    settings: |g| &g.phishing_resistant_mfa,
};

fn roles_path(uid: &str) -> String {
    format!(
        "/roleManagement/directory/roleAssignments?{}",
        filter_eq("principalId", uid)
    )
}

/// Refuses a user who holds no active Global Administrator assignment live
/// (the assignments were read with the user).
fn check_global_admin(w: &mut Work, reads: &Reads) {
    let Some((rec, ans)) = reads.answer(&roles_path(&w.action.identity_id)) else {
        return;
    };
    w.calls.push(rec.clone());
    match ans {
        Ok(r) if r.ok() => {
            let is_ga = r.body["value"].as_array().into_iter().flatten().any(|a| {
                a["roleDefinitionId"]
                    .as_str()
                    .is_some_and(|d| d.eq_ignore_ascii_case(GLOBAL_ADMIN_TEMPLATE))
            });
            if !is_ga {
                let upn = w.live_upn();
                w.decide(Outcome::Refused(format!(
                    "{upn} holds no active Global Administrator assignment in the live tenant; phishing-resistant MFA is for Global Administrators only"
                )));
            }
        }
        Ok(r) => w.decide(map_error(r, "read role assignments")),
        Err(e) => w.decide(Outcome::retryable(format!("read role assignments: {e}"))),
    }
}

#[async_trait]
impl Remediation for EnforcePhishingResistantMfa {
    fn check_scan(&self, _targets: &[String], id: &Identity) -> Result<(), Refusal> {
        if !id.is_global_admin() {
            return refuse(
                "phishing-resistant-mfa-scope",
                format!(
                    "{} holds no active Global Administrator role ({GLOBAL_ADMIN_TEMPLATE}); phishing-resistant MFA is enforced for Global Administrators only",
                    id.label()
                ),
            );
        }
        Ok(())
    }

    fn user_reads(&self, uid: &str) -> Vec<String> {
        vec![roles_path(uid)]
    }

    async fn decide(&self, cx: &Ctx<'_>, work: &mut [Work], idx: &[usize], reads: &mut Reads) {
        for &i in idx {
            if work[i].live_user.is_some() {
                check_global_admin(&mut work[i], reads);
            }
        }
        ca::decide(cx, &KIND, work, idx).await;
    }

    fn gone_is_done(&self) -> bool {
        false
    }

    fn done_text(&self, a: &Action) -> String {
        format!(
            "{} is under the phishing-resistant MFA policy",
            a.identity_upn
        )
    }

    async fn plan_undo(&self, cx: &Ctx<'_>, w: &mut Work, orig: &Action, s: &Snapshot) {
        ca::plan_undo(cx, w, orig, s).await;
    }

    async fn settle_reads(&self, cx: &Ctx<'_>, _a: &Action, s: &Snapshot, ahead: &mut Ahead) {
        ca::settle_reads(cx, s, ahead).await;
    }

    async fn landed(
        &self,
        cx: &Ctx<'_>,
        a: &Action,
        s: &Snapshot,
        calls: &mut Vec<Value>,
        reads: &Reads,
    ) -> Landed {
        ca::landed(cx, a, s, calls, reads).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::actions::handler;
    use crate::domain::ActionKind;
    use crate::guard::test_identities::{ga, identity, refusal, role};

    #[test]
    fn phishing_resistant_mfa_is_for_active_global_administrators_only() {
        let kind = ActionKind::EnforcePhishingResistantMfa;
        let eligible = identity(
            1,
            "e@t.com",
            json!({ "roles": [role("a1", GLOBAL_ADMIN_TEMPLATE, "eligible")] }),
        );
        assert_eq!(
            refusal(handler(kind).check_scan(&[], &eligible)),
            (
                "phishing-resistant-mfa-scope",
                format!(
                    "e@t.com holds no active Global Administrator role ({GLOBAL_ADMIN_TEMPLATE}); phishing-resistant MFA is enforced for Global Administrators only"
                )
            )
        );
        assert_eq!(handler(kind).check_scan(&[], &ga(2, "ga@t.com")), Ok(()));
    }
}
