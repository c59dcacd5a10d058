//! Enforce MFA: put the user under the MFA Conditional Access policy (see
//! [`super::conditional_access`] for the policy and group life cycle).

use async_trait::async_trait;
use serde_json::Value;

use super::conditional_access::{self as ca, CaKind};
use super::context::{Ctx, Work};
use super::reads::{Ahead, Reads};
use super::{Landed, Remediation};
use crate::domain::{Action, Snapshot};

/// The MFA action.
pub(crate) struct EnforceMfa;

const KIND: CaKind = CaKind {
    key: "ca_policy:enforce_mfa",
    group_key: "ca_group:enforce_mfa",
    nick: "entra-remediator-mfa",
    name: "entra-remediator: require MFA",
    phishing_resistant: false,
    settings: |g| &g.mfa,
};

#[async_trait]
impl Remediation for EnforceMfa {
    async fn decide(&self, cx: &Ctx<'_>, work: &mut [Work], idx: &[usize], _reads: &mut Reads) {
        ca::decide(cx, &KIND, work, idx).await;
    }

    fn gone_is_done(&self) -> bool {
        false
    }

    fn done_text(&self, a: &Action) -> String {
        format!("{} is under the MFA policy", a.identity_upn)
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
