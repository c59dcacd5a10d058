//! The policy itself: kept, adopted or (re-)created, and users mode, where
//! users are listed in the policy within a size budget.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    CaKind, POLICIES, array_of, display_name, excluded_groups, excluded_users, history, new_policy,
    policy_path,
};
use crate::actions::context::{Ctx, Work, map_error};
use crate::config::MfaPolicyConfig;
use crate::domain::{Outcome, Snapshot};
use crate::graph::{GraphRequest, GraphResponse};
use crate::store::NewEvent;

/// How many bytes of JSON a users-mode policy may take. Graph refuses a
/// Conditional Access policy whose directory object exceeds about 10 KB (all
/// conditions and the name together); its own accounting is not ours, so the
/// budget stays well below that: about 200 listed users.
pub const USERS_MODE_BUDGET: usize = 8 * 1024;

/// Bytes one more user id adds to a JSON array: the id, two quotes, a comma.
fn listed_cost(id: &str) -> usize {
    id.len() + 3
}

fn json_len(v: &Value) -> usize {
    serde_json::to_string(v)
        .map(|t| t.len())
        .unwrap_or(usize::MAX)
}

/// The policy of this kind that we would create, if the tenant has one: the
/// same display name and grant.
async fn find_ours(
    cx: &Ctx<'_>,
    k: &CaKind,
    s: &MfaPolicyConfig,
    calls: &mut Vec<Value>,
) -> Result<Option<Value>, Outcome> {
    let name = display_name(k, s);
    let r = cx
        .call(GraphRequest::get(POLICIES), calls)
        .await
        .map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "list Conditional Access policies"));
    }
    let same_grant = |p: &Value| {
        let g = &p["grantControls"];
        if k.phishing_resistant {
            g["authenticationStrength"]["id"] == super::PHISHING_RESISTANT_STRENGTH
        } else {
            g["builtInControls"]
                .as_array()
                .is_some_and(|b| b.iter().any(|c| c == "mfa"))
        }
    };
    Ok(r.body["value"].as_array().and_then(|v| {
        v.iter()
            .find(|p| p["displayName"].as_str() == Some(name.as_str()) && same_grant(p))
            .cloned()
    }))
}

/// Creates the policy (its intents committed first) and keeps its id.
async fn create_policy(
    cx: &Ctx<'_>,
    k: &CaKind,
    body: Value,
    stored: Option<String>,
    intents: Vec<NewEvent>,
    calls: &mut Vec<Value>,
) -> Result<Value, Outcome> {
    // Record the intent (the tenant's and each action's) before creating the policy.
    let mut events = vec![cx.tenant_event(
        "graph_write_intent",
        json!({"request": format!("POST {POLICIES}"), "body": body, "replaces": stored}),
    )];
    events.extend(intents);
    cx.store
        .append(events)
        .await
        .map_err(|e| Outcome::retryable(format!("history unavailable, nothing sent: {e}")))?;
    let req = GraphRequest::with_body(Method::POST, POLICIES, body);
    let r = cx.call(req, calls).await.map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "create Conditional Access policy"));
    }
    let id = r.body["id"].as_str().unwrap_or("").to_string();
    let kind = if stored.is_some() {
        "ca_policy_recreated"
    } else {
        "ca_policy_created"
    };
    let event = cx.tenant_event(
        kind,
        json!({
            "policy_id": id, "previous_id": stored,
            "why": if stored.is_some() { "the stored policy was deleted out of band" } else { "first user needing it" },
            "request_id": r.request_id(),
        }),
    );
    cx.store
        .set_tenant_state(&cx.tenant.name, k.key, &id, event)
        .await
        .map_err(|e| {
            Outcome::retryable(format!(
                "policy {id} created but its id could not be stored: {e}"
            ))
        })?;
    Ok(r.body)
}

/// The policy as Graph has it now, re-created (and the new id stored) when it is
/// missing; `users` is the users object for a policy we create.
pub(super) async fn ensure_policy(
    cx: &Ctx<'_>,
    k: &CaKind,
    s: &MfaPolicyConfig,
    users: Value,
    intents: Vec<NewEvent>,
    calls: &mut Vec<Value>,
) -> Result<(Value, bool), Outcome> {
    let stored = cx
        .store
        .tenant_state(&cx.tenant.name, k.key)
        .await
        .map_err(history)?;
    if let Some(id) = &stored {
        let r = cx
            .call(GraphRequest::get(policy_path(id)), calls)
            .await
            .map_err(Outcome::retryable)?;
        if r.ok() {
            return Ok((r.body, false));
        }
        if r.status != 404 {
            return Err(map_error(&r, "read Conditional Access policy"));
        }
    }
    // A policy we created may be in the tenant without its id recorded: the
    // process stopped, or the store failed, between Graph's answer and the
    // record. Take that one rather than create a second.
    if let Some(found) = find_ours(cx, k, s, calls).await? {
        let id = found["id"].as_str().unwrap_or("").to_string();
        let event = cx.tenant_event(
            "ca_policy_adopted",
            json!({
                "policy_id": id, "previous_id": stored,
                "why": "a policy with this name and grant is in the tenant but its id was not recorded (an interrupted run created it)",
            }),
        );
        cx.store
            .set_tenant_state(&cx.tenant.name, k.key, &id, event)
            .await
            .map_err(history)?;
        return Ok((found, false));
    }
    let body = new_policy(k, s, users);
    let created = create_policy(cx, k, body, stored, intents, calls).await?;
    Ok((created, true))
}

/// Commits the intents, then patches the policy: a write is never sent before
/// its intent is in history.
pub(super) async fn patch_policy(
    cx: &Ctx<'_>,
    id: &str,
    body: Value,
    intents: Vec<NewEvent>,
    calls: &mut Vec<Value>,
    what: &str,
) -> Result<GraphResponse, Outcome> {
    cx.store
        .append(intents)
        .await
        .map_err(|e| Outcome::retryable(format!("history unavailable, nothing sent: {e}")))?;
    let req = GraphRequest::with_body(Method::PATCH, policy_path(id), body);
    let r = cx.call(req, calls).await.map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, what));
    }
    Ok(r)
}

/// Why a user is not listed in a users-mode policy that is full.
fn full_reason(policy: &str, upn: &str) -> Outcome {
    Outcome::Refused(format!(
        "{policy} is full: listing {upn} would take it past {USERS_MODE_BUDGET} bytes, below Graph's Conditional Access policy size limit (about 10 KB); nothing was sent for this user. Set mode = \"group\" in [tenant.graph.mfa] (the default for new tenants) to put any number of users under MFA"
    ))
}

/// The users a policy created now lists: as many as fit the budget.
fn first_fit(empty: &Value, wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let mut size = json_len(empty);
    let mut first = BTreeSet::new();
    for id in wanted {
        if size.saturating_add(listed_cost(id)) > USERS_MODE_BUDGET {
            break;
        }
        size += listed_cost(id);
        first.insert(id.clone());
    }
    first
}

/// Users mode: the users are listed in the policy's `includeUsers`.
pub(super) async fn policy_mode(
    cx: &Ctx<'_>,
    k: &CaKind,
    s: &MfaPolicyConfig,
    work: &mut [Work],
    idx: &[usize],
    calls: &mut Vec<Value>,
) -> Result<(), Outcome> {
    let wanted: BTreeSet<String> = idx
        .iter()
        .map(|&i| work[i].action.identity_id.clone())
        .collect();
    let exclude = excluded_users(cx, calls).await;
    // A policy created now lists as many of the users as fit the budget.
    let empty = new_policy(
        k,
        s,
        json!({"includeUsers": [], "excludeUsers": exclude, "excludeGroups": excluded_groups(cx)}),
    );
    let first = first_fit(&empty, &wanted);
    let create_users = json!({
        "includeUsers": first.iter().collect::<Vec<_>>(),
        "excludeUsers": exclude,
        "excludeGroups": excluded_groups(cx),
    });
    let snapshot = Snapshot::policy(Some(k.key), None);
    let intents = idx
        .iter()
        .filter(|&&i| first.contains(&work[i].action.identity_id))
        .map(|&i| {
            cx.event(
                "graph_write_intent",
                &work[i].action,
                json!({"writes": [{"request": format!("POST {POLICIES}")}], "snapshot": snapshot}),
            )
        })
        .collect();
    let (policy, created) = ensure_policy(cx, k, s, create_users, intents, calls).await?;
    let id = policy["id"].as_str().unwrap_or("").to_string();
    if created {
        listed_at_creation(work, idx, &first, &id);
        return Ok(());
    }
    let mut current = array_of(&policy["conditions"]["users"]["includeUsers"]);
    current.remove("None");
    let mut to_add = Vec::new();
    for &i in idx {
        let w = &mut work[i];
        if current.contains(&w.action.identity_id) {
            w.decide(Outcome::AlreadyDone(format!(
                "{} is already in policy {id}",
                w.action.identity_upn
            )));
        } else {
            to_add.push(i);
        }
    }
    if to_add.is_empty() {
        return Ok(());
    }
    add_users(cx, k, &policy, current, exclude, work, &to_add, calls).await
}

/// Decides the actions of a policy just created: listed in it, or refused.
fn listed_at_creation(work: &mut [Work], idx: &[usize], first: &BTreeSet<String>, id: &str) {
    for &i in idx {
        let w = &mut work[i];
        if first.contains(&w.action.identity_id) {
            w.snapshot = Some(Snapshot::policy(None, Some(id)));
            w.decide(Outcome::Done(format!(
                "{} is under the new policy {id}",
                w.action.identity_upn
            )));
        } else {
            let o = full_reason(&format!("the new policy {id}"), &w.action.identity_upn);
            w.decide(o);
        }
    }
}

/// Adds the users of `to_add` to an existing policy (those that fit the
/// budget), then verifies by reading it back.
#[allow(clippy::too_many_arguments)]
async fn add_users(
    cx: &Ctx<'_>,
    k: &CaKind,
    policy: &Value,
    mut include: BTreeSet<String>,
    exclude: Vec<String>,
    work: &mut [Work],
    to_add: &[usize],
    calls: &mut Vec<Value>,
) -> Result<(), Outcome> {
    let id = policy["id"].as_str().unwrap_or("").to_string();
    let mut conditions = policy["conditions"].clone();
    let mut excl = array_of(&conditions["users"]["excludeUsers"]);
    excl.extend(exclude);
    // Protected users are never included, even if someone put them there.
    for e in &excl {
        include.remove(e);
    }
    // The policy as it would be stored: only users that keep it within budget
    // are added; the others are refused, never sent in an oversized write.
    let mut whole = policy.clone();
    if let Some(o) = whole.as_object_mut() {
        o.retain(|key, _| !key.starts_with("@odata."));
    }
    whole["conditions"]["users"]["includeUsers"] = json!(include);
    whole["conditions"]["users"]["excludeUsers"] = json!(excl);
    let mut size = json_len(&whole);
    let mut adding = Vec::new();
    for &i in to_add {
        let uid = work[i].action.identity_id.clone();
        if size.saturating_add(listed_cost(&uid)) > USERS_MODE_BUDGET {
            let o = full_reason(&format!("policy {id}"), &work[i].action.identity_upn);
            work[i].decide(o);
            continue;
        }
        if include.insert(uid.clone()) {
            size += listed_cost(&uid);
        }
        adding.push(i);
    }
    if adding.is_empty() {
        return Ok(());
    }
    conditions["users"]["includeUsers"] = json!(include);
    conditions["users"]["excludeUsers"] = json!(excl);
    let body = json!({"conditions": conditions});
    let snapshot = Snapshot::policy(Some(k.key), Some(&id));
    let intents: Vec<NewEvent> = adding
        .iter()
        .map(|&i| {
            cx.event(
                "graph_write_intent",
                &work[i].action,
                json!({"writes": [{"request": format!("PATCH {POLICIES}/{id}"), "body": body}],
                       "snapshot": snapshot}),
            )
        })
        .collect();
    let what = "update Conditional Access policy";
    patch_policy(cx, &id, body, intents, calls, what).await?;
    verify(cx, &id, work, &adding, calls).await
}

/// Reads the policy back and decides each added user by what it lists.
async fn verify(
    cx: &Ctx<'_>,
    id: &str,
    work: &mut [Work],
    added: &[usize],
    calls: &mut Vec<Value>,
) -> Result<(), Outcome> {
    let back = cx
        .call(GraphRequest::get(policy_path(id)), calls)
        .await
        .map_err(Outcome::retryable)?;
    let now_in = array_of(&back.body["conditions"]["users"]["includeUsers"]);
    for &i in added {
        let w = &mut work[i];
        w.snapshot = Some(Snapshot::policy(None, Some(id)));
        if now_in.contains(&w.action.identity_id) {
            w.decide(Outcome::Done(format!(
                "{} added to policy {id} (verified)",
                w.action.identity_upn
            )));
        } else {
            w.decide(Outcome::retryable(format!(
                "policy {id} was updated but does not list {} when read back",
                w.action.identity_upn
            )));
        }
    }
    Ok(())
}
