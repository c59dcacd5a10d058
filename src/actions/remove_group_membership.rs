//! Remove one identity from chosen groups: refused for dynamic, mail-enabled,
//! distribution and synced groups (checked live); undone by adding it back.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::context::{Ctx, Work, map_error};
use super::reads::{Ahead, Reads, member_ids, members_of, read};
use super::{Landed, Remediation};
use crate::domain::{Action, Outcome, Snapshot};
use crate::graph::GraphRequest;
use crate::guard::{Refusal, refuse};
use crate::scan::Identity;

/// The group removal action.
pub(crate) struct RemoveGroupMembership;

fn group_path(gid: &str) -> String {
    format!(
        "/groups/{gid}?$select=id,displayName,groupTypes,mailEnabled,securityEnabled,onPremisesSyncEnabled"
    )
}

/// Why the membership of this group (as Graph has it) is not changed here.
fn refusal(g: &Value) -> Option<&'static str> {
    let dynamic = g["groupTypes"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x == "DynamicMembership"));
    if dynamic {
        Some("has dynamic membership")
    } else if g["onPremisesSyncEnabled"] == json!(true) {
        Some("is synced from on-premises AD")
    } else if g["mailEnabled"] == json!(true) && g["securityEnabled"] != json!(true) {
        Some("is a distribution group")
    } else if g["mailEnabled"] == json!(true) {
        Some("is mail-enabled")
    } else {
        None
    }
}

/// Plans the removal from one group; `None` once `w` is decided, `Some(false)`
/// when the user is not (or no longer) a member.
async fn plan_one(cx: &Ctx<'_>, w: &mut Work, reads: &Reads, gid: &str) -> Option<bool> {
    let uid = w.action.identity_id.clone();
    let g = read(cx, w, reads, group_path(gid)).await?;
    if g.status == 404 {
        return Some(false);
    }
    if !g.ok() {
        w.decide(map_error(&g, "read group"));
        return None;
    }
    if let Some(why) = refusal(&g.body) {
        let name = g.body["displayName"].as_str().unwrap_or("");
        w.decide(Outcome::Refused(format!(
            "group {name:?} ({gid}) {why} in the live tenant: its membership is not changed here"
        )));
        return None;
    }
    let members = match members_of(cx, &mut w.calls, reads, gid).await {
        Ok(m) => m,
        Err(o) => {
            w.decide(o);
            return None;
        }
    };
    if !members.contains(&uid.to_ascii_lowercase()) {
        return Some(false);
    }
    // Always `/$ref`: without it the request would delete the user object.
    w.writes.push(GraphRequest::new(
        Method::DELETE,
        format!("/groups/{gid}/members/{uid}/$ref"),
    ));
    Some(true)
}

/// Groups to leave must be groups the identity is in, neither dynamic nor synced
/// from on-premises (their membership is decided elsewhere).
fn check_group_targets(targets: &[String], id: &Identity) -> Result<(), Refusal> {
    for t in targets {
        match id.groups.iter().find(|g| g.id.0.eq_ignore_ascii_case(t)) {
            None => {
                return refuse(
                    "unknown-target",
                    format!("{} is not a member of group {t:?}", id.label()),
                );
            }
            Some(g) if g.dynamic => {
                return refuse(
                    "dynamic-group",
                    format!(
                        "group {:?} has dynamic membership: its rule would add {} back; change the rule instead",
                        g.display_name,
                        id.label()
                    ),
                );
            }
            Some(g) if g.on_premises_synced == Some(true) => {
                return refuse(
                    "synced-group",
                    format!(
                        "group {:?} is synced from on-premises AD: change its membership there",
                        g.display_name
                    ),
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[async_trait]
impl Remediation for RemoveGroupMembership {
    fn check_scan(&self, targets: &[String], id: &Identity) -> Result<(), Refusal> {
        check_group_targets(targets, id)
    }

    fn plan_reads(&self, w: &Work, ahead: &mut Ahead) {
        for g in &w.action.targets {
            ahead.paths.push(group_path(g));
            ahead.groups.push((g.clone(), Some(group_path(g))));
        }
    }

    async fn decide(&self, cx: &Ctx<'_>, work: &mut [Work], idx: &[usize], reads: &mut Reads) {
        for &i in idx {
            let w = &mut work[i];
            let mut removed = Vec::new();
            for gid in w.action.targets.clone() {
                match plan_one(cx, w, reads, &gid).await {
                    None => break,
                    Some(true) => removed.push(gid),
                    Some(false) => {}
                }
            }
            if w.outcome.is_some() {
                continue;
            }
            if w.writes.is_empty() {
                w.decide(Outcome::AlreadyDone(
                    "the user is no longer a member of these groups".into(),
                ));
            } else {
                w.snapshot = Some(Snapshot {
                    groups: Some(removed),
                    ..Snapshot::default()
                });
            }
        }
    }

    fn gone_is_done(&self) -> bool {
        true
    }

    fn done_text(&self, a: &Action) -> String {
        format!("{} removed from groups {:?}", a.identity_upn, a.targets)
    }

    async fn plan_undo(&self, cx: &Ctx<'_>, w: &mut Work, orig: &Action, s: &Snapshot) {
        let uid = &orig.identity_id;
        let base = cx.graph_base();
        for gid in s.groups.iter().flatten() {
            let members = match member_ids(cx, &mut w.calls, gid).await {
                Ok(m) => m,
                Err(o) => {
                    w.decide(o);
                    return;
                }
            };
            if !members.contains(&uid.to_ascii_lowercase()) {
                w.writes.push(GraphRequest::with_body(
                    Method::POST,
                    format!("/groups/{gid}/members/$ref"),
                    json!({"@odata.id": format!("{base}/v1.0/directoryObjects/{uid}")}),
                ));
            }
        }
        if w.writes.is_empty() {
            w.decide(Outcome::AlreadyDone(
                "the user is already back in these groups".into(),
            ));
        }
    }

    async fn settle_reads(&self, _cx: &Ctx<'_>, a: &Action, _s: &Snapshot, ahead: &mut Ahead) {
        ahead
            .groups
            .extend(a.targets.iter().map(|g| (g.clone(), None)));
    }

    async fn landed(
        &self,
        cx: &Ctx<'_>,
        a: &Action,
        _s: &Snapshot,
        calls: &mut Vec<Value>,
        reads: &Reads,
    ) -> Landed {
        let uid = a.identity_id.to_ascii_lowercase();
        let mut got = Vec::new();
        let mut still = false;
        for g in &a.targets {
            match members_of(cx, &mut got, reads, g).await {
                Ok(m) => still |= m.contains(&uid),
                Err(_) => return Landed::Unknown("a group could not be read".into()),
            }
        }
        calls.extend(got);
        if still {
            Landed::NotApplied("the user is still a member".into())
        } else {
            Landed::Applied("the user is no longer a member".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::actions::handler;
    use crate::domain::ActionKind;
    use crate::guard::test_identities::{group, guid, identity, refusal};

    #[test]
    fn removal_from_a_dynamic_group_is_refused() {
        let id = identity(
            1,
            "u@t.com",
            json!({ "groups": [group(50, "All Staff", true, false)] }),
        );
        assert_eq!(
            refusal(handler(ActionKind::RemoveGroupMembership).check_scan(&[guid(50).to_uppercase()],
                &id
            )),
            (
                "dynamic-group",
                "group \"All Staff\" has dynamic membership: its rule would add u@t.com back; change the rule instead".into()
            )
        );
    }

    #[test]
    fn removal_from_a_synced_or_unknown_group_is_refused() {
        let id = identity(
            1,
            "u@t.com",
            json!({ "groups": [group(50, "AD Admins", false, true), group(51, "Cloud", false, false)] }),
        );
        let remove = |t: String| handler(ActionKind::RemoveGroupMembership).check_scan(&[t], &id);
        assert_eq!(
            refusal(remove(guid(50))),
            (
                "synced-group",
                "group \"AD Admins\" is synced from on-premises AD: change its membership there"
                    .into()
            )
        );
        assert_eq!(
            refusal(remove(guid(52))),
            (
                "unknown-target",
                format!("u@t.com is not a member of group {:?}", guid(52))
            )
        );
        assert_eq!(remove(guid(51)), Ok(()));
    }
}
