//! Live reads made ahead for many actions at once: GETs through `$batch`, and
//! one member list per group, so that deciding (or settling) a thousand actions
//! takes a few batches instead of a thousand sequential requests.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::context::{Ctx, Work, call_record, map_error};
use crate::domain::Outcome;
use crate::graph::paging::ListingError;
use crate::graph::{Answer, GraphRequest, GraphResponse};

/// A member list read ahead: the calls made, and the members (or the outcome
/// of an action that needs a list that could not be read).
type MemberList = (Vec<Value>, Result<HashSet<String>, Outcome>);

/// What the actions of a pass (or a settling chunk) ask to read ahead.
#[derive(Default)]
pub(crate) struct Ahead {
    /// GETs sent together through `$batch`.
    pub paths: Vec<String>,
    /// GETs sent one by one (Conditional Access: paced, never batched together).
    pub each: Vec<String>,
    /// Groups whose member lists are read, each with the path that must have
    /// answered well first (a group that exists and may be changed), if any.
    pub groups: Vec<(String, Option<String>)>,
}

impl Ahead {
    /// Reads everything asked for.
    pub(crate) async fn read(self, cx: &Ctx<'_>, reads: &mut Reads) {
        reads.fetch(cx, self.paths).await;
        let mut each = self.each;
        each.sort();
        each.dedup();
        reads.fetch_each(cx, each).await;
        let mut groups = self.groups;
        groups.sort_by_key(|(g, _)| g.to_ascii_lowercase());
        groups.dedup_by_key(|(g, _)| g.to_ascii_lowercase());
        let readable: Vec<String> = groups
            .into_iter()
            .filter(|(_, gate)| {
                gate.as_ref().is_none_or(|p| {
                    reads
                        .answer(p)
                        .is_some_and(|(_, a)| a.as_ref().is_ok_and(|r| r.ok()))
                })
            })
            .map(|(g, _)| g)
            .collect();
        reads.fetch_members(cx, readable).await;
    }
}

/// The live state read ahead.
#[derive(Default)]
pub(crate) struct Reads {
    /// Answers by path, with the call record for history.
    answers: HashMap<String, (Value, Answer)>,
    /// Member lists by lower-cased group id.
    members: HashMap<String, MemberList>,
    /// Users whose Global Administrator assignment a removal of this pass takes
    /// away: the live Global Administrator list read ahead still shows them.
    pub ga_leaving: HashSet<String>,
}

impl Reads {
    /// Keeps an answer read elsewhere (with the user reads of a pass).
    pub(crate) fn keep(&mut self, path: String, rec: Value, ans: Answer) {
        self.answers.insert(path, (rec, ans));
    }

    /// Reads these paths (deduplicated) through `$batch`.
    async fn fetch(&mut self, cx: &Ctx<'_>, paths: Vec<String>) {
        let mut seen = HashSet::new();
        let reqs: Vec<GraphRequest> = paths
            .into_iter()
            .filter(|p| !self.answers.contains_key(p) && seen.insert(p.clone()))
            .map(GraphRequest::get)
            .collect();
        if reqs.is_empty() {
            return;
        }
        let answers = cx.graph.batch(reqs.clone()).await;
        for (req, ans) in reqs.into_iter().zip(answers) {
            let rec = call_record(&req, &ans);
            self.answers.insert(req.path, (rec, ans));
        }
    }

    /// Reads these paths one by one, once each.
    async fn fetch_each(&mut self, cx: &Ctx<'_>, paths: Vec<String>) {
        for p in paths {
            if self.answers.contains_key(&p) {
                continue;
            }
            let req = GraphRequest::get(p);
            let ans = cx.graph.call(&req).await;
            let rec = call_record(&req, &ans);
            self.answers.insert(req.path, (rec, ans));
        }
    }

    /// Reads the member list of each of these groups once (every page).
    async fn fetch_members(&mut self, cx: &Ctx<'_>, gids: Vec<String>) {
        for gid in gids {
            let key = gid.to_ascii_lowercase();
            if self.members.contains_key(&key) {
                continue;
            }
            let mut calls = Vec::new();
            let m = member_ids(cx, &mut calls, &gid).await;
            self.members.insert(key, (calls, m));
        }
    }

    /// A GET answered ahead, with its call record.
    pub(crate) fn answer(&self, path: &str) -> Option<&(Value, Answer)> {
        self.answers.get(path)
    }
}

/// Ids of a group's members, every page: a member past the first page is
/// still a member.
pub(crate) async fn member_ids(
    cx: &Ctx<'_>,
    calls: &mut Vec<Value>,
    gid: &str,
) -> Result<HashSet<String>, Outcome> {
    let path = format!("/groups/{gid}/members?$select=id&$top=999");
    let record = |req: &GraphRequest, ans: &Answer| calls.push(call_record(req, ans));
    match cx.graph.get_all(path, 10_000, record).await {
        Ok(members) => Ok(members
            .iter()
            .filter_map(|m| m["id"].as_str())
            .map(str::to_ascii_lowercase)
            .collect()),
        Err(ListingError::Refused(r)) => Err(map_error(&r, "read group members")),
        Err(ListingError::Unanswered { request, error }) => {
            Err(Outcome::retryable(format!("{request}: {error}")))
        }
        Err(ListingError::TooManyPages) => Err(Outcome::failed(format!(
            "group {gid} has too many pages of members"
        ))),
    }
}

/// A group's members from `reads` when read ahead, else read now.
pub(crate) async fn members_of(
    cx: &Ctx<'_>,
    calls: &mut Vec<Value>,
    reads: &Reads,
    gid: &str,
) -> Result<HashSet<String>, Outcome> {
    if let Some((got, m)) = reads.members.get(&gid.to_ascii_lowercase()) {
        calls.extend(got.iter().cloned());
        return m.clone();
    }
    member_ids(cx, calls, gid).await
}

/// A GET answered from `reads` when it was read ahead, else sent now; a
/// transport failure decides the action.
pub(crate) async fn read(
    cx: &Ctx<'_>,
    w: &mut Work,
    reads: &Reads,
    path: String,
) -> Option<GraphResponse> {
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
    w.get(cx, path).await
}

/// A GET for settling: from `reads` when read ahead, else sent now; `None`
/// when it could not be read.
pub(crate) async fn peek(
    cx: &Ctx<'_>,
    calls: &mut Vec<Value>,
    reads: &Reads,
    path: String,
) -> Option<GraphResponse> {
    if let Some((rec, ans)) = reads.answer(&path) {
        calls.push(rec.clone());
        return ans.clone().ok();
    }
    cx.call(GraphRequest::get(path), calls).await.ok()
}
