//! Crash recovery: actions left `executing` by a stopped process are settled by
//! reading live state, so nothing is executed twice and nothing is lost.

use serde_json::{Value, json};

use super::{ExecError, ExecReport, Executor, Work, call_record, live};
use crate::action::ActionKind;
use crate::graph::GraphRequest;
use crate::store::{ActionRow, Filter, StateChange};

enum Verdict {
    /// The change is in place.
    Applied(String),
    /// It is not: the write did not land, so the action can run again.
    NotApplied(String),
    /// Cannot tell from live state; not re-sent.
    Unknown(String),
}

impl Executor<'_> {
    /// Settles this tenant's actions left `executing`.
    pub async fn reconcile(&self) -> Result<ExecReport, ExecError> {
        let stuck = self
            .store
            .actions(&Filter {
                tenant: Some(self.tenant.name.clone()),
                state: Some("executing".into()),
                ..Filter::default()
            })
            .await?;
        let mut report = ExecReport::default();
        let mut changes = Vec::new();
        for a in stuck {
            let events = self
                .store
                .events(&Filter {
                    action_id: Some(a.id),
                    ..Filter::default()
                })
                .await?;
            let intent = events.iter().rev().find(|e| e.kind == "graph_write_intent");
            let retry_state = if a.mode == "enforce" {
                "ready"
            } else {
                "approved"
            };
            let mut calls = Vec::new();
            let verdict = match intent {
                None => Verdict::NotApplied("stopped before any write was sent".into()),
                Some(e) => {
                    let snapshot = serde_json::from_str::<Value>(&e.detail)
                        .map(|d| d["snapshot"].clone())
                        .unwrap_or(Value::Null);
                    self.verdict(&a, &snapshot, &mut calls).await
                }
            };
            let (state, reason) = match verdict {
                Verdict::Applied(s) => ("done", format!("reconciled after a restart: {s}")),
                Verdict::NotApplied(s) => (
                    retry_state,
                    format!("reconciled after a restart: {s}; it will be executed again"),
                ),
                Verdict::Unknown(s) => (
                    "failed",
                    // The intents of a pass are committed before any of its
                    // writes is sent, so this one may or may not have been.
                    format!(
                        "interrupted after its intent was recorded, so its write may have reached Graph: {s}; not sent again"
                    ),
                ),
            };
            report
                .results
                .push((a.id, state.to_string(), reason.clone()));
            let event = self.event("reconciled", &a, json!({"outcome": reason, "calls": calls}));
            changes.push(StateChange {
                action_id: a.id,
                state: state.into(),
                reason: Some(reason),
                event,
            });
        }
        self.store.transition(changes).await?;
        Ok(report)
    }

    async fn verdict(&self, a: &ActionRow, snapshot: &Value, calls: &mut Vec<Value>) -> Verdict {
        let revoke_since = if a.kind == ActionKind::RevokeSessions.as_str() {
            Some(live::revoke_reference(self, a).await)
        } else {
            None
        };
        let mut get = async |path: String| {
            let req = GraphRequest::get(path);
            let ans = self.graph.call(&req).await;
            calls.push(call_record(&req, &ans));
            ans.ok()
        };
        let uid = &a.identity_id;
        let targets: Vec<String> = serde_json::from_str(&a.targets).unwrap_or_default();
        match ActionKind::parse(&a.kind) {
            Some(ActionKind::DisableUser) => {
                match get(format!("/users/{uid}?$select=id,accountEnabled")).await {
                    Some(r) if r.ok() && r.body["accountEnabled"] == json!(false) => {
                        Verdict::Applied("the account is disabled".into())
                    }
                    Some(r) if r.ok() => Verdict::NotApplied("the account is still enabled".into()),
                    _ => Verdict::Unknown("the account could not be read".into()),
                }
            }
            // A revoke resets signInSessionsValidFromDateTime to its time: at
            // or after the scan means it landed (or someone revoked since).
            Some(ActionKind::RevokeSessions) => match revoke_since {
                Some(Ok(since)) => {
                    match get(format!(
                        "/users/{uid}?$select=id,signInSessionsValidFromDateTime"
                    ))
                    .await
                    {
                        Some(r) if r.ok() => match live::revoked_since(&r.body, since) {
                            Some(at) => Verdict::Applied(format!(
                                "sessions were revoked at {} (signInSessionsValidFromDateTime), not before the scan of {}",
                                crate::store::ts(at),
                                crate::store::ts(since)
                            )),
                            None => Verdict::NotApplied(format!(
                                "signInSessionsValidFromDateTime is {}, before the scan of {}: the revoke did not land",
                                r.body["signInSessionsValidFromDateTime"]
                                    .as_str()
                                    .unwrap_or("unset"),
                                crate::store::ts(since)
                            )),
                        },
                        _ => Verdict::Unknown("the user could not be read".into()),
                    }
                }
                Some(Err(e)) => Verdict::Unknown(format!("the scan time is unknown: {e}")),
                None => Verdict::Unknown("no scan time".into()),
            },
            Some(ActionKind::RemoveRoleAssignment) => {
                let mut all_gone = true;
                for t in &targets {
                    match get(format!("/roleManagement/directory/roleAssignments/{t}")).await {
                        Some(r) if r.status == 404 => {}
                        Some(r) if r.ok() => all_gone = false,
                        _ => return Verdict::Unknown("a role assignment could not be read".into()),
                    }
                }
                if all_gone {
                    Verdict::Applied("the role assignments are gone".into())
                } else {
                    Verdict::NotApplied("a role assignment is still there".into())
                }
            }
            Some(ActionKind::RemoveGroupMembership) => {
                let mut w = Work::new(a.clone());
                let mut still = false;
                for g in &targets {
                    match live::member_ids(self, &mut w, g).await {
                        Some(m) => still |= m.contains(&uid.to_ascii_lowercase()),
                        None => return Verdict::Unknown("a group could not be read".into()),
                    }
                }
                calls.extend(w.calls);
                if still {
                    Verdict::NotApplied("the user is still a member".into())
                } else {
                    Verdict::Applied("the user is no longer a member".into())
                }
            }
            Some(ActionKind::EnforceMfa | ActionKind::EnforcePhishingResistantMfa) => {
                if snapshot["mode"] == "group" {
                    let gid = snapshot["group_id"].as_str().unwrap_or("").to_string();
                    let mut w = Work::new(a.clone());
                    let m = live::member_ids(self, &mut w, &gid).await;
                    calls.extend(w.calls);
                    return match m {
                        Some(m) if m.contains(&uid.to_ascii_lowercase()) => {
                            Verdict::Applied("the user is in the policy's group".into())
                        }
                        Some(_) => {
                            Verdict::NotApplied("the user is not in the policy's group".into())
                        }
                        None => Verdict::Unknown("the group could not be read".into()),
                    };
                }
                let Some(id) = super::ca::policy_id(self, snapshot).await else {
                    return Verdict::NotApplied("the policy was never created".into());
                };
                match get(format!("/identity/conditionalAccess/policies/{id}")).await {
                    Some(r) if r.ok() => {
                        let inc = r.body["conditions"]["users"]["includeUsers"]
                            .as_array()
                            .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(uid.as_str())));
                        if inc {
                            Verdict::Applied("the user is in the policy".into())
                        } else {
                            Verdict::NotApplied("the user is not in the policy".into())
                        }
                    }
                    Some(r) if r.status == 404 => Verdict::NotApplied("the policy is gone".into()),
                    _ => Verdict::Unknown("the policy could not be read".into()),
                }
            }
            None => Verdict::Unknown(
                "an interrupted undo is not repeated automatically; check and undo again".into(),
            ),
        }
    }
}
