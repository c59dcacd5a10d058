//! The two Conditional Access policies (MFA, phishing-resistant MFA), created on
//! first need, their ids kept in the store, re-created when deleted out of band.
//! In group mode (the default) each includes one security group (configured, or
//! created on first need and kept in the store) and users are added to the group.
//! In users mode users are appended by a serialized read-modify-write of the full
//! `includeUsers` array, verified by reading it back, only while the policy stays
//! within `USERS_MODE_BUDGET` (Graph refuses policies over about 10 KB).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use super::{Executor, Outcome, Work, call_record, live, map_error};
use crate::config::{MfaMode, MfaPolicyConfig, PolicyState};
use crate::domain::Action;
use crate::domain::ActionKind;
use crate::graph::{GraphRequest, GraphResponse};
use crate::store::NewEvent;

/// The phishing-resistant MFA built-in authentication strength.
pub const PHISHING_RESISTANT_STRENGTH: &str = "00000000-0000-0000-0000-000000000004";

const POLICIES: &str = "/identity/conditionalAccess/policies";

struct Kind {
    action: ActionKind,
    key: &'static str,
    /// Where the id of the group we created is kept (group mode).
    group_key: &'static str,
    /// The `mailNickname` of that group.
    nick: &'static str,
    name: &'static str,
}

const KINDS: [Kind; 2] = [
    Kind {
        action: ActionKind::EnforceMfa,
        key: "ca_policy:enforce_mfa",
        group_key: "ca_group:enforce_mfa",
        nick: "entra-remediator-mfa",
        name: "entra-remediator: require MFA",
    },
    Kind {
        action: ActionKind::EnforcePhishingResistantMfa,
        key: "ca_policy:enforce_phishing_resistant_mfa",
        group_key: "ca_group:enforce_phishing_resistant_mfa",
        nick: "entra-remediator-phishing-resistant-mfa",
        name: "entra-remediator: require phishing-resistant MFA",
    },
];

fn settings<'a>(ex: &'a Executor<'_>, k: &Kind) -> Option<&'a MfaPolicyConfig> {
    let g = ex.tenant.graph.as_ref()?;
    Some(match k.action {
        ActionKind::EnforcePhishingResistantMfa => &g.phishing_resistant_mfa,
        _ => &g.mfa,
    })
}

fn tenant_event(ex: &Executor<'_>, kind: &str, detail: Value) -> NewEvent {
    NewEvent {
        tenant: Some(ex.tenant.name.clone()),
        kind: kind.into(),
        actor: ex.actor.clone(),
        detail: detail.to_string(),
        ..NewEvent::default()
    }
}

/// Object ids that the policy always excludes: protected ids and UPNs.
async fn excluded_users(ex: &Executor<'_>, calls: &mut Vec<Value>) -> Vec<String> {
    let mut out: BTreeSet<String> = ex.cfg.protected.ids.iter().cloned().collect();
    for upn in &ex.cfg.protected.upns {
        let req = GraphRequest::get(format!("/users/{upn}?$select=id"));
        let ans = ex.graph.call(&req).await;
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

fn excluded_groups(ex: &Executor<'_>) -> Vec<String> {
    ex.cfg
        .protected
        .groups
        .iter()
        .filter(|g| crate::text::is_guid(g))
        .cloned()
        .collect()
}

fn new_policy(k: &Kind, s: &MfaPolicyConfig, users: Value) -> Value {
    let grant = if k.action == ActionKind::EnforcePhishingResistantMfa {
        json!({"operator": "OR", "builtInControls": [], "authenticationStrength": {"id": PHISHING_RESISTANT_STRENGTH}})
    } else {
        json!({"operator": "OR", "builtInControls": ["mfa"]})
    };
    json!({
        "displayName": s.display_name.clone().unwrap_or_else(|| k.name.to_string()),
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

async fn call(
    ex: &Executor<'_>,
    req: GraphRequest,
    calls: &mut Vec<Value>,
) -> Result<GraphResponse, String> {
    let ans = ex.graph.call(&req).await;
    calls.push(call_record(&req, &ans));
    ans.map_err(|e| format!("{}: {e}", req.describe()))
}

/// The policy as Graph has it now, re-created (and the new id stored) when it is
/// missing; `users` is the users object for a policy we create.
async fn ensure_policy(
    ex: &Executor<'_>,
    k: &Kind,
    s: &MfaPolicyConfig,
    users: Value,
    intents: Vec<NewEvent>,
    calls: &mut Vec<Value>,
) -> Result<(Value, bool), Outcome> {
    let stored = ex
        .store
        .tenant_state(&ex.tenant.name, k.key)
        .await
        .map_err(|e| Outcome::retryable(format!("history unavailable: {e}")))?;
    if let Some(id) = &stored {
        let r = call(ex, GraphRequest::get(format!("{POLICIES}/{id}")), calls)
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
    if let Some(found) = find_ours(ex, k, s, calls).await? {
        let id = found["id"].as_str().unwrap_or("").to_string();
        ex.store
            .set_tenant_state(
                &ex.tenant.name,
                k.key,
                &id,
                tenant_event(
                    ex,
                    "ca_policy_adopted",
                    json!({
                        "policy_id": id, "previous_id": stored,
                        "why": "a policy with this name and grant is in the tenant but its id was not recorded (an interrupted run created it)",
                    }),
                ),
            )
            .await
            .map_err(|e| Outcome::retryable(format!("history unavailable: {e}")))?;
        return Ok((found, false));
    }
    let body = new_policy(k, s, users);
    // Record the intent (the tenant's and each action's) before creating the policy.
    let mut events = vec![tenant_event(
        ex,
        "graph_write_intent",
        json!({"request": format!("POST {POLICIES}"), "body": body, "replaces": stored}),
    )];
    events.extend(intents);
    ex.store
        .append(events)
        .await
        .map_err(|e| Outcome::retryable(format!("history unavailable, nothing sent: {e}")))?;
    let r = call(
        ex,
        GraphRequest::with_body(Method::POST, POLICIES, body),
        calls,
    )
    .await
    .map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "create Conditional Access policy"));
    }
    let id = r.body["id"].as_str().unwrap_or("").to_string();
    let kind = if stored.is_some() {
        "ca_policy_recreated"
    } else {
        "ca_policy_created"
    };
    ex.store
        .set_tenant_state(
            &ex.tenant.name,
            k.key,
            &id,
            tenant_event(
                ex,
                kind,
                json!({
                    "policy_id": id, "previous_id": stored,
                    "why": if stored.is_some() { "the stored policy was deleted out of band" } else { "first user needing it" },
                    "request_id": r.request_id(),
                }),
            ),
        )
        .await
        .map_err(|e| Outcome::retryable(format!("policy {id} created but its id could not be stored: {e}")))?;
    Ok((r.body, true))
}

/// The policy of this kind that we would create, if the tenant has one: the
/// same display name and grant.
async fn find_ours(
    ex: &Executor<'_>,
    k: &Kind,
    s: &MfaPolicyConfig,
    calls: &mut Vec<Value>,
) -> Result<Option<Value>, Outcome> {
    let name = s.display_name.clone().unwrap_or_else(|| k.name.to_string());
    let r = call(ex, GraphRequest::get(POLICIES), calls)
        .await
        .map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "list Conditional Access policies"));
    }
    let same_grant = |p: &Value| {
        let g = &p["grantControls"];
        if k.action == ActionKind::EnforcePhishingResistantMfa {
            g["authenticationStrength"]["id"] == PHISHING_RESISTANT_STRENGTH
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

/// How many bytes of JSON a users-mode policy may take. Graph refuses a
/// Conditional Access policy whose directory object exceeds about 10 KB (all
/// conditions and the name together); its own accounting is not ours, so the
/// budget stays well below that: about 200 listed users.
pub const USERS_MODE_BUDGET: usize = 8 * 1024;

/// Bytes one more user id adds to a JSON array: the id, two quotes, a comma.
fn listed_cost(id: &str) -> usize {
    id.len() + 3
}

/// Whether this kind runs in group mode: as configured, else group mode
/// unless the store already holds a users-mode policy (an existing deployment).
async fn group_mode_wanted(
    ex: &Executor<'_>,
    k: &Kind,
    s: &MfaPolicyConfig,
) -> Result<bool, Outcome> {
    if let Some(m) = s.mode {
        return Ok(m == MfaMode::Group);
    }
    if s.group_id.is_some() {
        return Ok(true);
    }
    let state = |key: &'static str| async move {
        ex.store
            .tenant_state(&ex.tenant.name, key)
            .await
            .map_err(|e| Outcome::retryable(format!("history unavailable: {e}")))
    };
    let policy = state(k.key).await?;
    let group = state(k.group_key).await?;
    Ok(!(policy.is_some() && group.is_none()))
}

/// Decides and carries out every MFA action of this pass.
pub(crate) async fn enforce(ex: &Executor<'_>, work: &mut [Work]) {
    for k in &KINDS {
        let idx: Vec<usize> = work
            .iter()
            .enumerate()
            .filter(|(_, w)| w.outcome.is_none() && w.kind == Some(k.action))
            .map(|(i, _)| i)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let Some(s) = settings(ex, k).cloned() else {
            continue;
        };
        let mut calls = Vec::new();
        let result = match group_mode_wanted(ex, k, &s).await {
            Ok(true) => group_mode(ex, k, &s, work, &idx, &mut calls).await,
            Ok(false) => policy_mode(ex, k, &s, work, &idx, &mut calls).await,
            Err(o) => Err(o),
        };
        for &i in &idx {
            work[i].calls.extend(calls.iter().cloned());
            if let Err(o) = &result {
                work[i].decide(o.clone());
            }
        }
    }
}

/// Percent-encodes a `$filter` literal (quotes doubled, as OData wants).
fn odata_literal(v: &str) -> String {
    let mut out = String::new();
    for b in v.replace('\'', "''").bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn group_name(k: &Kind, s: &MfaPolicyConfig) -> String {
    let policy = s.display_name.clone().unwrap_or_else(|| k.name.to_string());
    format!("{policy} (members)")
}

/// The group the policy includes: configured, kept in the store, adopted when
/// an interrupted run created it without recording it, or created now (its
/// intent committed first, its id kept in the store like the policy's).
async fn ensure_group(
    ex: &Executor<'_>,
    k: &Kind,
    s: &MfaPolicyConfig,
    calls: &mut Vec<Value>,
) -> Result<String, Outcome> {
    if let Some(g) = &s.group_id {
        return Ok(g.clone());
    }
    let history =
        |e: crate::store::StoreError| Outcome::retryable(format!("history unavailable: {e}"));
    let stored = ex
        .store
        .tenant_state(&ex.tenant.name, k.group_key)
        .await
        .map_err(history)?;
    if let Some(id) = &stored {
        let r = call(
            ex,
            GraphRequest::get(format!("/groups/{id}?$select=id")),
            calls,
        )
        .await
        .map_err(Outcome::retryable)?;
        if r.ok() {
            return Ok(id.clone());
        }
        if r.status != 404 {
            return Err(map_error(&r, "read the MFA group"));
        }
    }
    let name = group_name(k, s);
    let r = call(
        ex,
        GraphRequest::get(format!(
            "/groups?$filter=displayName%20eq%20%27{}%27&$select=id,displayName,securityEnabled,mailEnabled",
            odata_literal(&name)
        )),
        calls,
    )
    .await
    .map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "look up the MFA group"));
    }
    let found = r.body["value"].as_array().and_then(|v| {
        v.iter()
            .find(|g| g["securityEnabled"] == json!(true) && g["mailEnabled"] != json!(true))
            .and_then(|g| g["id"].as_str())
            .map(str::to_string)
    });
    if let Some(id) = found {
        ex.store
            .set_tenant_state(
                &ex.tenant.name,
                k.group_key,
                &id,
                tenant_event(
                    ex,
                    "mfa_group_adopted",
                    json!({"group_id": id, "previous_id": stored,
                           "why": "a security group with this name is in the tenant but its id was not recorded (an interrupted run created it)"}),
                ),
            )
            .await
            .map_err(history)?;
        return Ok(id);
    }
    let body = json!({
        "displayName": name,
        "description": "Members are required to use MFA by an entra-remediator Conditional Access policy. Managed by entra-remediator.",
        "mailEnabled": false,
        "mailNickname": k.nick,
        "securityEnabled": true,
    });
    ex.store
        .append(vec![tenant_event(
            ex,
            "graph_write_intent",
            json!({"request": "POST /groups", "body": body, "replaces": stored}),
        )])
        .await
        .map_err(|e| Outcome::retryable(format!("history unavailable, nothing sent: {e}")))?;
    let r = call(
        ex,
        GraphRequest::with_body(Method::POST, "/groups", body),
        calls,
    )
    .await
    .map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "create the MFA group"));
    }
    let id = r.body["id"].as_str().unwrap_or("").to_string();
    ex.store
        .set_tenant_state(
            &ex.tenant.name,
            k.group_key,
            &id,
            tenant_event(
                ex,
                if stored.is_some() { "mfa_group_recreated" } else { "mfa_group_created" },
                json!({"group_id": id, "previous_id": stored, "request_id": r.request_id(),
                       "why": if stored.is_some() { "the stored group was deleted out of band" } else { "first user needing it (group mode)" }}),
            ),
        )
        .await
        .map_err(|e| Outcome::retryable(format!("group {id} created but its id could not be stored: {e}")))?;
    Ok(id)
}

async fn group_mode(
    ex: &Executor<'_>,
    k: &Kind,
    s: &MfaPolicyConfig,
    work: &mut [Work],
    idx: &[usize],
    calls: &mut Vec<Value>,
) -> Result<(), Outcome> {
    let gid = ensure_group(ex, k, s, calls).await?;
    let gid = gid.as_str();
    let exclude = excluded_users(ex, calls).await;
    let users = json!({"includeGroups": [gid], "excludeUsers": exclude, "excludeGroups": excluded_groups(ex)});
    let (policy, _) = ensure_policy(ex, k, s, users, Vec::new(), calls).await?;
    // A policy kept from users mode (or edited) must include the group too;
    // its listed users stay included (users and groups are OR-ed).
    let groups = array_of(&policy["conditions"]["users"]["includeGroups"]);
    if !groups.iter().any(|g| g.eq_ignore_ascii_case(gid)) {
        let id = policy["id"].as_str().unwrap_or("").to_string();
        let mut users = policy["conditions"]["users"].clone();
        let mut include: Vec<String> = groups.into_iter().collect();
        include.push(gid.to_string());
        users["includeGroups"] = json!(include);
        // "None" would exclude the group's members from nothing, but it cannot
        // stand beside a group.
        if users["includeUsers"] == json!(["None"]) {
            users["includeUsers"] = json!([]);
        }
        let body = json!({"conditions": {"users": users}});
        let intent = tenant_event(
            ex,
            "graph_write_intent",
            json!({"request": format!("PATCH {POLICIES}/{id}"), "body": body, "why": "group mode: the policy must include the MFA group"}),
        );
        patch_policy(
            ex,
            &id,
            body,
            vec![intent],
            calls,
            "include the MFA group in the policy",
        )
        .await?;
    }
    let Some(&first) = idx.first() else {
        return Ok(());
    };
    let Some(members) = live::member_ids(ex, &mut work[first], gid).await else {
        return Err(work[first]
            .outcome
            .clone()
            .unwrap_or(Outcome::retryable("read group members")));
    };
    let graph_base = ex
        .tenant
        .graph
        .as_ref()
        .map(|g| g.graph_url())
        .unwrap_or_default();
    for &i in idx {
        let w = &mut work[i];
        let uid = w.action.identity_id.clone();
        if members.contains(&uid.to_ascii_lowercase()) {
            w.decide(Outcome::AlreadyDone(format!(
                "{} is already in the policy's group",
                w.action.identity_upn
            )));
        } else {
            w.snapshot = Some(json!({"mode": "group", "group_id": gid}));
            // Sent with the other writes (batched), after the intent is committed.
            w.writes.push(GraphRequest::with_body(
                Method::POST,
                format!("/groups/{gid}/members/$ref"),
                json!({"@odata.id": format!("{graph_base}/v1.0/directoryObjects/{uid}")}),
            ));
        }
    }
    Ok(())
}

/// Why a user is not listed in a users-mode policy that is full.
fn full_reason(policy: &str, upn: &str) -> Outcome {
    Outcome::Refused(format!(
        "{policy} is full: listing {upn} would take it past {USERS_MODE_BUDGET} bytes, below Graph's Conditional Access policy size limit (about 10 KB); nothing was sent for this user. Set mode = \"group\" in [tenant.graph.mfa] (the default for new tenants) to put any number of users under MFA"
    ))
}

async fn policy_mode(
    ex: &Executor<'_>,
    k: &Kind,
    s: &MfaPolicyConfig,
    work: &mut [Work],
    idx: &[usize],
    calls: &mut Vec<Value>,
) -> Result<(), Outcome> {
    let wanted: BTreeSet<String> = idx
        .iter()
        .map(|&i| work[i].action.identity_id.clone())
        .collect();
    let exclude = excluded_users(ex, calls).await;
    // A policy created now lists as many of the users as fit the budget.
    let empty = new_policy(
        k,
        s,
        json!({"includeUsers": [], "excludeUsers": exclude, "excludeGroups": excluded_groups(ex)}),
    );
    let mut size = serde_json::to_string(&empty)
        .map(|t| t.len())
        .unwrap_or(usize::MAX);
    let mut first: BTreeSet<String> = BTreeSet::new();
    for id in &wanted {
        if size.saturating_add(listed_cost(id)) > USERS_MODE_BUDGET {
            break;
        }
        size += listed_cost(id);
        first.insert(id.clone());
    }
    let create_users = json!({
        "includeUsers": first.iter().collect::<Vec<_>>(),
        "excludeUsers": exclude,
        "excludeGroups": excluded_groups(ex),
    });
    let intents = idx
        .iter()
        .filter(|&&i| first.contains(&work[i].action.identity_id))
        .map(|&i| {
            ex.event(
                "graph_write_intent",
                &work[i].action,
                json!({"writes": [{"request": format!("POST {POLICIES}")}],
                       "snapshot": {"mode": "policy", "policy_key": k.key}}),
            )
        })
        .collect();
    let (policy, created) = ensure_policy(ex, k, s, create_users, intents, calls).await?;
    let id = policy["id"].as_str().unwrap_or("").to_string();
    let mut current = array_of(&policy["conditions"]["users"]["includeUsers"]);
    current.remove("None");
    if created {
        for &i in idx {
            let w = &mut work[i];
            if first.contains(&w.action.identity_id) {
                w.snapshot = Some(json!({"mode": "policy", "policy_id": id}));
                w.decide(Outcome::Done(format!(
                    "{} is under the new policy {id}",
                    w.action.identity_upn
                )));
            } else {
                let o = full_reason(&format!("the new policy {id}"), &w.action.identity_upn);
                w.decide(o);
            }
        }
        return Ok(());
    }
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
    let mut conditions = policy["conditions"].clone();
    let mut include = current.clone();
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
    let mut size = serde_json::to_string(&whole)
        .map(|t| t.len())
        .unwrap_or(usize::MAX);
    let mut adding = Vec::new();
    for &i in &to_add {
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
    let to_add = adding;
    if to_add.is_empty() {
        return Ok(());
    }
    conditions["users"]["includeUsers"] = json!(include);
    conditions["users"]["excludeUsers"] = json!(excl);
    let body = json!({"conditions": conditions});
    let intents: Vec<NewEvent> = to_add
        .iter()
        .map(|&i| {
            ex.event(
                "graph_write_intent",
                &work[i].action,
                json!({"writes": [{"request": format!("PATCH {POLICIES}/{id}"), "body": body}],
                       "snapshot": {"mode": "policy", "policy_key": k.key, "policy_id": id}}),
            )
        })
        .collect();
    patch_policy(
        ex,
        &id,
        body,
        intents,
        calls,
        "update Conditional Access policy",
    )
    .await?;
    // Verify by reading it back.
    let back = call(ex, GraphRequest::get(format!("{POLICIES}/{id}")), calls)
        .await
        .map_err(Outcome::retryable)?;
    let now_in = array_of(&back.body["conditions"]["users"]["includeUsers"]);
    for &i in &to_add {
        let w = &mut work[i];
        w.snapshot = Some(json!({"mode": "policy", "policy_id": id}));
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

/// Commits the intents, then patches the policy: a write is never sent before
/// its intent is in history.
async fn patch_policy(
    ex: &Executor<'_>,
    id: &str,
    body: Value,
    intents: Vec<NewEvent>,
    calls: &mut Vec<Value>,
    what: &str,
) -> Result<GraphResponse, Outcome> {
    ex.store
        .append(intents)
        .await
        .map_err(|e| Outcome::retryable(format!("history unavailable, nothing sent: {e}")))?;
    let r = call(
        ex,
        GraphRequest::with_body(Method::PATCH, format!("{POLICIES}/{id}"), body),
        calls,
    )
    .await
    .map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, what));
    }
    Ok(r)
}

/// The policy an action's snapshot refers to: its id, or the tenant's current
/// policy for that kind when the action created it.
pub(crate) async fn policy_id(ex: &Executor<'_>, snapshot: &Value) -> Option<String> {
    if let Some(id) = snapshot["policy_id"].as_str() {
        return Some(id.to_string());
    }
    let key = snapshot["policy_key"].as_str()?;
    ex.store
        .tenant_state(&ex.tenant.name, key)
        .await
        .ok()
        .flatten()
}

/// Undo of an MFA action: take the user out of the policy (or its group).
pub(crate) async fn plan_undo(ex: &Executor<'_>, w: &mut Work, orig: &Action, snapshot: &Value) {
    let uid = orig.identity_id.clone();
    match snapshot["mode"].as_str() {
        Some("group") => {
            let gid = snapshot["group_id"].as_str().unwrap_or("").to_string();
            w.writes.push(GraphRequest::new(
                Method::DELETE,
                format!("/groups/{gid}/members/{uid}/$ref"),
            ));
        }
        Some("policy") => {
            let Some(id) = policy_id(ex, snapshot).await else {
                w.decide(Outcome::Refused(
                    "the MFA policy is not known any more".into(),
                ));
                return;
            };
            let mut calls = Vec::new();
            let r = match call(
                ex,
                GraphRequest::get(format!("{POLICIES}/{id}")),
                &mut calls,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    w.calls.extend(calls);
                    w.decide(Outcome::retryable(e));
                    return;
                }
            };
            w.calls.extend(calls);
            if !r.ok() {
                w.decide(map_error(&r, "read Conditional Access policy"));
                return;
            }
            let mut conditions = r.body["conditions"].clone();
            let mut include = array_of(&conditions["users"]["includeUsers"]);
            if !include.remove(&uid) {
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
                format!("{POLICIES}/{id}"),
                json!({"conditions": conditions}),
            ));
        }
        _ => w.decide(Outcome::Refused(format!(
            "action {} kept no snapshot to undo",
            orig.id
        ))),
    }
}
