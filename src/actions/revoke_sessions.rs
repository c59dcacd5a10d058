//! Revoke a user's sessions (refresh tokens and session cookies). Measured from
//! the scan that asked for it: sessions revoked since then count as done.
//! Never for guests; cannot be undone.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use reqwest::Method;
use serde_json::Value;

use super::context::{Ctx, Work};
use super::reads::{Ahead, Reads, peek};
use super::{Landed, Remediation};
use crate::domain::{Action, Outcome, Snapshot};
use crate::graph::GraphRequest;
use crate::guard::{Refusal, refuse};
use crate::scan::Identity;

/// The revoke action.
pub(crate) struct RevokeSessions;

fn sessions_path(uid: &str) -> String {
    format!("/users/{uid}?$select=id,signInSessionsValidFromDateTime")
}

/// When the user's sessions were last revoked (`signInSessionsValidFromDateTime`).
fn sessions_valid_from(user: &Value) -> Option<DateTime<Utc>> {
    user["signInSessionsValidFromDateTime"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Whether sessions were revoked at or after `since` (the scan the action comes
/// from): Graph gives whole seconds, so `since` is compared to the second.
fn revoked_since(user: &Value, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let from = sessions_valid_from(user)?;
    let since = since.with_nanosecond(0).unwrap_or(since);
    (from >= since).then_some(from)
}

/// What a revoke of this action is measured from: the `scanned_at` of the scan
/// that asked for it (sessions revoked since then include those the scan saw).
async fn revoke_reference(cx: &Ctx<'_>, a: &Action) -> Result<DateTime<Utc>, String> {
    match cx.store.run_scanned_at(&a.run_id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Ok(a.created_at),
        Err(e) => Err(format!("history unavailable: {e}")),
    }
}

/// Decides one revoke against the live user and the time it is measured from.
fn decide_one(w: &mut Work, since: Result<DateTime<Utc>, String>) {
    let Some(user) = w.live_user.clone() else {
        return;
    };
    let upn = w.live_upn();
    if user["userType"].as_str() == Some("Guest") || upn.contains("#EXT#") {
        w.decide(Outcome::Refused(format!(
            "{upn} is a guest in the live tenant: sessions are never revoked for guests"
        )));
        return;
    }
    match since {
        Err(e) => w.decide(Outcome::retryable(e)),
        Ok(since) => match revoked_since(&user, since) {
            Some(at) => w.decide(Outcome::AlreadyDone(format!(
                "sessions of {upn} were already revoked at {} (signInSessionsValidFromDateTime), not before the scan of {}; nothing sent",
                crate::store::ts(at),
                crate::store::ts(since)
            ))),
            None => w.writes.push(GraphRequest::new(
                Method::POST,
                format!("/users/{}/revokeSignInSessions", w.action.identity_id),
            )),
        },
    }
}

#[async_trait]
impl Remediation for RevokeSessions {
    fn check_scan(&self, _targets: &[String], id: &Identity) -> Result<(), Refusal> {
        if id.is_guest() {
            return refuse(
                "guest-revoke",
                format!(
                    "{} is a guest: sessions are never revoked for guest users (their home tenant owns them)",
                    id.label()
                ),
            );
        }
        if id.maybe_guest() {
            return refuse(
                "guest-revoke",
                format!(
                    "the scan does not say whether {} is a guest: sessions are never revoked for guest users",
                    id.label()
                ),
            );
        }
        Ok(())
    }

    async fn decide(&self, cx: &Ctx<'_>, work: &mut [Work], idx: &[usize], _reads: &mut Reads) {
        // Revokes are measured from the scan that asked for them, read once per run.
        let mut references: BTreeMap<String, Result<DateTime<Utc>, String>> = BTreeMap::new();
        for &i in idx {
            let a = &work[i].action;
            if !references.contains_key(&a.run_id) {
                let r = revoke_reference(cx, a).await;
                references.insert(a.run_id.clone(), r);
            }
        }
        for &i in idx {
            let w = &mut work[i];
            let since = references
                .get(&w.action.run_id)
                .cloned()
                .unwrap_or_else(|| Err("no scan time for this action".to_string()));
            decide_one(w, since);
        }
    }

    fn gone_is_done(&self) -> bool {
        false
    }

    fn done_text(&self, a: &Action) -> String {
        format!("sessions of {} revoked", a.identity_upn)
    }

    async fn plan_undo(&self, _cx: &Ctx<'_>, w: &mut Work, _orig: &Action, _s: &Snapshot) {
        w.decide(Outcome::Refused(
            "revoking sessions cannot be undone".into(),
        ));
    }

    async fn settle_reads(&self, _cx: &Ctx<'_>, a: &Action, _s: &Snapshot, ahead: &mut Ahead) {
        ahead.paths.push(sessions_path(&a.identity_id));
    }

    async fn landed(
        &self,
        cx: &Ctx<'_>,
        a: &Action,
        _s: &Snapshot,
        calls: &mut Vec<Value>,
        reads: &Reads,
    ) -> Landed {
        // A revoke resets signInSessionsValidFromDateTime to its time: at or
        // after the scan means it landed (or someone revoked since).
        let since = match revoke_reference(cx, a).await {
            Ok(since) => since,
            Err(e) => return Landed::Unknown(format!("the scan time is unknown: {e}")),
        };
        match peek(cx, calls, reads, sessions_path(&a.identity_id)).await {
            Some(r) if r.ok() => match revoked_since(&r.body, since) {
                Some(at) => Landed::Applied(format!(
                    "sessions were revoked at {} (signInSessionsValidFromDateTime), not before the scan of {}",
                    crate::store::ts(at),
                    crate::store::ts(since)
                )),
                None => Landed::NotApplied(format!(
                    "signInSessionsValidFromDateTime is {}, before the scan of {}: the revoke did not land",
                    r.body["signInSessionsValidFromDateTime"]
                        .as_str()
                        .unwrap_or("unset"),
                    crate::store::ts(since)
                )),
            },
            _ => Landed::Unknown("the user could not be read".into()),
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
    fn sessions_of_a_guest_are_never_revoked() {
        let guest = identity(1, "ext@x.com", json!({ "user_type": "Guest" }));
        assert_eq!(
            refusal(handler(ActionKind::RevokeSessions).check_scan(&[], &guest)),
            (
                "guest-revoke",
                "ext@x.com is a guest: sessions are never revoked for guest users (their home tenant owns them)".into()
            )
        );
        let ext = identity(2, "b_x.com#EXT#@t.com", json!({}));
        assert_eq!(
            refusal(handler(ActionKind::RevokeSessions).check_scan(&[], &ext)).0,
            "guest-revoke"
        );
        let member = identity(3, "m@t.com", json!({}));
        assert_eq!(
            handler(ActionKind::RevokeSessions).check_scan(&[], &member),
            Ok(())
        );
    }
}
