//! Live protection: reads every user an execution pass writes for (in batches)
//! and checks `[protected]` and the scan's identity against the account as the
//! tenant has it now, before anything is written for it: every action kind,
//! undo included. What each action then decides is its own module's business.
//! The users are read by id, up to 1,000 per `getByIds` request, sent in the
//! same `$batch` as the pass's other reads.

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use serde_json::{Value, json};

use crate::actions::context::{Ctx, Work, call_record, map_error};
use crate::actions::handler;
use crate::actions::reads::Reads;
use crate::domain::Outcome;
use crate::graph::paging::ListingError;
use crate::graph::{Answer, GraphRequest, GraphResponse};

/// What protection and the actions decide by; `accountEnabled` is not in
/// getByIds' default set for users, so every field is selected.
const USER_SELECT: &str =
    "id,userPrincipalName,userType,accountEnabled,signInSessionsValidFromDateTime";

/// Graph's limit of ids in one getByIds request.
const BY_IDS_MAX: usize = 1000;

/// Reads these users (a read, safe to send again: no intent, no pacing).
fn users_request(ids: &[String]) -> GraphRequest {
    GraphRequest::with_body(
        Method::POST,
        format!("/directoryObjects/getByIds?$select={USER_SELECT}"),
        json!({"ids": ids, "types": ["user"]}),
    )
}

fn groups_path(id: &str) -> String {
    format!("/users/{id}/transitiveMemberOf?$select=id,displayName&$top=999")
}

/// A user's live groups as (id, display name), or why they could not be read.
type LiveGroups = Result<Vec<(String, String)>, Outcome>;

/// The groups a user is in (directly or nested) as (id, display name), every
/// page: the first page comes with the batch, further pages are read here.
async fn live_groups(cx: &Ctx<'_>, calls: &mut Vec<Value>, first: &GraphResponse) -> LiveGroups {
    let record = |req: &GraphRequest, ans: &Answer| calls.push(call_record(req, ans));
    let groups = match cx.graph.get_rest(first, 1_000, record).await {
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

/// What one request of the users' batch reads.
enum Read {
    /// Up to 1,000 users (by chunk of the sorted ids).
    Users(usize),
    /// A user's groups (keyed by user id).
    Groups(String),
    /// Something an action reads with its user (keyed by path).
    ForAction(String),
}

/// What the live read says of one user.
enum Live {
    /// The user as the tenant has it now.
    Found(Value),
    /// Not in the tenant (any more): getByIds left the id out.
    Gone,
    /// The read failed: the action's outcome.
    Unread(Outcome),
}

/// What one batch read about the users of a pass.
struct Users {
    /// The call record of each getByIds request, for history.
    records: Vec<Value>,
    /// Each user (by lower-cased id): the request that read it, and what it says.
    users: HashMap<String, (usize, Live)>,
    /// Each user's groups, with the calls made (when protection names groups).
    memberships: BTreeMap<String, (Vec<Value>, LiveGroups)>,
}

/// Each of `ids` as one getByIds answer tells it: a failed request fails
/// every one of its users the way a failed read of that user would.
fn users_of(ids: &[String], ans: &Answer) -> Vec<(String, Live)> {
    let fail_all = |o: Outcome| -> Vec<(String, Live)> {
        ids.iter()
            .map(|id| (id.clone(), Live::Unread(o.clone())))
            .collect()
    };
    let r = match ans {
        Ok(r) if r.ok() => r,
        Ok(r) if r.status == 403 => {
            return fail_all(map_error(
                r,
                "read users (POST /directoryObjects/getByIds needs Directory.Read.All)",
            ));
        }
        Ok(r) => return fail_all(map_error(r, "read users")),
        Err(e) => return fail_all(Outcome::retryable(format!("read user: {e}"))),
    };
    let Some(value) = r.body["value"].as_array() else {
        return fail_all(Outcome::retryable(
            "read user: Graph's answer to getByIds has no list of users",
        ));
    };
    let mut found: HashMap<String, &Value> = value
        .iter()
        .filter(|u| {
            u["@odata.type"]
                .as_str()
                .is_none_or(|t| t == "#microsoft.graph.user")
        })
        .filter_map(|u| Some((u["id"].as_str()?.to_ascii_lowercase(), u)))
        .collect();
    ids.iter()
        .map(|id| match found.remove(id) {
            Some(u) => (id.clone(), Live::Found(u.clone())),
            None => (id.clone(), Live::Gone),
        })
        .collect()
}

/// Reads the users (their groups too when protection names groups, and what
/// their actions read with them, kept in `reads`) through `$batch`.
async fn read_users(cx: &Ctx<'_>, work: &[Work], reads: &mut Reads) -> Users {
    let pending = || work.iter().filter(|w| w.outcome.is_none());
    let mut ids: Vec<String> = pending()
        .map(|w| w.action.identity_id.to_ascii_lowercase())
        .collect();
    ids.sort();
    ids.dedup();
    let mut extra: Vec<String> = pending()
        .filter_map(|w| w.action.remedy().map(|k| (k, &w.action.identity_id)))
        .flat_map(|(k, uid)| handler(k).user_reads(uid))
        .collect();
    extra.sort();
    extra.dedup();
    let chunks: Vec<&[String]> = ids.chunks(BY_IDS_MAX).collect();
    let mut tags: Vec<Read> = (0..chunks.len()).map(Read::Users).collect();
    let mut reqs: Vec<GraphRequest> = chunks.iter().map(|c| users_request(c)).collect();
    if !cx.cfg.protected.groups.is_empty() {
        for id in &ids {
            reqs.push(GraphRequest::get(groups_path(id)));
            tags.push(Read::Groups(id.clone()));
        }
    }
    for p in extra {
        reqs.push(GraphRequest::get(p.clone()));
        tags.push(Read::ForAction(p));
    }
    let answers = cx.graph.batch(reqs.clone()).await;
    let mut read = Users {
        records: Vec::new(),
        users: HashMap::new(),
        memberships: BTreeMap::new(),
    };
    let mut groups = BTreeMap::new();
    for (tag, (req, ans)) in tags.into_iter().zip(reqs.iter().zip(answers)) {
        let mut rec = call_record(req, &ans);
        match tag {
            Read::Users(c) => {
                // The ids asked are in the request's body, not in the record.
                rec["ids"] = json!(chunks[c].len());
                let k = read.records.len();
                read.records.push(rec);
                for (id, live) in users_of(chunks[c], &ans) {
                    read.users.insert(id, (k, live));
                }
            }
            Read::Groups(uid) => drop(groups.insert(uid, (rec, ans))),
            Read::ForAction(path) => reads.keep(path, rec, ans),
        }
    }
    // Further pages of group memberships, read once per user.
    for (id, (rec, ans)) in &groups {
        let mut calls = vec![rec.clone()];
        let result = match ans {
            Ok(r) => live_groups(cx, &mut calls, r).await,
            Err(e) => Err(Outcome::retryable(format!("read the user's groups: {e}"))),
        };
        read.memberships.insert(id.clone(), (calls, result));
    }
    read
}

/// Checks one action's user: it exists, is not protected, and is the account
/// the scan described; then keeps the live user for the action to decide by.
fn check_one(cx: &Ctx<'_>, w: &mut Work, read: &Users) {
    let uid = w.action.identity_id.clone();
    let Some((k, live)) = read.users.get(&uid.to_ascii_lowercase()) else {
        return;
    };
    if let Some(rec) = read.records.get(*k) {
        w.calls.push(rec.clone());
    }
    let user = match live {
        Live::Found(u) => u.clone(),
        Live::Gone => {
            return w.decide(Outcome::failed(format!(
                "user {} no longer exists in the tenant",
                w.action.identity_upn
            )));
        }
        Live::Unread(o) => return w.decide(o.clone()),
    };
    // Without these there is nothing to check protection against (Graph gives
    // only the id and type of objects the app may not read).
    let (Some(live_id), Some(upn)) = (user["id"].as_str(), user["userPrincipalName"].as_str())
    else {
        return w.decide(Outcome::failed(format!(
            "read user: Graph returned {uid} without its id and userPrincipalName, so protection cannot be checked; nothing was sent"
        )));
    };
    let (live_id, upn) = (live_id.to_string(), upn.to_string());
    // Protection, against the account as the tenant has it now.
    let mut live_groups = Vec::new();
    if let Some((calls, result)) = read.memberships.get(&uid.to_ascii_lowercase()) {
        w.calls.extend(calls.iter().cloned());
        match result {
            Ok(g) => live_groups.clone_from(g),
            Err(o) => return w.decide(o.clone()),
        }
    }
    let pairs: Vec<(&str, &str)> = live_groups
        .iter()
        .map(|(i, n)| (i.as_str(), n.as_str()))
        .collect();
    if let Err(r) = crate::guard::check_protected_account(&cx.cfg.protected, &live_id, &upn, &pairs)
    {
        return w.decide(Outcome::Refused(format!(
            "{r} in the live tenant, read just before the write; nothing was sent"
        )));
    }
    if !live_id.eq_ignore_ascii_case(&uid) || !upn.eq_ignore_ascii_case(&w.action.identity_upn) {
        return w.decide(Outcome::Refused(format!(
            "live-mismatch: the scan named object {uid} {:?}, the live tenant has {live_id} {upn:?}; nothing is written for an account the scan does not describe (a newer scan will)",
            w.action.identity_upn
        )));
    }
    w.live_user = Some(user);
}

/// Reads every user that actions of this pass write for, in batches, and
/// checks protection and identity against the live account before anything
/// is written for it. Reads the actions asked for with their user go to `reads`.
pub(super) async fn check_users(cx: &Ctx<'_>, work: &mut [Work], reads: &mut Reads) {
    let read = read_users(cx, work, reads).await;
    for w in work.iter_mut().filter(|w| w.outcome.is_none()) {
        check_one(cx, w, &read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Value) -> Answer {
        Ok(GraphResponse {
            status,
            body,
            attempts: Vec::new(),
        })
    }

    /// (id, "found" | "gone" | the failure), per id.
    fn said(ids: &[&str], ans: &Answer) -> Vec<(String, String)> {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        users_of(&ids, ans)
            .into_iter()
            .map(|(id, live)| {
                let s = match live {
                    Live::Found(u) => format!("found {}", u["userPrincipalName"]),
                    Live::Gone => "gone".into(),
                    Live::Unread(o) => format!("{o:?}"),
                };
                (id, s)
            })
            .collect()
    }

    #[test]
    fn users_are_matched_by_id_and_anything_else_is_gone() {
        let ans = answer(
            200,
            json!({"value": [
                {"@odata.type": "#microsoft.graph.user", "id": "AA", "userPrincipalName": "a@t"},
                {"@odata.type": "#microsoft.graph.group", "id": "bb"},
                {"id": "cc", "userPrincipalName": "c@t"},
            ]}),
        );
        assert_eq!(
            said(&["aa", "bb", "cc", "dd"], &ans),
            vec![
                ("aa".to_string(), "found \"a@t\"".to_string()),
                ("bb".into(), "gone".into()),
                ("cc".into(), "found \"c@t\"".into()),
                ("dd".into(), "gone".into()),
            ]
        );
    }

    #[test]
    fn a_failed_or_malformed_answer_fails_every_user_it_read() {
        let retryable = |why: &str| format!("{:?}", Outcome::retryable(why));
        let no_list = said(&["aa", "bb"], &answer(200, json!({})));
        let want = retryable("read user: Graph's answer to getByIds has no list of users");
        assert_eq!(
            no_list,
            vec![("aa".to_string(), want.clone()), ("bb".into(), want)]
        );
        let denied = said(
            &["aa"],
            &answer(
                403,
                json!({"error": {"code": "Authorization_RequestDenied", "message": "no"}}),
            ),
        );
        assert!(
            denied[0].1.contains("needs Directory.Read.All"),
            "{denied:?}"
        );
        assert!(denied[0].1.contains("retryable: false"), "{denied:?}");
        let unanswered = said(
            &["aa"],
            &Err(crate::graph::GraphError::Transport("reset".into())),
        );
        assert!(
            unanswered[0].1.contains("retryable: true"),
            "{unanswered:?}"
        );
    }
}
