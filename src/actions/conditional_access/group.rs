//! Group mode: the policy includes one security group (configured, kept in the
//! store, adopted or created on first need) and users are added to the group.

use reqwest::Method;
use serde_json::{Value, json};

use super::policy::{ensure_policy, patch_policy};
use super::{CaKind, POLICIES, array_of, display_name, excluded_groups, excluded_users, history};
use crate::actions::context::{Ctx, Work, map_error, odata_literal};
use crate::actions::reads::member_ids;
use crate::config::MfaPolicyConfig;
use crate::domain::{CaMode, Outcome, Snapshot};
use crate::graph::GraphRequest;

fn group_name(k: &CaKind, s: &MfaPolicyConfig) -> String {
    format!("{} (members)", display_name(k, s))
}

/// A security group of ours that an interrupted run created without recording it.
async fn find_ours(
    cx: &Ctx<'_>,
    name: &str,
    calls: &mut Vec<Value>,
) -> Result<Option<String>, Outcome> {
    let path = format!(
        "/groups?$filter=displayName%20eq%20%27{}%27&$select=id,displayName,securityEnabled,mailEnabled",
        odata_literal(name)
    );
    let r = cx
        .call(GraphRequest::get(path), calls)
        .await
        .map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "look up the MFA group"));
    }
    Ok(r.body["value"].as_array().and_then(|v| {
        v.iter()
            .find(|g| g["securityEnabled"] == json!(true) && g["mailEnabled"] != json!(true))
            .and_then(|g| g["id"].as_str())
            .map(str::to_string)
    }))
}

/// Creates the group (its intent committed first) and keeps its id.
async fn create_group(
    cx: &Ctx<'_>,
    k: &CaKind,
    name: String,
    stored: Option<String>,
    calls: &mut Vec<Value>,
) -> Result<String, Outcome> {
    let body = json!({
        "displayName": name,
        "description": "Members are required to use MFA by an entra-remediator Conditional Access policy. Managed by entra-remediator.",
        "mailEnabled": false,
        "mailNickname": k.nick,
        "securityEnabled": true,
    });
    cx.store
        .append(vec![cx.tenant_event(
            "graph_write_intent",
            json!({"request": "POST /groups", "body": body, "replaces": stored}),
        )])
        .await
        .map_err(|e| Outcome::retryable(format!("history unavailable, nothing sent: {e}")))?;
    let req = GraphRequest::with_body(Method::POST, "/groups", body);
    let r = cx.call(req, calls).await.map_err(Outcome::retryable)?;
    if !r.ok() {
        return Err(map_error(&r, "create the MFA group"));
    }
    let id = r.body["id"].as_str().unwrap_or("").to_string();
    let event = cx.tenant_event(
        if stored.is_some() { "mfa_group_recreated" } else { "mfa_group_created" },
        json!({"group_id": id, "previous_id": stored, "request_id": r.request_id(),
               "why": if stored.is_some() { "the stored group was deleted out of band" } else { "first user needing it (group mode)" }}),
    );
    cx.store
        .set_tenant_state(&cx.tenant.name, k.group_key, &id, event)
        .await
        .map_err(|e| {
            Outcome::retryable(format!(
                "group {id} created but its id could not be stored: {e}"
            ))
        })?;
    Ok(id)
}

/// The group the policy includes: configured, kept in the store, adopted when
/// an interrupted run created it without recording it, or created now (its
/// intent committed first, its id kept in the store like the policy's).
async fn ensure_group(
    cx: &Ctx<'_>,
    k: &CaKind,
    s: &MfaPolicyConfig,
    calls: &mut Vec<Value>,
) -> Result<String, Outcome> {
    if let Some(g) = &s.group_id {
        return Ok(g.clone());
    }
    let stored = cx
        .store
        .tenant_state(&cx.tenant.name, k.group_key)
        .await
        .map_err(history)?;
    if let Some(id) = &stored {
        let req = GraphRequest::get(format!("/groups/{id}?$select=id"));
        let r = cx.call(req, calls).await.map_err(Outcome::retryable)?;
        if r.ok() {
            return Ok(id.clone());
        }
        if r.status != 404 {
            return Err(map_error(&r, "read the MFA group"));
        }
    }
    let name = group_name(k, s);
    if let Some(id) = find_ours(cx, &name, calls).await? {
        let event = cx.tenant_event(
            "mfa_group_adopted",
            json!({"group_id": id, "previous_id": stored,
                   "why": "a security group with this name is in the tenant but its id was not recorded (an interrupted run created it)"}),
        );
        cx.store
            .set_tenant_state(&cx.tenant.name, k.group_key, &id, event)
            .await
            .map_err(history)?;
        return Ok(id);
    }
    create_group(cx, k, name, stored, calls).await
}

/// A policy kept from users mode (or edited) must include the group too; its
/// listed users stay included (users and groups are OR-ed).
async fn include_group(
    cx: &Ctx<'_>,
    policy: &Value,
    gid: &str,
    calls: &mut Vec<Value>,
) -> Result<(), Outcome> {
    let groups = array_of(&policy["conditions"]["users"]["includeGroups"]);
    if groups.iter().any(|g| g.eq_ignore_ascii_case(gid)) {
        return Ok(());
    }
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
    let intent = cx.tenant_event(
        "graph_write_intent",
        json!({"request": format!("PATCH {POLICIES}/{id}"), "body": body, "why": "group mode: the policy must include the MFA group"}),
    );
    let what = "include the MFA group in the policy";
    patch_policy(cx, &id, body, vec![intent], calls, what).await?;
    Ok(())
}

/// Group mode: the users are added to the policy's group (batched with the
/// pass's other writes).
pub(super) async fn group_mode(
    cx: &Ctx<'_>,
    k: &CaKind,
    s: &MfaPolicyConfig,
    work: &mut [Work],
    idx: &[usize],
    calls: &mut Vec<Value>,
) -> Result<(), Outcome> {
    let gid = ensure_group(cx, k, s, calls).await?;
    let gid = gid.as_str();
    let exclude = excluded_users(cx, calls).await;
    let users = json!({"includeGroups": [gid], "excludeUsers": exclude, "excludeGroups": excluded_groups(cx)});
    let (policy, _) = ensure_policy(cx, k, s, users, Vec::new(), calls).await?;
    include_group(cx, &policy, gid, calls).await?;
    let Some(&first) = idx.first() else {
        return Ok(());
    };
    let members = member_ids(cx, &mut work[first].calls, gid).await?;
    let base = cx.graph_base();
    for &i in idx {
        let w = &mut work[i];
        let uid = w.action.identity_id.clone();
        if members.contains(&uid.to_ascii_lowercase()) {
            w.decide(Outcome::AlreadyDone(format!(
                "{} is already in the policy's group",
                w.action.identity_upn
            )));
        } else {
            w.snapshot = Some(Snapshot {
                mode: Some(CaMode::Group),
                group_id: Some(gid.to_string()),
                ..Snapshot::default()
            });
            // Sent with the other writes (batched), after the intent is committed.
            w.writes.push(GraphRequest::with_body(
                Method::POST,
                format!("/groups/{gid}/members/$ref"),
                json!({"@odata.id": format!("{base}/v1.0/directoryObjects/{uid}")}),
            ));
        }
    }
    Ok(())
}
