//! Live protection: reads every user an execution pass writes for (in batches)
//! and checks `[protected]` and the scan's identity against the account as the
//! tenant has it now, before anything is written for it: every action kind,
//! undo included. What each action then decides is its own module's business.
//! The users are read by id, 15 per `GET /users?$filter=id in (...)` (Graph's
//! default limit of values in `in`; it needs only `User.Read.All`), sent in
//! the same `$batch` as the pass's other reads.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::actions::context::{Ctx, Work, call_record, map_error, odata_literal};
use crate::actions::handler;
use crate::actions::reads::Reads;
use crate::domain::Outcome;
use crate::graph::paging::ListingError;
use crate::graph::{Answer, GraphRequest, GraphResponse};

/// What protection and the actions decide by; `accountEnabled` is not in
/// Graph's default set for users, so every field is selected.
const USER_SELECT: &str =
    "id,userPrincipalName,userType,accountEnabled,signInSessionsValidFromDateTime";

/// Graph's default limit of values in one `in` expression of `$filter`.
const IDS_PER_READ: usize = 15;

/// Pages one read of users may follow: 15 ids fit one page, but a further
/// page Graph links to is read rather than dropped.
const USER_PAGES: usize = IDS_PER_READ + 1;

/// Reads these users (a GET: no intent, no pacing, safe to send again).
fn users_path(ids: &[String]) -> String {
    let list: Vec<String> = ids
        .iter()
        .map(|id| format!("%27{}%27", odata_literal(id)))
        .collect();
    format!(
        "/users?$filter=id%20in%20({})&$select={USER_SELECT}",
        list.join(",")
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
    /// Up to 15 users (by chunk of the sorted ids).
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
    /// Not in the tenant (any more): the filter by id did not return it.
    Gone,
    /// The read failed: the action's outcome.
    Unread(Outcome),
}

/// What one batch read about the users of a pass.
struct Users {
    /// The calls of each read of users (its pages), for history.
    records: Vec<Vec<Value>>,
    /// Each user (by lower-cased id): the read that asked for it, and what it says.
    users: HashMap<String, (usize, Live)>,
    /// Each user's groups, with the calls made (when protection names groups).
    memberships: BTreeMap<String, (Vec<Value>, LiveGroups)>,
}

/// Why a read of users failed, as the outcome of each user it asked for.
fn refused(r: &GraphResponse) -> Outcome {
    if r.status == 403 {
        return map_error(r, "read users (GET /users needs User.Read.All)");
    }
    map_error(r, "read users")
}

/// The first page of a read of users, if Graph answered it with a list.
fn first_page(ans: &Answer) -> Result<&GraphResponse, Outcome> {
    match ans {
        Ok(r) if !r.ok() => Err(refused(r)),
        Ok(r) if !r.body["value"].is_array() => Err(Outcome::retryable(
            "read user: Graph's answer to the read by id has no list of users",
        )),
        Ok(r) => Ok(r),
        Err(e) => Err(Outcome::retryable(format!("read user: {e}"))),
    }
}

/// Why a further page of a read of users could not be read.
fn listing_failure(e: ListingError) -> Outcome {
    match e {
        ListingError::Refused(page) => refused(&page),
        ListingError::Unanswered { error, .. } => Outcome::retryable(format!("read user: {error}")),
        ListingError::TooManyPages => Outcome::retryable(
            "read user: Graph linked a read of 15 users to too many further pages",
        ),
    }
}

/// Every user one read returned: the batch's page and any page it links to
/// (a link is followed, never ignored, so no user is taken for gone unread).
async fn listed_users(
    cx: &Ctx<'_>,
    calls: &mut Vec<Value>,
    ans: &Answer,
) -> Result<Vec<Value>, Outcome> {
    let first = first_page(ans)?;
    let record = |req: &GraphRequest, ans: &Answer| calls.push(call_record(req, ans));
    cx.graph
        .get_rest(first, USER_PAGES, record)
        .await
        .map_err(listing_failure)
}

/// Each of `ids` as one read tells it: a failed read fails every one of its
/// users the way a failed read of that user would; an id not returned is gone.
fn users_of(ids: &[String], listed: Result<Vec<Value>, Outcome>) -> Vec<(String, Live)> {
    let value = match listed {
        Ok(v) => v,
        Err(o) => {
            return ids
                .iter()
                .map(|id| (id.clone(), Live::Unread(o.clone())))
                .collect();
        }
    };
    let mut found: HashMap<String, Value> = value
        .into_iter()
        .filter(|u| {
            u["@odata.type"]
                .as_str()
                .is_none_or(|t| t == "#microsoft.graph.user")
        })
        .filter_map(|u| Some((u["id"].as_str()?.to_ascii_lowercase(), u)))
        .collect();
    ids.iter()
        .map(|id| match found.remove(id) {
            Some(u) => (id.clone(), Live::Found(u)),
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
    let chunks: Vec<&[String]> = ids.chunks(IDS_PER_READ).collect();
    let mut tags: Vec<Read> = (0..chunks.len()).map(Read::Users).collect();
    let mut reqs: Vec<GraphRequest> = chunks
        .iter()
        .map(|c| GraphRequest::get(users_path(c)))
        .collect();
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
        let rec = call_record(req, &ans);
        match tag {
            Read::Users(c) => {
                let mut calls = vec![rec];
                let listed = listed_users(cx, &mut calls, &ans).await;
                let k = read.records.len();
                read.records.push(calls);
                for (id, live) in users_of(chunks[c], listed) {
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
    if let Some(calls) = read.records.get(*k) {
        w.calls.extend(calls.iter().cloned());
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
    use serde_json::json;

    fn answer(status: u16, body: Value) -> Answer {
        Ok(GraphResponse {
            status,
            body,
            attempts: Vec::new(),
        })
    }

    /// (id, "found" | "gone" | the failure), per id, from one page.
    fn said(ids: &[&str], ans: &Answer) -> Vec<(String, String)> {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let listed =
            first_page(ans).map(|r| r.body["value"].as_array().cloned().unwrap_or_default());
        users_of(&ids, listed)
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
    fn the_filter_quotes_each_id_and_encodes_it() {
        let ids = ["a1".to_string(), "o'b c".to_string()];
        assert_eq!(
            users_path(&ids),
            format!("/users?$filter=id%20in%20(%27a1%27,%27o%27%27b%20c%27)&$select={USER_SELECT}")
        );
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
        let want = retryable("read user: Graph's answer to the read by id has no list of users");
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
        assert!(denied[0].1.contains("needs User.Read.All"), "{denied:?}");
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

    #[test]
    fn a_further_page_that_cannot_be_read_fails_the_users_never_drops_them() {
        let many = format!("{:?}", listing_failure(ListingError::TooManyPages));
        assert!(many.contains("retryable: true"), "{many}");
        let reset = listing_failure(ListingError::Unanswered {
            request: "GET /users".into(),
            error: crate::graph::GraphError::Transport("reset".into()),
        });
        assert!(format!("{reset:?}").contains("retryable: true"));
        let ids = vec!["aa".to_string()];
        let live = users_of(&ids, Err(Outcome::retryable("read user: reset")));
        assert!(matches!(live[0].1, Live::Unread(_)));
    }
}
