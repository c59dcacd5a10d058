//! Crash recovery: actions left `executing` by a stopped process are settled by
//! reading live state, so nothing is executed twice and nothing is lost.

use serde_json::{Value, json};

use super::{ExecError, Executor, Work, call_record, live};

use crate::domain::{Action, ActionKind, ActionState, ExecReport, ExecResult};
use crate::graph::GraphRequest;
use crate::store::{Filter, StateChange};

enum Verdict {
    /// The change is in place.
    Applied(String),
    /// It is not: the write did not land, so the action can run again.
    NotApplied(String),
    /// Cannot tell from live state; not re-sent.
    Unknown(String),
}

/// Actions settled per committed chunk: a stop during settling keeps every
/// chunk already committed, and each chunk's live state is read in batches.
pub const SETTLE_CHUNK: usize = 100;

impl Executor<'_> {
    /// Settles this tenant's actions left `executing`, chunk by chunk: live
    /// state of a chunk is read ahead in batches (one member list per group, one
    /// read per Conditional Access policy), and its verdicts committed together.
    pub async fn reconcile(&self) -> Result<ExecReport, ExecError> {
        let stuck = self
            .store
            .actions(&Filter {
                tenant: Some(self.tenant.name.clone()),
                state: Some(ActionState::Executing.to_string()),
                ..Filter::default()
            })
            .await?;
        let mut report = ExecReport::default();
        for chunk in stuck.chunks(SETTLE_CHUNK) {
            let settled = self.reconcile_chunk(chunk).await?;
            report.results.extend(settled.results);
        }
        Ok(report)
    }

    async fn reconcile_chunk(&self, chunk: &[Action]) -> Result<ExecReport, ExecError> {
        // Each action's intent snapshot, if it got that far.
        let mut items = Vec::with_capacity(chunk.len());
        for a in chunk {
            let events = self
                .store
                .events(&Filter {
                    action_id: Some(a.id),
                    ..Filter::default()
                })
                .await?;
            let snapshot = events
                .iter()
                .rev()
                .find(|e| e.kind == "graph_write_intent")
                .map(|e| {
                    serde_json::from_str::<Value>(&e.detail)
                        .map(|d| d["snapshot"].clone())
                        .unwrap_or(Value::Null)
                });
            items.push((a, snapshot));
        }
        let reads = self.settle_reads(&items).await;
        let mut report = ExecReport::default();
        let mut changes = Vec::new();
        for (a, snapshot) in items {
            let retry_state = a.retry_state();
            let mut calls = Vec::new();
            let verdict = match snapshot {
                None => Verdict::NotApplied("stopped before any write was sent".into()),
                Some(snapshot) => self.verdict(a, &snapshot, &mut calls, &reads).await,
            };
            let (state, reason) = match verdict {
                Verdict::Applied(s) => (
                    ActionState::Done,
                    format!("reconciled after a restart: {s}"),
                ),
                Verdict::NotApplied(s) => (
                    retry_state,
                    format!("reconciled after a restart: {s}; it will be executed again"),
                ),
                Verdict::Unknown(s) => (
                    ActionState::Failed,
                    // The intents of a pass are committed before any of its
                    // writes is sent, so this one may or may not have been.
                    format!(
                        "interrupted after its intent was recorded, so its write may have reached Graph: {s}; not sent again"
                    ),
                ),
            };
            report.results.push(ExecResult {
                id: a.id,
                state,
                reason: reason.clone(),
            });
            let event = self.event("reconciled", a, json!({"outcome": reason, "calls": calls}));
            changes.push(StateChange {
                action_id: a.id,
                state,
                reason: Some(reason),
                event,
            });
        }
        // Committed per chunk: a stop after this keeps these verdicts.
        self.store.transition(changes).await?;
        Ok(report)
    }

    /// Reads ahead the live state a chunk's verdicts need: user and role
    /// assignment reads through `$batch`, each group's members once, each
    /// Conditional Access policy once.
    async fn settle_reads(&self, items: &[(&Action, Option<Value>)]) -> live::Reads {
        let mut reads = live::Reads::default();
        let mut paths = Vec::new();
        let mut policies = Vec::new();
        let mut groups = Vec::new();
        for (a, snapshot) in items {
            let Some(snapshot) = snapshot else { continue };
            let targets = a.targets.clone();
            match a.remedy() {
                Some(ActionKind::DisableUser) => paths.push(disabled_path(&a.identity_id)),
                Some(ActionKind::RevokeSessions) => paths.push(sessions_path(&a.identity_id)),
                Some(ActionKind::RemoveRoleAssignment) => {
                    paths.extend(targets.iter().map(|t| assignment_path(t)))
                }
                Some(ActionKind::RemoveGroupMembership) => groups.extend(targets),
                Some(ActionKind::EnforceMfa | ActionKind::EnforcePhishingResistantMfa) => {
                    if snapshot["mode"] == "group" {
                        if let Some(g) = snapshot["group_id"].as_str() {
                            groups.push(g.to_string());
                        }
                    } else if let Some(id) = super::ca::policy_id(self, snapshot).await {
                        policies.push(policy_path(&id));
                    }
                }
                _ => {}
            }
        }
        reads.fetch(self, paths).await;
        policies.sort();
        policies.dedup();
        reads.fetch_each(self, policies).await;
        if let Some((a, _)) = items.first() {
            reads.fetch_members(self, a, groups).await;
        }
        reads
    }

    async fn verdict(
        &self,
        a: &Action,
        snapshot: &Value,
        calls: &mut Vec<Value>,
        reads: &live::Reads,
    ) -> Verdict {
        let revoke_since = if a.remedy() == Some(ActionKind::RevokeSessions) {
            Some(live::revoke_reference(self, a).await)
        } else {
            None
        };
        // Answered from what was read ahead for the chunk, else read now.
        let mut get = async |path: String| {
            if let Some((rec, ans)) = reads.answer(&path) {
                calls.push(rec.clone());
                return ans.clone().ok();
            }
            let req = GraphRequest::get(path);
            let ans = self.graph.call(&req).await;
            calls.push(call_record(&req, &ans));
            ans.ok()
        };
        let uid = &a.identity_id;
        let targets = a.targets.clone();
        match a.remedy() {
            Some(ActionKind::DisableUser) => match get(disabled_path(uid)).await {
                Some(r) if r.ok() && r.body["accountEnabled"] == json!(false) => {
                    Verdict::Applied("the account is disabled".into())
                }
                Some(r) if r.ok() => Verdict::NotApplied("the account is still enabled".into()),
                _ => Verdict::Unknown("the account could not be read".into()),
            },
            // A revoke resets signInSessionsValidFromDateTime to its time: at
            // or after the scan means it landed (or someone revoked since).
            Some(ActionKind::RevokeSessions) => match revoke_since {
                Some(Ok(since)) => match get(sessions_path(uid)).await {
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
                },
                Some(Err(e)) => Verdict::Unknown(format!("the scan time is unknown: {e}")),
                None => Verdict::Unknown("no scan time".into()),
            },
            Some(ActionKind::RemoveRoleAssignment) => {
                let mut all_gone = true;
                for t in &targets {
                    match get(assignment_path(t)).await {
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
                    match live::members_of(self, &mut w, reads, g).await {
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
                    let m = live::members_of(self, &mut w, reads, &gid).await;
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
                match get(policy_path(&id)).await {
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

fn disabled_path(uid: &str) -> String {
    format!("/users/{uid}?$select=id,accountEnabled")
}

fn sessions_path(uid: &str) -> String {
    format!("/users/{uid}?$select=id,signInSessionsValidFromDateTime")
}

fn assignment_path(aid: &str) -> String {
    format!("/roleManagement/directory/roleAssignments/{aid}")
}

fn policy_path(id: &str) -> String {
    format!("/identity/conditionalAccess/policies/{id}")
}
