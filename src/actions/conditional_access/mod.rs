//! The two Conditional Access policies (MFA, phishing-resistant MFA), created on
//! first need, their ids kept in the store, re-created when deleted out of band.
//! In group mode (the default) each includes one security group (configured, or
//! created on first need and kept in the store) and users are added to the group.
//! In users mode users are appended by a serialized read-modify-write of the full
//! `includeUsers` array, verified by reading it back, only while the policy stays
//! within `USERS_MODE_BUDGET` (Graph refuses policies over about 10 KB).

mod group;
mod policy;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use super::Landed;
use super::context::{Ctx, Work, call_record, map_error};
use super::reads::{Ahead, Reads, members_of, peek};
use crate::config::{GraphConfig, MfaMode, MfaPolicyConfig, PolicyState};
use crate::domain::{Action, CaMode, Outcome, Snapshot};
use crate::graph::GraphRequest;

/// The phishing-resistant MFA built-in authentication strength.
pub const PHISHING_RESISTANT_STRENGTH: &str = "00000000-0000-0000-0000-000000000004";

const POLICIES: &str = "/identity/conditionalAccess/policies";

/// One of the two policies: where its ids are kept and what it grants.
pub(crate) struct CaKind {
    /// Where the policy's id is kept.
    pub key: &'static str,
    /// Where the id of the group we created is kept (group mode).
    pub group_key: &'static str,
    /// The `mailNickname` of that group.
    pub nick: &'static str,
    /// The policy's default display name.
    pub name: &'static str,
    /// Requires the phishing-resistant authentication strength (else MFA).
    pub phishing_resistant: bool,
    /// Its settings in `[tenant.graph]`.
    pub settings: fn(&GraphConfig) -> &MfaPolicyConfig,
}

fn policy_path(id: &str) -> String {
    format!("{POLICIES}/{id}")
}

/// Object ids that the policy always excludes: protected ids and UPNs.
async fn excluded_users(cx: &Ctx<'_>, calls: &mut Vec<Value>) -> Vec<String> {
    let mut out: BTreeSet<String> = cx.cfg.protected.ids.iter().cloned().collect();
    for upn in &cx.cfg.protected.upns {
        let req = GraphRequest::get(format!("/users/{upn}?$select=id"));
        let ans = cx.graph.call(&req).await;
        calls.push(call_record(&req, &ans));
        if let Ok(r) = ans
            && r.ok()
            && let Some(id) = r.body["id"].as_str()
        {
            out.insert(id.to_string());
        }
    }
    out.into_iter().collect()
}

fn excluded_groups(cx: &Ctx<'_>) -> Vec<String> {
    cx.cfg
        .protected
        .groups
        .iter()
        .filter(|g| crate::text::is_guid(g))
        .cloned()
        .collect()
}

fn display_name(k: &CaKind, s: &MfaPolicyConfig) -> String {
    s.display_name.clone().unwrap_or_else(|| k.name.to_string())
}

fn new_policy(k: &CaKind, s: &MfaPolicyConfig, users: Value) -> Value {
    let grant = if k.phishing_resistant {
        json!({"operator": "OR", "builtInControls": [], "authenticationStrength": {"id": PHISHING_RESISTANT_STRENGTH}})
    } else {
        json!({"operator": "OR", "builtInControls": ["mfa"]})
    };
    json!({
        "displayName": display_name(k, s),
        "state": match s.state {
            PolicyState::Enabled => "enabled",
            PolicyState::ReportOnly => "enabledForReportingButNotEnforced",
        },
        "conditions": {
            "clientAppTypes": ["all"],
            "applications": {"includeApplications": ["All"]},
            "users": users,
        },
        "grantControls": grant,
    })
}

fn array_of(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn history(e: crate::store::StoreError) -> Outcome {
    Outcome::retryable(format!("history unavailable: {e}"))
}

/// Whether this kind runs in group mode: as configured, else group mode
/// unless the store already holds a users-mode policy (an existing deployment).
async fn group_mode_wanted(cx: &Ctx<'_>, k: &CaKind, s: &MfaPolicyConfig) -> Result<bool, Outcome> {
    if let Some(m) = s.mode {
        return Ok(m == MfaMode::Group);
    }
    if s.group_id.is_some() {
        return Ok(true);
    }
    let state = |key: &'static str| async move {
        cx.store
            .tenant_state(&cx.tenant.name, key)
            .await
            .map_err(history)
    };
    let policy = state(k.key).await?;
    let group = state(k.group_key).await?;
    Ok(!(policy.is_some() && group.is_none()))
}

/// Decides and carries out every action `idx` of this kind still undecided.
pub(crate) async fn decide(cx: &Ctx<'_>, k: &CaKind, work: &mut [Work], idx: &[usize]) {
    let idx: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|&i| work[i].outcome.is_none())
        .collect();
    if idx.is_empty() {
        return;
    }
    let Some(s) = cx.tenant.graph.as_ref().map(|g| (k.settings)(g).clone()) else {
        return;
    };
    let mut calls = Vec::new();
    let result = match group_mode_wanted(cx, k, &s).await {
        Ok(true) => group::group_mode(cx, k, &s, work, &idx, &mut calls).await,
        Ok(false) => policy::policy_mode(cx, k, &s, work, &idx, &mut calls).await,
        Err(o) => Err(o),
    };
    for &i in &idx {
        work[i].calls.extend(calls.iter().cloned());
        if let Err(o) = &result {
            work[i].decide(o.clone());
        }
    }
}

/// The policy an action's snapshot refers to: its id, or the tenant's current
/// policy for that kind when the action created it.
async fn policy_id(cx: &Ctx<'_>, s: &Snapshot) -> Option<String> {
    if let Some(id) = &s.policy_id {
        return Some(id.clone());
    }
    let key = s.policy_key.as_deref()?;
    cx.store
        .tenant_state(&cx.tenant.name, key)
        .await
        .ok()
        .flatten()
}

/// Undo of a users-mode MFA action: the policy without the user.
async fn undo_policy(cx: &Ctx<'_>, w: &mut Work, orig: &Action, s: &Snapshot) {
    let Some(id) = policy_id(cx, s).await else {
        w.decide(Outcome::Refused(
            "the MFA policy is not known any more".into(),
        ));
        return;
    };
    let r = match cx
        .call(GraphRequest::get(policy_path(&id)), &mut w.calls)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            w.decide(Outcome::retryable(e));
            return;
        }
    };
    if !r.ok() {
        w.decide(map_error(&r, "read Conditional Access policy"));
        return;
    }
    let mut conditions = r.body["conditions"].clone();
    let mut include = array_of(&conditions["users"]["includeUsers"]);
    if !include.remove(&orig.identity_id) {
        w.decide(Outcome::AlreadyDone(format!(
            "{} is not in policy {id}",
            orig.identity_upn
        )));
        return;
    }
    // A policy must include someone: "None" keeps it valid and inert.
    conditions["users"]["includeUsers"] = if include.is_empty() {
        json!(["None"])
    } else {
        json!(include)
    };
    w.writes.push(GraphRequest::with_body(
        Method::PATCH,
        policy_path(&id),
        json!({"conditions": conditions}),
    ));
}

/// Undo of an MFA action: take the user out of the policy (or its group).
pub(crate) async fn plan_undo(cx: &Ctx<'_>, w: &mut Work, orig: &Action, s: &Snapshot) {
    match s.mode {
        Some(CaMode::Group) => {
            let gid = s.group_id.as_deref().unwrap_or("");
            w.writes.push(GraphRequest::new(
                Method::DELETE,
                format!("/groups/{gid}/members/{}/$ref", orig.identity_id),
            ));
        }
        Some(CaMode::Policy) => undo_policy(cx, w, orig, s).await,
        None => w.decide(Outcome::Refused(format!(
            "action {} kept no snapshot to undo",
            orig.id
        ))),
    }
}

/// What settling an MFA action needs read ahead: its group's members, or its policy.
pub(crate) async fn settle_reads(cx: &Ctx<'_>, s: &Snapshot, ahead: &mut Ahead) {
    if s.mode == Some(CaMode::Group) {
        if let Some(g) = &s.group_id {
            ahead.groups.push((g.clone(), None));
        }
    } else if let Some(id) = policy_id(cx, s).await {
        ahead.each.push(policy_path(&id));
    }
}

/// Whether the user of an interrupted MFA action is under the policy.
pub(crate) async fn landed(
    cx: &Ctx<'_>,
    a: &Action,
    s: &Snapshot,
    calls: &mut Vec<Value>,
    reads: &Reads,
) -> Landed {
    let uid = &a.identity_id;
    if s.mode == Some(CaMode::Group) {
        let gid = s.group_id.clone().unwrap_or_default();
        return match members_of(cx, calls, reads, &gid).await {
            Ok(m) if m.contains(&uid.to_ascii_lowercase()) => {
                Landed::Applied("the user is in the policy's group".into())
            }
            Ok(_) => Landed::NotApplied("the user is not in the policy's group".into()),
            Err(_) => Landed::Unknown("the group could not be read".into()),
        };
    }
    let Some(id) = policy_id(cx, s).await else {
        return Landed::NotApplied("the policy was never created".into());
    };
    match peek(cx, calls, reads, policy_path(&id)).await {
        Some(r) if r.ok() => {
            if array_of(&r.body["conditions"]["users"]["includeUsers"]).contains(uid) {
                Landed::Applied("the user is in the policy".into())
            } else {
                Landed::NotApplied("the user is not in the policy".into())
            }
        }
        Some(r) if r.status == 404 => Landed::NotApplied("the policy is gone".into()),
        _ => Landed::Unknown("the policy could not be read".into()),
    }
}
