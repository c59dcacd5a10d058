//! Live state: reads Graph before deciding, so guardrails hold against the
//! tenant as it is now, not only as the scan saw it, and re-runs write nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Timelike, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Executor, Outcome, Work, call_record, map_error};
use crate::domain::{Action, ActionKind, WorkKind};
use crate::graph::paging::ListingError;
use crate::graph::{Answer, GraphRequest};
use crate::scan::GLOBAL_ADMIN_TEMPLATE;
use crate::store::Filter;

/// `$filter=field eq 'value'`, encoded for a `$batch` URL or a direct call.
pub(crate) fn filter_eq(field: &str, value: &str) -> String {
    format!("$filter={field}%20eq%20%27{value}%27")
}

fn user_path(id: &str) -> String {
    format!(
        "/users/{id}?$select=id,userPrincipalName,userType,accountEnabled,signInSessionsValidFromDateTime"
    )
}

fn groups_path(id: &str) -> String {
    format!("/users/{id}/transitiveMemberOf?$select=id,displayName&$top=999")
}

/// When the user's sessions were last revoked (`signInSessionsValidFromDateTime`).
pub(crate) fn sessions_valid_from(user: &Value) -> Option<DateTime<Utc>> {
    user["signInSessionsValidFromDateTime"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Whether sessions were revoked at or after `since` (the scan the action comes
/// from): Graph gives whole seconds, so `since` is compared to the second.
pub(crate) fn revoked_since(user: &Value, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let from = sessions_valid_from(user)?;
    let since = since.with_nanosecond(0).unwrap_or(since);
    (from >= since).then_some(from)
}

/// What a revoke of this action is measured from: the `scanned_at` of the scan
/// that asked for it (sessions revoked since then include those the scan saw).
pub(crate) async fn revoke_reference(
    ex: &Executor<'_>,
    a: &Action,
) -> Result<DateTime<Utc>, String> {
    match ex.store.run_scanned_at(&a.run_id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Ok(a.created_at),
        Err(e) => Err(format!("history unavailable: {e}")),
    }
}

/// A user's live groups as (id, display name), or why they could not be read.
type LiveGroups = Result<Vec<(String, String)>, Outcome>;

/// The groups a user is in (directly or nested) as (id, display name), every
/// page: the first page comes with the batch, further pages are read here.
async fn live_groups(
    ex: &Executor<'_>,
    calls: &mut Vec<Value>,
    first: &crate::graph::GraphResponse,
) -> LiveGroups {
    let record = |req: &GraphRequest, ans: &Answer| calls.push(call_record(req, ans));
    let groups = match ex.graph.get_rest(first, 1_000, record).await {
        Ok(groups) => groups,
        Err(ListingError::Refused(page)) => {
            return Err(map_error(&page, "read the user's groups"));
        }
        Err(ListingError::Unanswered { error, .. }) => {
            return Err(Outcome::retryable(format!(
                "read the user's groups: {error}"
            )));
        }
        Err(ListingError::TooManyPages) => {
            return Err(Outcome::failed(
                "the user is in too many pages of groups to check protection",
            ));
        }
    };
    Ok(groups
        .iter()
        .filter(|g| {
            g["@odata.type"]
                .as_str()
                .is_none_or(|t| t == "#microsoft.graph.group")
        })
        .map(|g| {
            (
                g["id"].as_str().unwrap_or("").to_string(),
                g["displayName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Reads every user that actions of this pass write for, in batches, and
/// checks `[protected]` (ids, UPNs, groups) against the live account before
/// anything is written for it: every action kind, undo included. Then decides
/// disable, revoke and phishing-resistant MFA against live state.
pub(crate) async fn check_users(ex: &Executor<'_>, work: &mut [Work]) {
    let needs =
        |w: &Work| w.outcome.is_none() && (w.kind.is_some() || w.action.kind == WorkKind::Undo);
    let mut ids: Vec<String> = work
        .iter()
        .filter(|w| needs(w))
        .map(|w| w.action.identity_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    let with_groups = !ex.cfg.protected.groups.is_empty();
    let pr_ids: Vec<String> = {
        let mut v: Vec<String> = work
            .iter()
            .filter(|w| needs(w) && w.kind == Some(ActionKind::EnforcePhishingResistantMfa))
            .map(|w| w.action.identity_id.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    // (what, user id) of each request, in order.
    let mut tags: Vec<(u8, String)> = ids.iter().map(|id| (0, id.clone())).collect();
    if with_groups {
        tags.extend(ids.iter().map(|id| (1, id.clone())));
    }
    tags.extend(pr_ids.iter().map(|id| (2, id.clone())));
    let reqs: Vec<GraphRequest> = tags
        .iter()
        .map(|(what, id)| match what {
            0 => GraphRequest::get(user_path(id)),
            1 => GraphRequest::get(groups_path(id)),
            _ => GraphRequest::get(format!(
                "/roleManagement/directory/roleAssignments?{}",
                filter_eq("principalId", id)
            )),
        })
        .collect();
    let answers = ex.graph.batch(reqs.clone()).await;
    let mut users = BTreeMap::new();
    let mut groups = BTreeMap::new();
    let mut roles = BTreeMap::new();
    for ((what, id), (req, ans)) in tags.into_iter().zip(reqs.iter().zip(answers)) {
        let rec = call_record(req, &ans);
        match what {
            0 => users.insert(id, (rec, ans)),
            1 => groups.insert(id, (rec, ans)),
            _ => roles.insert(id, (rec, ans)),
        };
    }
    // Further pages of group memberships, read once per user.
    let mut memberships: BTreeMap<String, (Vec<Value>, LiveGroups)> = BTreeMap::new();
    for (id, (rec, ans)) in &groups {
        let mut calls = vec![rec.clone()];
        let result = match ans {
            Ok(r) => live_groups(ex, &mut calls, r).await,
            Err(e) => Err(Outcome::retryable(format!("read the user's groups: {e}"))),
        };
        memberships.insert(id.clone(), (calls, result));
    }
    // Revokes are measured from the scan that asked for them.
    let mut references: BTreeMap<String, Result<DateTime<Utc>, String>> = BTreeMap::new();
    for w in work
        .iter()
        .filter(|w| needs(w) && w.kind == Some(ActionKind::RevokeSessions))
    {
        if !references.contains_key(&w.action.run_id) {
            let r = revoke_reference(ex, &w.action).await;
            references.insert(w.action.run_id.clone(), r);
        }
    }
    for w in work.iter_mut().filter(|w| needs(w)) {
        let Some((rec, ans)) = users.get(&w.action.identity_id) else {
            continue;
        };
        w.calls.push(rec.clone());
        let user = match ans {
            Ok(r) if r.ok() => r.body.clone(),
            Ok(r) if r.status == 404 => {
                w.decide(Outcome::failed(format!(
                    "user {} no longer exists in the tenant",
                    w.action.identity_upn
                )));
                continue;
            }
            Ok(r) => {
                w.decide(map_error(r, "read user"));
                continue;
            }
            Err(e) => {
                w.decide(Outcome::retryable(format!("read user: {e}")));
                continue;
            }
        };
        let uid = w.action.identity_id.clone();
        let live_id = user["id"].as_str().unwrap_or(&uid).to_string();
        let upn = user["userPrincipalName"]
            .as_str()
            .unwrap_or(&w.action.identity_upn)
            .to_string();
        // Protection, against the account as the tenant has it now.
        let mut live_groups = Vec::new();
        if let Some((calls, result)) = memberships.get(&w.action.identity_id) {
            w.calls.extend(calls.iter().cloned());
            match result {
                Ok(g) => live_groups.clone_from(g),
                Err(o) => {
                    w.decide(o.clone());
                    continue;
                }
            }
        }
        let pairs: Vec<(&str, &str)> = live_groups
            .iter()
            .map(|(i, n)| (i.as_str(), n.as_str()))
            .collect();
        if let Err(r) =
            crate::guard::check_protected_account(&ex.cfg.protected, &live_id, &upn, &pairs)
        {
            w.decide(Outcome::Refused(format!(
                "{r} in the live tenant, read just before the write; nothing was sent"
            )));
            continue;
        }
        if !live_id.eq_ignore_ascii_case(&uid) || !upn.eq_ignore_ascii_case(&w.action.identity_upn)
        {
            w.decide(Outcome::Refused(format!(
                "live-mismatch: the scan named object {uid} {:?}, the live tenant has {live_id} {upn:?}; nothing is written for an account the scan does not describe (a newer scan will)",
                w.action.identity_upn
            )));
            continue;
        }
        let guest = user["userType"].as_str() == Some("Guest") || upn.contains("#EXT#");
        match w.kind {
            Some(ActionKind::DisableUser) => {
                if user["accountEnabled"] == json!(false) {
                    w.decide(Outcome::AlreadyDone(format!("{upn} is already disabled")));
                } else {
                    w.snapshot = Some(json!({"accountEnabled": true}));
                    w.writes.push(GraphRequest::with_body(
                        Method::PATCH,
                        format!("/users/{uid}"),
                        json!({"accountEnabled": false}),
                    ));
                }
            }
            Some(ActionKind::RevokeSessions) => {
                let since = references
                    .get(&w.action.run_id)
                    .cloned()
                    .unwrap_or_else(|| Err("no scan time for this action".to_string()));
                if guest {
                    w.decide(Outcome::Refused(format!(
                        "{upn} is a guest in the live tenant: sessions are never revoked for guests"
                    )));
                } else {
                    match since {
                        Err(e) => w.decide(Outcome::retryable(e)),
                        Ok(since) => {
                            if let Some(at) = revoked_since(&user, since) {
                                w.decide(Outcome::AlreadyDone(format!(
                                    "sessions of {upn} were already revoked at {} (signInSessionsValidFromDateTime), not before the scan of {}; nothing sent",
                                    crate::store::ts(at),
                                    crate::store::ts(since)
                                )));
                            } else {
                                w.writes.push(GraphRequest::new(
                                    Method::POST,
                                    format!("/users/{uid}/revokeSignInSessions"),
                                ));
                            }
                        }
                    }
                }
            }
            Some(ActionKind::EnforcePhishingResistantMfa) => {
                let Some((rec, ans)) = roles.get(&uid) else {
                    continue;
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
                            w.decide(Outcome::Refused(format!(
                                "{upn} holds no active Global Administrator assignment in the live tenant; phishing-resistant MFA is for Global Administrators only"
                            )));
                        }
                    }
                    Ok(r) => w.decide(map_error(r, "read role assignments")),
                    Err(e) => w.decide(Outcome::retryable(format!("read role assignments: {e}"))),
                }
            }
            _ => {}
        }
    }
}

/// A member list read ahead: the calls made, and the members (or the outcome
/// of an action that needs a list that could not be read).
type MemberList = (Vec<Value>, Result<HashSet<String>, Outcome>);

/// Live reads made ahead for many actions at once: GETs through `$batch`, and
/// one member list per group, so that deciding (or settling) a thousand actions
/// takes a few batches instead of a thousand sequential requests.
#[derive(Default)]
pub(crate) struct Reads {
    /// Answers by path, with the call record for history.
    answers: HashMap<String, (Value, Answer)>,
    /// Member lists by lower-cased group id: the calls made, and the members
    /// (or the outcome of an action that needs an unreadable list).
    members: HashMap<String, MemberList>,
    /// Users whose Global Administrator assignment a removal of this pass takes
    /// away: the live Global Administrator list read ahead still shows them.
    ga_leaving: HashSet<String>,
}

impl Reads {
    /// Reads these paths (deduplicated) through `$batch`.
    pub(crate) async fn fetch(&mut self, ex: &Executor<'_>, paths: Vec<String>) {
        let mut seen = HashSet::new();
        let reqs: Vec<GraphRequest> = paths
            .into_iter()
            .filter(|p| !self.answers.contains_key(p) && seen.insert(p.clone()))
            .map(GraphRequest::get)
            .collect();
        if reqs.is_empty() {
            return;
        }
        let answers = ex.graph.batch(reqs.clone()).await;
        for (req, ans) in reqs.into_iter().zip(answers) {
            let rec = call_record(&req, &ans);
            self.answers.insert(req.path, (rec, ans));
        }
    }

    /// Reads these paths one by one (Conditional Access: paced, never batched
    /// together), once each.
    pub(crate) async fn fetch_each(&mut self, ex: &Executor<'_>, paths: Vec<String>) {
        for p in paths {
            if self.answers.contains_key(&p) {
                continue;
            }
            let req = GraphRequest::get(p);
            let ans = ex.graph.call(&req).await;
            let rec = call_record(&req, &ans);
            self.answers.insert(req.path, (rec, ans));
        }
    }

    /// Reads the member list of each of these groups once (every page).
    pub(crate) async fn fetch_members(
        &mut self,
        ex: &Executor<'_>,
        template: &Action,
        gids: Vec<String>,
    ) {
        for gid in gids {
            let key = gid.to_ascii_lowercase();
            if self.members.contains_key(&key) {
                continue;
            }
            let mut w = Work::new(template.clone());
            let m = member_ids(ex, &mut w, &gid).await;
            let m = m.ok_or_else(|| {
                w.outcome
                    .clone()
                    .unwrap_or(Outcome::retryable("read group members"))
            });
            self.members.insert(key, (w.calls, m));
        }
    }

    /// A GET answered ahead, with its call record.
    pub(crate) fn answer(&self, path: &str) -> Option<&(Value, Answer)> {
        self.answers.get(path)
    }

    /// A member list read ahead.
    pub(crate) fn members(&self, gid: &str) -> Option<&MemberList> {
        self.members.get(&gid.to_ascii_lowercase())
    }
}

/// A GET answered from `reads` when it was read ahead, else sent now.
async fn read(
    ex: &Executor<'_>,
    w: &mut Work,
    reads: &Reads,
    path: String,
) -> Option<crate::graph::GraphResponse> {
    if let Some((rec, ans)) = reads.answer(&path) {
        w.calls.push(rec.clone());
        return match ans {
            Ok(r) => Some(r.clone()),
            Err(e) => {
                w.decide(Outcome::retryable(format!("GET {path}: {e}")));
                None
            }
        };
    }
    get(ex, w, path).await
}

/// A group's members from `reads` when read ahead, else read now.
pub(crate) async fn members_of(
    ex: &Executor<'_>,
    w: &mut Work,
    reads: &Reads,
    gid: &str,
) -> Option<HashSet<String>> {
    if let Some((calls, m)) = reads.members(gid) {
        w.calls.extend(calls.iter().cloned());
        return match m {
            Ok(m) => Some(m.clone()),
            Err(o) => {
                w.decide(o.clone());
                None
            }
        };
    }
    member_ids(ex, w, gid).await
}

fn assignment_path(aid: &str) -> String {
    format!("/roleManagement/directory/roleAssignments/{aid}")
}

fn instances_path(uid: &str) -> String {
    format!(
        "/roleManagement/directory/roleAssignmentScheduleInstances?{}",
        filter_eq("principalId", uid)
    )
}

fn global_admins_path() -> String {
    format!(
        "/roleManagement/directory/roleAssignments?{}",
        filter_eq("roleDefinitionId", GLOBAL_ADMIN_TEMPLATE)
    )
}

fn group_path(gid: &str) -> String {
    format!(
        "/groups/{gid}?$select=id,displayName,groupTypes,mailEnabled,securityEnabled,onPremisesSyncEnabled"
    )
}

/// Reads ahead, in batches, what the role and group removals of this pass need:
/// every assignment, each user's PIM schedule instances, the Global
/// Administrators once, every group once and each group's members once.
pub(crate) async fn prefetch_removals(ex: &Executor<'_>, work: &[Work]) -> Reads {
    let mut reads = Reads::default();
    let mut paths = Vec::new();
    let mut groups = Vec::new();
    let mut template = None;
    for w in work.iter().filter(|w| w.outcome.is_none()) {
        match w.kind {
            Some(ActionKind::RemoveRoleAssignment) => {
                paths.extend(w.targets.iter().map(|t| assignment_path(t)));
                paths.push(instances_path(&w.action.identity_id));
                paths.push(global_admins_path());
            }
            Some(ActionKind::RemoveGroupMembership) => {
                paths.extend(w.targets.iter().map(|g| group_path(g)));
                groups.extend(w.targets.iter().cloned());
                template.get_or_insert_with(|| w.action.clone());
            }
            _ => {}
        }
    }
    reads.fetch(ex, paths).await;
    // Member lists only of groups that exist and whose membership we may change.
    groups.sort_by_key(|g| g.to_ascii_lowercase());
    groups.dedup_by_key(|g| g.to_ascii_lowercase());
    let readable: Vec<String> = groups
        .into_iter()
        .filter(|g| {
            reads
                .answer(&group_path(g))
                .is_some_and(|(_, a)| a.as_ref().is_ok_and(|r| r.ok()))
        })
        .collect();
    if let Some(t) = template {
        reads.fetch_members(ex, &t, readable).await;
    }
    reads
}

async fn get(ex: &Executor<'_>, w: &mut Work, path: String) -> Option<crate::graph::GraphResponse> {
    let req = GraphRequest::get(path);
    let ans = ex.graph.call(&req).await;
    w.calls.push(call_record(&req, &ans));
    match ans {
        Ok(r) => Some(r),
        Err(e) => {
            w.decide(Outcome::retryable(format!("{}: {e}", req.describe())));
            None
        }
    }
}

/// A removed role assignment as kept in the intent's snapshot, so that undo can
/// restore the same kind: direct, or PIM (assigned or activated) with its expiry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RemovedAssignment {
    /// The assignment's id.
    pub id: String,
    /// The user.
    pub principal_id: String,
    /// The role.
    pub role_definition_id: String,
    /// The scope.
    pub directory_scope_id: String,
    /// Managed by PIM (removed with an `adminRemove` schedule request).
    #[serde(default)]
    pub pim: bool,
    /// PIM: `Assigned` (by an administrator) or `Activated` (from an eligibility).
    #[serde(default)]
    pub assignment_type: Option<String>,
    /// PIM: when the schedule started.
    #[serde(default)]
    pub start_date_time: Option<String>,
    /// PIM: when it ends; `None` for no expiration.
    #[serde(default)]
    pub end_date_time: Option<String>,
}

/// How a removed assignment is restored, or why it is not.
fn restore_assignment(
    a: &RemovedAssignment,
    orig_id: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<GraphRequest, String> {
    if !a.pim {
        return Ok(GraphRequest::with_body(
            Method::POST,
            "/roleManagement/directory/roleAssignments",
            json!({
                "principalId": a.principal_id,
                "roleDefinitionId": a.role_definition_id,
                "directoryScopeId": a.directory_scope_id,
            }),
        ));
    }
    match a.assignment_type.as_deref() {
        Some("Assigned") => {}
        Some("Activated") => {
            return Err(format!(
                "role assignment {} was the user's own PIM activation of an eligible assignment: an activation cannot be made on the user's behalf, and the eligibility was not removed, so the user can activate it again",
                a.id
            ));
        }
        _ => {
            return Err(format!(
                "role assignment {} was managed by PIM but its schedule was not recorded (removed by an earlier version): re-create it in PIM with the expiry it had",
                a.id
            ));
        }
    }
    let expiration = match &a.end_date_time {
        None => json!({"type": "noExpiration"}),
        Some(end) => {
            let at = chrono::DateTime::parse_from_rfc3339(end).map_err(|_| {
                format!("role assignment {} has an unreadable expiry {end:?}", a.id)
            })?;
            if at <= now {
                return Err(format!(
                    "role assignment {} was a PIM assignment that expired at {end}: restoring it would grant more than was removed",
                    a.id
                ));
            }
            json!({"type": "afterDateTime", "endDateTime": end})
        }
    };
    Ok(GraphRequest::with_body(
        Method::POST,
        "/roleManagement/directory/roleAssignmentScheduleRequests",
        json!({
            "action": "adminAssign",
            "principalId": a.principal_id,
            "roleDefinitionId": a.role_definition_id,
            "directoryScopeId": a.directory_scope_id,
            "justification": format!("entra-remediator: undo of action {orig_id}"),
            "scheduleInfo": {
                "startDateTime": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "expiration": expiration,
            },
        }),
    ))
}

/// Role removal: the assignment must exist, be the user's own (not through a
/// group), not be the last active Global Administrator; PIM-managed assignments
/// are removed with an `adminRemove` schedule request.
pub(crate) async fn plan_role_removal(ex: &Executor<'_>, w: &mut Work, reads: &mut Reads) {
    let uid = w.action.identity_id.clone();
    let mut snapshot = Vec::new();
    for aid in w.targets.clone() {
        let Some(r) = read(ex, w, reads, assignment_path(&aid)).await else {
            return;
        };
        if r.status == 404 {
            continue;
        }
        if !r.ok() {
            w.decide(map_error(&r, "read role assignment"));
            return;
        }
        let principal = r.body["principalId"].as_str().unwrap_or("").to_string();
        let def = r.body["roleDefinitionId"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let scope = r.body["directoryScopeId"]
            .as_str()
            .unwrap_or("/")
            .to_string();
        if !principal.eq_ignore_ascii_case(&uid) {
            let name = match get(ex, w, format!("/groups/{principal}?$select=id,displayName")).await
            {
                Some(g) if g.ok() => g.body["displayName"].as_str().unwrap_or("").to_string(),
                _ => String::new(),
            };
            w.decide(Outcome::Refused(format!(
                "role assignment {aid} comes through group {name:?} ({principal}), not a direct assignment: remove the user from that group or change the group's role instead"
            )));
            return;
        }
        if def.eq_ignore_ascii_case(GLOBAL_ADMIN_TEMPLATE) {
            let Some(all) = read(ex, w, reads, global_admins_path()).await else {
                return;
            };
            if !all.ok() {
                w.decide(map_error(&all, "read Global Administrator assignments"));
                return;
            }
            let others: HashSet<String> = all.body["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["principalId"].as_str())
                .filter(|p| !p.eq_ignore_ascii_case(&uid))
                .map(str::to_ascii_lowercase)
                .filter(|p| !reads.ga_leaving.contains(p))
                .collect();
            if others.is_empty() {
                w.decide(Outcome::Refused(format!(
                    "{} is the last active Global Administrator in the live tenant",
                    w.action.identity_upn
                )));
                return;
            }
            reads.ga_leaving.insert(uid.to_ascii_lowercase());
        }
        let Some(inst) = read(ex, w, reads, instances_path(&uid)).await else {
            return;
        };
        let instance = inst
            .ok()
            .then(|| {
                inst.body["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| {
                        i["roleAssignmentOriginId"].as_str() == Some(aid.as_str())
                            || (i["roleDefinitionId"].as_str() == Some(def.as_str())
                                && i["directoryScopeId"].as_str() == Some(scope.as_str())
                                && i["assignmentType"].as_str() == Some("Assigned"))
                    })
                    .cloned()
            })
            .flatten();
        let pim = instance.is_some();
        if pim {
            w.writes.push(GraphRequest::with_body(
                Method::POST,
                "/roleManagement/directory/roleAssignmentScheduleRequests",
                json!({
                    "action": "adminRemove",
                    "principalId": uid,
                    "roleDefinitionId": def,
                    "directoryScopeId": scope,
                    "justification": format!("entra-remediator action {}", w.action.id),
                }),
            ));
        } else {
            w.writes.push(GraphRequest::new(
                Method::DELETE,
                format!("/roleManagement/directory/roleAssignments/{aid}"),
            ));
        }
        // What undo needs to restore the same kind of assignment: for a PIM one,
        // how it came to be (assigned or activated) and its schedule.
        let removed = RemovedAssignment {
            id: aid.clone(),
            principal_id: uid.clone(),
            role_definition_id: def.clone(),
            directory_scope_id: scope.clone(),
            pim,
            assignment_type: instance
                .as_ref()
                .and_then(|i| i["assignmentType"].as_str().map(str::to_string)),
            start_date_time: instance
                .as_ref()
                .and_then(|i| i["startDateTime"].as_str().map(str::to_string)),
            end_date_time: instance
                .as_ref()
                .and_then(|i| i["endDateTime"].as_str().map(str::to_string)),
        };
        snapshot.push(serde_json::to_value(&removed).unwrap_or(Value::Null));
    }
    if w.writes.is_empty() {
        w.decide(Outcome::AlreadyDone(
            "the role assignments are already gone".into(),
        ));
    } else {
        w.snapshot = Some(json!({"assignments": snapshot}));
    }
}

/// Ids of a group's members, every page: a member past the first page is
/// still a member.
pub(crate) async fn member_ids(
    ex: &Executor<'_>,
    w: &mut Work,
    gid: &str,
) -> Option<HashSet<String>> {
    let path = format!("/groups/{gid}/members?$select=id&$top=999");
    let calls = &mut w.calls;
    let record = |req: &GraphRequest, ans: &Answer| calls.push(call_record(req, ans));
    match ex.graph.get_all(path, 10_000, record).await {
        Ok(members) => Some(
            members
                .iter()
                .filter_map(|m| m["id"].as_str())
                .map(str::to_ascii_lowercase)
                .collect(),
        ),
        Err(ListingError::Refused(r)) => {
            w.decide(map_error(&r, "read group members"));
            None
        }
        Err(ListingError::Unanswered { request, error }) => {
            w.decide(Outcome::retryable(format!("{request}: {error}")));
            None
        }
        Err(ListingError::TooManyPages) => {
            w.decide(Outcome::failed(format!(
                "group {gid} has too many pages of members"
            )));
            None
        }
    }
}

/// Group removal: refused for dynamic, mail-enabled, distribution and synced
/// groups (checked live); a member already gone is already done.
pub(crate) async fn plan_group_removal(ex: &Executor<'_>, w: &mut Work, reads: &Reads) {
    let uid = w.action.identity_id.clone();
    let mut removed = Vec::new();
    for gid in w.targets.clone() {
        let Some(g) = read(ex, w, reads, group_path(&gid)).await else {
            return;
        };
        if g.status == 404 {
            continue;
        }
        if !g.ok() {
            w.decide(map_error(&g, "read group"));
            return;
        }
        let name = g.body["displayName"].as_str().unwrap_or("").to_string();
        let dynamic = g.body["groupTypes"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == "DynamicMembership"));
        let refuse = if dynamic {
            Some("has dynamic membership")
        } else if g.body["onPremisesSyncEnabled"] == json!(true) {
            Some("is synced from on-premises AD")
        } else if g.body["mailEnabled"] == json!(true) && g.body["securityEnabled"] != json!(true) {
            Some("is a distribution group")
        } else if g.body["mailEnabled"] == json!(true) {
            Some("is mail-enabled")
        } else {
            None
        };
        if let Some(why) = refuse {
            w.decide(Outcome::Refused(format!(
                "group {name:?} ({gid}) {why} in the live tenant: its membership is not changed here"
            )));
            return;
        }
        let Some(members) = members_of(ex, w, reads, &gid).await else {
            return;
        };
        if !members.contains(&uid.to_ascii_lowercase()) {
            continue;
        }
        // Always `/$ref`: without it the request would delete the user object.
        w.writes.push(GraphRequest::new(
            Method::DELETE,
            format!("/groups/{gid}/members/{uid}/$ref"),
        ));
        removed.push(gid);
    }
    if w.writes.is_empty() {
        w.decide(Outcome::AlreadyDone(
            "the user is no longer a member of these groups".into(),
        ));
    } else {
        w.snapshot = Some(json!({"groups": removed}));
    }
}

/// Whether a 404 on a write means the goal is already reached.
pub(crate) fn gone_is_done(w: &Work) -> bool {
    matches!(
        w.kind,
        Some(ActionKind::RemoveRoleAssignment | ActionKind::RemoveGroupMembership)
    )
}

/// What a successful action did, for history.
pub(crate) fn done_text(w: &Work) -> String {
    let upn = &w.action.identity_upn;
    match w.kind {
        Some(ActionKind::DisableUser) => format!("{upn} disabled"),
        Some(ActionKind::RevokeSessions) => format!("sessions of {upn} revoked"),
        Some(ActionKind::EnforceMfa) => format!("{upn} is under the MFA policy"),
        Some(ActionKind::EnforcePhishingResistantMfa) => {
            format!("{upn} is under the phishing-resistant MFA policy")
        }
        Some(ActionKind::RemoveRoleAssignment) => {
            format!("role assignments {:?} of {upn} removed", w.targets)
        }
        Some(ActionKind::RemoveGroupMembership) => {
            format!("{upn} removed from groups {:?}", w.targets)
        }
        None => format!(
            "undo of action {} done",
            w.targets.first().map_or("?", String::as_str)
        ),
    }
}

/// Undo: rebuilds the inverse of a done action from the snapshot committed with
/// its intent.
pub(crate) async fn plan_undo(ex: &Executor<'_>, w: &mut Work) {
    let Some(orig_id) = w.targets.first().and_then(|t| t.parse::<i64>().ok()) else {
        w.decide(Outcome::Refused("undo names no action".into()));
        return;
    };
    let orig = match ex.store.action(orig_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            w.decide(Outcome::Refused(format!("action {orig_id} does not exist")));
            return;
        }
        Err(e) => {
            w.decide(Outcome::retryable(format!("history unavailable: {e}")));
            return;
        }
    };
    let events = match ex
        .store
        .events(&Filter {
            action_id: Some(orig_id),
            ..Filter::default()
        })
        .await
    {
        Ok(e) => e,
        Err(e) => {
            w.decide(Outcome::retryable(format!("history unavailable: {e}")));
            return;
        }
    };
    let snapshot: Value = events
        .iter()
        .rev()
        .find(|e| e.kind == "graph_write_intent")
        .and_then(|e| serde_json::from_str::<Value>(&e.detail).ok())
        .map(|d| d["snapshot"].clone())
        .unwrap_or(Value::Null);
    let uid = orig.identity_id.clone();
    let graph_base = ex
        .tenant
        .graph
        .as_ref()
        .map(|g| g.graph_url())
        .unwrap_or_default();
    match orig.remedy() {
        Some(ActionKind::RevokeSessions) => {
            w.decide(Outcome::Refused(
                "revoking sessions cannot be undone".into(),
            ));
        }
        Some(ActionKind::DisableUser) => {
            // Re-enabled meanwhile (by a person, or by another undo): nothing to write.
            let Some(r) = get(ex, w, format!("/users/{uid}?$select=id,accountEnabled")).await
            else {
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
            w.snapshot = Some(json!({"undo_of": orig_id}));
            w.writes.push(GraphRequest::with_body(
                Method::PATCH,
                format!("/users/{uid}"),
                json!({"accountEnabled": true}),
            ));
        }
        Some(ActionKind::RemoveGroupMembership) => {
            for g in snapshot["groups"].as_array().cloned().unwrap_or_default() {
                let Some(gid) = g.as_str() else { continue };
                let Some(members) = member_ids(ex, w, gid).await else {
                    return;
                };
                if !members.contains(&uid.to_ascii_lowercase()) {
                    w.writes.push(GraphRequest::with_body(
                        Method::POST,
                        format!("/groups/{gid}/members/$ref"),
                        json!({"@odata.id": format!("{graph_base}/v1.0/directoryObjects/{uid}")}),
                    ));
                }
            }
            if w.writes.is_empty() {
                w.decide(Outcome::AlreadyDone(
                    "the user is already back in these groups".into(),
                ));
            }
        }
        Some(ActionKind::RemoveRoleAssignment) => {
            let now = chrono::Utc::now();
            let mut refusals = Vec::new();
            for a in snapshot["assignments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let restored = serde_json::from_value::<RemovedAssignment>(a)
                    .map_err(|e| format!("its snapshot is unreadable: {e}"))
                    .and_then(|a| restore_assignment(&a, orig_id, now));
                match restored {
                    Ok(req) => w.writes.push(req),
                    Err(why) => refusals.push(why),
                }
            }
            // All or nothing: a partial restore would be a new state nobody chose.
            if !refusals.is_empty() {
                w.writes.clear();
                w.decide(Outcome::Refused(refusals.join("; ")));
                return;
            }
            if w.writes.is_empty() {
                w.decide(Outcome::Refused(format!(
                    "action {orig_id} kept no snapshot to undo"
                )));
            }
        }
        Some(ActionKind::EnforceMfa | ActionKind::EnforcePhishingResistantMfa) => {
            super::ca::plan_undo(ex, w, &orig, &snapshot).await;
        }
        None => w.decide(Outcome::Refused(
            "an undo cannot be undone; run the action again".into(),
        )),
    }
}
