//! Live protection: reads every user an execution pass writes for (in batches)
//! and checks `[protected]` and the scan's identity against the account as the
//! tenant has it now, before anything is written for it: every action kind,
//! undo included. What each action then decides is its own module's business.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::actions::context::{Ctx, Work, call_record, map_error};
use crate::actions::handler;
use crate::actions::reads::Reads;
use crate::domain::Outcome;
use crate::graph::paging::ListingError;
use crate::graph::{Answer, GraphRequest, GraphResponse};

fn user_path(id: &str) -> String {
    format!(
        "/users/{id}?$select=id,userPrincipalName,userType,accountEnabled,signInSessionsValidFromDateTime"
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
    /// A user (keyed by id).
    User,
    /// A user's groups (keyed by user id).
    Groups,
    /// Something an action reads with its user (keyed by path).
    ForAction,
}

/// What one batch read about the users of a pass.
struct Users {
    /// Each user's answer, with its call record.
    users: BTreeMap<String, (Value, Answer)>,
    /// Each user's groups, with the calls made (when protection names groups).
    memberships: BTreeMap<String, (Vec<Value>, LiveGroups)>,
}

/// Reads the users (their groups too when protection names groups, and what
/// their actions read with them, kept in `reads`) through `$batch`.
async fn read_users(cx: &Ctx<'_>, work: &[Work], reads: &mut Reads) -> Users {
    let pending = || work.iter().filter(|w| w.outcome.is_none());
    let mut ids: Vec<String> = pending().map(|w| w.action.identity_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut extra: Vec<String> = pending()
        .filter_map(|w| w.action.remedy().map(|k| (k, &w.action.identity_id)))
        .flat_map(|(k, uid)| handler(k).user_reads(uid))
        .collect();
    extra.sort();
    extra.dedup();
    let with_groups = !cx.cfg.protected.groups.is_empty();
    // (what, key) of each request, in order.
    let mut tags: Vec<(Read, String)> = ids.iter().map(|id| (Read::User, id.clone())).collect();
    if with_groups {
        tags.extend(ids.iter().map(|id| (Read::Groups, id.clone())));
    }
    tags.extend(extra.into_iter().map(|p| (Read::ForAction, p)));
    let reqs: Vec<GraphRequest> = tags
        .iter()
        .map(|(what, key)| match what {
            Read::User => GraphRequest::get(user_path(key)),
            Read::Groups => GraphRequest::get(groups_path(key)),
            Read::ForAction => GraphRequest::get(key.clone()),
        })
        .collect();
    let answers = cx.graph.batch(reqs.clone()).await;
    let mut users = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for ((what, key), (req, ans)) in tags.into_iter().zip(reqs.iter().zip(answers)) {
        let rec = call_record(req, &ans);
        match what {
            Read::User => drop(users.insert(key, (rec, ans))),
            Read::Groups => drop(groups.insert(key, (rec, ans))),
            Read::ForAction => reads.keep(key, rec, ans),
        }
    }
    // Further pages of group memberships, read once per user.
    let mut memberships = BTreeMap::new();
    for (id, (rec, ans)) in &groups {
        let mut calls = vec![rec.clone()];
        let result = match ans {
            Ok(r) => live_groups(cx, &mut calls, r).await,
            Err(e) => Err(Outcome::retryable(format!("read the user's groups: {e}"))),
        };
        memberships.insert(id.clone(), (calls, result));
    }
    Users { users, memberships }
}

/// Checks one action's user: it exists, is not protected, and is the account
/// the scan described; then keeps the live user for the action to decide by.
fn check_one(cx: &Ctx<'_>, w: &mut Work, read: &Users) {
    let Some((rec, ans)) = read.users.get(&w.action.identity_id) else {
        return;
    };
    w.calls.push(rec.clone());
    let user = match ans {
        Ok(r) if r.ok() => r.body.clone(),
        Ok(r) if r.status == 404 => {
            return w.decide(Outcome::failed(format!(
                "user {} no longer exists in the tenant",
                w.action.identity_upn
            )));
        }
        Ok(r) => return w.decide(map_error(r, "read user")),
        Err(e) => return w.decide(Outcome::retryable(format!("read user: {e}"))),
    };
    let uid = w.action.identity_id.clone();
    let live_id = user["id"].as_str().unwrap_or(&uid).to_string();
    let upn = user["userPrincipalName"]
        .as_str()
        .unwrap_or(&w.action.identity_upn)
        .to_string();
    // Protection, against the account as the tenant has it now.
    let mut live_groups = Vec::new();
    if let Some((calls, result)) = read.memberships.get(&w.action.identity_id) {
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
