//! Remove chosen active role assignments of one identity: only the user's own
//! (not through a group), never the last active Global Administrator; PIM-managed
//! assignments are removed with an `adminRemove` schedule request. Undone by
//! restoring the same kind of assignment from the snapshot.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Ctx, Work, filter_eq, map_error};
use super::reads::{Ahead, Reads, peek, read};
use super::{Landed, Remediation};
use crate::domain::{Action, Outcome, RemovedAssignment, Snapshot};
use crate::graph::{GraphRequest, GraphResponse};
use crate::guard::{Refusal, refuse};
use crate::scan::{AssignmentType, GLOBAL_ADMIN_TEMPLATE, Identity};

/// The role removal action.
pub(crate) struct RemoveRoleAssignment;

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

fn text(v: &Value, default: &str) -> String {
    v.as_str().unwrap_or(default).to_string()
}

/// Refuses an assignment that comes through a group (naming the group).
async fn refuse_through_group(cx: &Ctx<'_>, w: &mut Work, aid: &str, principal: &str) {
    let path = format!("/groups/{principal}?$select=id,displayName");
    let name = match w.get(cx, path).await {
        Some(g) if g.ok() => text(&g.body["displayName"], ""),
        _ => String::new(),
    };
    w.decide(Outcome::Refused(format!(
        "role assignment {aid} comes through group {name:?} ({principal}), not a direct assignment: remove the user from that group or change the group's role instead"
    )));
}

/// Whether another active Global Administrator stays in the live tenant; `None`
/// once `w` is decided.
async fn others_stay(cx: &Ctx<'_>, w: &mut Work, reads: &mut Reads) -> Option<()> {
    let uid = w.action.identity_id.clone();
    let all = read(cx, w, reads, global_admins_path()).await?;
    if !all.ok() {
        w.decide(map_error(&all, "read Global Administrator assignments"));
        return None;
    }
    let others = all.body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["principalId"].as_str())
        .filter(|p| !p.eq_ignore_ascii_case(&uid))
        .map(str::to_ascii_lowercase)
        .any(|p| !reads.ga_leaving.contains(&p));
    if !others {
        w.decide(Outcome::Refused(format!(
            "{} is the last active Global Administrator in the live tenant",
            w.action.identity_upn
        )));
        return None;
    }
    reads.ga_leaving.insert(uid.to_ascii_lowercase());
    Some(())
}

/// The PIM schedule instance behind assignment `aid`, if PIM manages it.
fn pim_instance(inst: &GraphResponse, aid: &str, def: &str, scope: &str) -> Option<Value> {
    if !inst.ok() {
        return None;
    }
    inst.body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i["roleAssignmentOriginId"].as_str() == Some(aid)
                || (i["roleDefinitionId"].as_str() == Some(def)
                    && i["directoryScopeId"].as_str() == Some(scope)
                    && i["assignmentType"].as_str() == Some("Assigned"))
        })
        .cloned()
}

/// The write that removes `a` (a PIM schedule request or a DELETE).
fn removal(a: &RemovedAssignment, action_id: i64) -> GraphRequest {
    if a.pim {
        GraphRequest::with_body(
            Method::POST,
            "/roleManagement/directory/roleAssignmentScheduleRequests",
            json!({
                "action": "adminRemove",
                "principalId": a.principal_id,
                "roleDefinitionId": a.role_definition_id,
                "directoryScopeId": a.directory_scope_id,
                "justification": format!("entra-remediator action {action_id}"),
            }),
        )
    } else {
        GraphRequest::new(Method::DELETE, assignment_path(&a.id))
    }
}

/// Plans the removal of one assignment; `None` once `w` is decided, `Some(None)`
/// when it is already gone.
async fn plan_one(
    cx: &Ctx<'_>,
    w: &mut Work,
    reads: &mut Reads,
    aid: &str,
) -> Option<Option<RemovedAssignment>> {
    let uid = w.action.identity_id.clone();
    let r = read(cx, w, reads, assignment_path(aid)).await?;
    if r.status == 404 {
        return Some(None);
    }
    if !r.ok() {
        w.decide(map_error(&r, "read role assignment"));
        return None;
    }
    let principal = text(&r.body["principalId"], "");
    let def = text(&r.body["roleDefinitionId"], "");
    let scope = text(&r.body["directoryScopeId"], "/");
    if !principal.eq_ignore_ascii_case(&uid) {
        refuse_through_group(cx, w, aid, &principal).await;
        return None;
    }
    if def.eq_ignore_ascii_case(GLOBAL_ADMIN_TEMPLATE) {
        others_stay(cx, w, reads).await?;
    }
    let inst = read(cx, w, reads, instances_path(&uid)).await?;
    let instance = pim_instance(&inst, aid, &def, &scope);
    let field = |f: &str| {
        instance
            .as_ref()
            .and_then(|i| i[f].as_str().map(str::to_string))
    };
    // What undo needs to restore the same kind of assignment: for a PIM one,
    // how it came to be (assigned or activated) and its schedule.
    Some(Some(RemovedAssignment {
        id: aid.to_string(),
        principal_id: uid.clone(),
        role_definition_id: def.clone(),
        directory_scope_id: scope.clone(),
        pim: instance.is_some(),
        assignment_type: field("assignmentType"),
        start_date_time: field("startDateTime"),
        end_date_time: field("endDateTime"),
    }))
}

/// Role removal of one action: every target checked, then written together.
async fn plan(cx: &Ctx<'_>, w: &mut Work, reads: &mut Reads) {
    let mut removed = Vec::new();
    for aid in w.action.targets.clone() {
        let Some(one) = plan_one(cx, w, reads, &aid).await else {
            return;
        };
        if let Some(a) = one {
            w.writes.push(removal(&a, w.action.id));
            removed.push(a);
        }
    }
    if w.writes.is_empty() {
        w.decide(Outcome::AlreadyDone(
            "the role assignments are already gone".into(),
        ));
    } else {
        w.snapshot = Some(Snapshot {
            assignments: Some(removed),
            ..Snapshot::default()
        });
    }
}

/// How a PIM assignment is restored with the expiry it had, or why it is not.
fn pim_expiration(a: &RemovedAssignment, now: DateTime<Utc>) -> Result<Value, String> {
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
    let Some(end) = &a.end_date_time else {
        return Ok(json!({"type": "noExpiration"}));
    };
    let at = DateTime::parse_from_rfc3339(end)
        .map_err(|_| format!("role assignment {} has an unreadable expiry {end:?}", a.id))?;
    if at <= now {
        return Err(format!(
            "role assignment {} was a PIM assignment that expired at {end}: restoring it would grant more than was removed",
            a.id
        ));
    }
    Ok(json!({"type": "afterDateTime", "endDateTime": end}))
}

/// How a removed assignment is restored, or why it is not.
fn restore_assignment(
    a: &RemovedAssignment,
    orig_id: i64,
    now: DateTime<Utc>,
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
    let expiration = pim_expiration(a, now)?;
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

/// Role assignments to remove must be active assignments the identity holds.
fn check_role_targets(targets: &[String], id: &Identity) -> Result<(), Refusal> {
    for t in targets {
        match id.roles.iter().find(|r| &r.assignment_id == t) {
            None => {
                return refuse(
                    "unknown-target",
                    format!("{} has no role assignment {t:?}", id.label()),
                );
            }
            Some(r) if r.assignment_type != AssignmentType::Active => {
                return refuse(
                    "unknown-target",
                    format!(
                        "role assignment {t:?} ({}) of {} is eligible, not active",
                        r.role_name,
                        id.label()
                    ),
                );
            }
            Some(r) if r.via_group.is_some() => {
                return refuse(
                    "role-via-group",
                    format!(
                        "role assignment {t:?} ({}) of {} is held through group {}: removing it would strip every member of the group; remove the membership instead",
                        r.role_name,
                        id.label(),
                        r.via_group.as_ref().map_or("", |g| g.as_str())
                    ),
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[async_trait]
impl Remediation for RemoveRoleAssignment {
    fn check_scan(&self, targets: &[String], id: &Identity) -> Result<(), Refusal> {
        check_role_targets(targets, id)
    }

    fn removes_global_admin(&self, targets: &[String], id: &Identity) -> bool {
        // Removing these assignments leaves no other active GA assignment.
        !id.roles.iter().any(|r| {
            r.assignment_type == AssignmentType::Active
                && r.role_definition_id
                    .0
                    .eq_ignore_ascii_case(GLOBAL_ADMIN_TEMPLATE)
                && !targets.contains(&r.assignment_id)
        })
    }

    fn plan_reads(&self, w: &Work, ahead: &mut Ahead) {
        ahead
            .paths
            .extend(w.action.targets.iter().map(|t| assignment_path(t)));
        ahead.paths.push(instances_path(&w.action.identity_id));
        ahead.paths.push(global_admins_path());
    }

    async fn decide(&self, cx: &Ctx<'_>, work: &mut [Work], idx: &[usize], reads: &mut Reads) {
        for &i in idx {
            plan(cx, &mut work[i], reads).await;
        }
    }

    fn gone_is_done(&self) -> bool {
        true
    }

    fn done_text(&self, a: &Action) -> String {
        format!(
            "role assignments {:?} of {} removed",
            a.targets, a.identity_upn
        )
    }

    async fn plan_undo(&self, _cx: &Ctx<'_>, w: &mut Work, orig: &Action, s: &Snapshot) {
        let now = Utc::now();
        let mut refusals = Vec::new();
        for a in s.assignments.iter().flatten() {
            match restore_assignment(a, orig.id, now) {
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
                "action {} kept no snapshot to undo",
                orig.id
            )));
        }
    }

    async fn settle_reads(&self, _cx: &Ctx<'_>, a: &Action, _s: &Snapshot, ahead: &mut Ahead) {
        ahead
            .paths
            .extend(a.targets.iter().map(|t| assignment_path(t)));
    }

    async fn landed(
        &self,
        cx: &Ctx<'_>,
        a: &Action,
        _s: &Snapshot,
        calls: &mut Vec<Value>,
        reads: &Reads,
    ) -> Landed {
        let mut all_gone = true;
        for t in &a.targets {
            match peek(cx, calls, reads, assignment_path(t)).await {
                Some(r) if r.status == 404 => {}
                Some(r) if r.ok() => all_gone = false,
                _ => return Landed::Unknown("a role assignment could not be read".into()),
            }
        }
        if all_gone {
            Landed::Applied("the role assignments are gone".into())
        } else {
            Landed::NotApplied("a role assignment is still there".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::actions::handler;
    use crate::actions::tests::check_last_admin;
    use crate::domain::ActionKind;
    use crate::guard::LastAdmin;
    use crate::guard::test_identities::{identity, identity_json, refusal, role, scan_of};

    #[test]
    fn only_active_role_assignments_the_identity_holds_are_removed() {
        let id = identity(
            1,
            "u@t.com",
            json!({ "roles": [role("act", GLOBAL_ADMIN_TEMPLATE, "active"), role("elig", GLOBAL_ADMIN_TEMPLATE, "eligible")] }),
        );
        let remove =
            |t: &str| handler(ActionKind::RemoveRoleAssignment).check_scan(&[t.into()], &id);
        assert_eq!(
            refusal(remove("elig")),
            (
                "unknown-target",
                "role assignment \"elig\" (Global Administrator) of u@t.com is eligible, not active"
                    .into()
            )
        );
        assert_eq!(
            refusal(remove("nope")),
            (
                "unknown-target",
                "u@t.com has no role assignment \"nope\"".into()
            )
        );
        assert_eq!(remove("act"), Ok(()));
    }

    #[test]
    fn a_role_held_through_a_group_is_never_removed_from_the_group() {
        let mut through = role("grp-asg", GLOBAL_ADMIN_TEMPLATE, "active");
        through["via_group"] = json!("00000000-0000-0000-0000-00000000a001");
        let id = identity(1, "u@t.com", json!({ "roles": [through] }));
        let (guard, why) =
            refusal(handler(ActionKind::RemoveRoleAssignment).check_scan(&["grp-asg".into()], &id));
        assert_eq!(guard, "role-via-group");
        assert!(
            why.contains("held through group 00000000-0000-0000-0000-00000000a001")
                && why.contains("remove the membership instead"),
            "{why}"
        );
    }

    #[test]
    fn removing_one_of_two_global_administrator_assignments_keeps_the_admin() {
        let both = identity_json(
            1,
            "a@t.com",
            json!({ "roles": [role("x", GLOBAL_ADMIN_TEMPLATE, "active"), role("y", GLOBAL_ADMIN_TEMPLATE, "active")] }),
        );
        let scan = scan_of(vec![both]);
        let mut last = LastAdmin::new(&scan);
        let id = &scan.identities[0];
        assert_eq!(
            check_last_admin(
                &mut last,
                0,
                id,
                ActionKind::RemoveRoleAssignment,
                &["x".into()]
            ),
            Ok(())
        );
        assert_eq!(
            refusal(check_last_admin(
                &mut last,
                0,
                id,
                ActionKind::RemoveRoleAssignment,
                &["x".into(), "y".into()]
            ))
            .0,
            "last-global-admin"
        );
    }
}
