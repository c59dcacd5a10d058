//! Verification: the hash chain recomputed, approval rows checked against the
//! events that record them, current states against history, and checkpoints.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::chain::{GENESIS, event_hash, keyed_event_hash};
use super::checkpoint::Checkpoint;
use super::key::{HistoryKey, KEYED_EVENT, marker_of};
use super::records::{ApprovalRow, EventRow};
use super::{Store, StoreError, ts};

/// What `audit verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: i64,
    /// Approval rows checked against the chain.
    pub approvals: i64,
    /// The seq of the `history_keyed` event, when the chain is keyed.
    pub keyed_from: Option<i64>,
    /// The head of the chain, to keep as a checkpoint.
    pub head: Option<Checkpoint>,
    /// Every problem found; empty when history is intact.
    pub problems: Vec<String>,
}

/// The seq of the first `history_keyed` event and the key id it names.
fn keyed_from(events: &[EventRow]) -> Option<(i64, String)> {
    marker_of(
        events
            .iter()
            .find(|e| e.kind == KEYED_EVENT)
            .map(|e| (e.seq, e.detail.clone())),
    )
}

/// The problem with an approval row as the chain records it, if any: its event
/// must exist, be about the same action, by the same approver, at the same time,
/// with the same decision, comment, interface and operating-system user.
pub(crate) fn approval_problem(ap: &ApprovalRow, ev: Option<&EventRow>) -> Option<String> {
    let who = format!(
        "approval row ({} of action {} by {:?})",
        ap.decision, ap.action_id, ap.approver
    );
    let Some(seq) = ap.event_seq else {
        return Some(format!(
            "{who}: names no history event: it is not in the hash chain (inserted behind the store's back)"
        ));
    };
    let Some(ev) = ev else {
        return Some(format!("{who}: its event {seq} does not exist"));
    };
    // The decision's detail starts with the JSON object the store wrote.
    let detail: Option<serde_json::Value> = serde_json::Deserializer::from_str(&ev.detail)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok);
    let matches = ev.action_id == Some(ap.action_id)
        && ev.actor == ap.approver
        && ev.at == ap.at
        && matches!(ev.kind.as_str(), "state_changed" | "approval_recorded")
        && detail.as_ref().is_some_and(|d| {
            d["decision"].as_str() == Some(ap.decision.as_str())
                && d["comment"].as_str() == ap.comment.as_deref()
                && d["interface"].as_str() == ap.interface.as_deref()
                && d["os_user"].as_str() == ap.os_user.as_deref()
        });
    (!matches).then(|| format!("{who}: does not match its event {seq}"))
}

/// Checks the hash chain (keyed from the `history_keyed` event on), that every
/// approval row is recorded in it, and that each action's state is the last one
/// history recorded for it; the same check for every backend. `now` dates the
/// head checkpoint.
pub fn verify_history(
    events: &[EventRow],
    actions: &[(i64, String)],
    approvals: &[ApprovalRow],
    key: Option<&HistoryKey>,
    now: DateTime<Utc>,
) -> VerifyReport {
    let keyed = keyed_from(events);
    let mut problems = key_problems(keyed.as_ref(), key, events.is_empty());
    let last_state = chain_problems(events, keyed.as_ref().map(|(s, _)| *s), key, &mut problems);
    for (id, state) in actions {
        match last_state.get(id) {
            Some(s) if s == state => {}
            Some(s) => problems.push(format!(
                "action {id}: state is {state} but history last recorded {s}"
            )),
            None => problems.push(format!("action {id}: has no history events")),
        }
    }
    approval_problems(events, approvals, &mut problems);
    VerifyReport {
        events: events.len() as i64,
        approvals: approvals.len() as i64,
        keyed_from: keyed.map(|(s, _)| s),
        head: events.last().map(|e| Checkpoint {
            seq: e.seq,
            hash: e.hash.clone(),
            events: events.len() as i64,
            at: ts(now),
        }),
        problems,
    }
}

/// What is wrong between the chain's `history_keyed` marker and the configured key.
fn key_problems(
    keyed: Option<&(i64, String)>,
    key: Option<&HistoryKey>,
    no_events: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    match (keyed, key) {
        (Some((seq, _)), None) => problems.push(format!(
            "the history is keyed from event {seq} on but no key is configured, or its key file is missing ([store] history_key_file or history_key_credential): those events cannot be checked"
        )),
        (Some((seq, id)), Some(k)) if *id != k.id() => problems.push(format!(
            "the history is keyed from event {seq} on with key id {id}, but the configured key has id {}: wrong key, or the chain was rewritten",
            k.id()
        )),
        (None, Some(_)) if !no_events => problems.push(
            "a history key is configured but no event is keyed: this store was never written with the key, or its chain was recomputed without it (a writing command such as `run` starts keying an existing store)".to_string(),
        ),
        _ => {}
    }
    problems
}

/// Walks the chain (missing events, broken links, edited content); returns the
/// last state history recorded for each action.
fn chain_problems(
    events: &[EventRow],
    keyed_from: Option<i64>,
    key: Option<&HistoryKey>,
    problems: &mut Vec<String>,
) -> std::collections::HashMap<i64, String> {
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 1;
    let mut last_state = std::collections::HashMap::new();
    for e in events {
        if e.seq != expect_seq {
            problems.push(format!(
                "event {}: expected event {expect_seq} here: events are missing",
                e.seq
            ));
        }
        expect_seq = e.seq + 1;
        if e.prev_hash != prev {
            problems.push(format!(
                "event {}: prev_hash does not match the previous event's hash",
                e.seq
            ));
        }
        let is_keyed = keyed_from.is_some_and(|k| e.seq >= k);
        let expected = match (is_keyed, key) {
            (false, _) => Some(event_hash(e.seq, &e.at, &e.content(), &e.prev_hash)),
            (true, Some(k)) => Some(keyed_event_hash(
                k,
                e.seq,
                &e.at,
                &e.content(),
                &e.prev_hash,
            )),
            (true, None) => None,
        };
        if expected.is_some_and(|h| h != e.hash) {
            problems.push(format!(
                "event {}: content does not match its {} (edited)",
                e.seq,
                if is_keyed { "HMAC" } else { "hash" }
            ));
        }
        prev = e.hash.clone();
        if let (Some(a), Some(s)) = (e.action_id, &e.state) {
            last_state.insert(a, s.clone());
        }
    }
    last_state
}

/// Every approval row must be recorded by its own event.
fn approval_problems(events: &[EventRow], approvals: &[ApprovalRow], problems: &mut Vec<String>) {
    let by_seq: std::collections::HashMap<i64, &EventRow> =
        events.iter().map(|e| (e.seq, e)).collect();
    let mut used = std::collections::HashSet::new();
    for ap in approvals {
        let ev = ap.event_seq.and_then(|s| by_seq.get(&s).copied());
        if let Some(p) = approval_problem(ap, ev) {
            problems.push(p);
        } else if let Some(seq) = ap.event_seq
            && !used.insert(seq)
        {
            problems.push(format!(
                "approval row ({} of action {} by {:?}): event {seq} already records another approval row (duplicated)",
                ap.decision, ap.action_id, ap.approver
            ));
        }
    }
}

/// Compares the history with checkpoints kept apart from it: each checkpoint's
/// event must still be there with the same hash, and the history no shorter.
pub async fn check_checkpoints(
    store: &dyn Store,
    report: &VerifyReport,
    checkpoints: &[Checkpoint],
) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    for cp in checkpoints {
        let what = format!("checkpoint (event {}, taken {})", cp.seq, cp.at);
        match store.event_hash_at(cp.seq).await? {
            None => problems.push(format!(
                "{what}: the history has no event {} (truncated or rewritten)",
                cp.seq
            )),
            Some(h) if h != cp.hash => problems.push(format!(
                "{what}: event {} has hash {h}, the checkpoint says {} (rewritten)",
                cp.seq, cp.hash
            )),
            Some(_) if report.events < cp.events => problems.push(format!(
                "{what}: the history has {} events, the checkpoint {} (truncated)",
                report.events, cp.events
            )),
            Some(_) => {}
        }
    }
    Ok(problems)
}

/// True when an approval row is recorded in the chain as it should be: its event
/// matches it and the event's own hash (HMAC from `keyed_from` on) is right.
/// Only such approvals count towards four eyes.
pub(crate) fn approval_in_chain(
    ap: &ApprovalRow,
    ev: Option<&EventRow>,
    key: Option<&HistoryKey>,
    keyed_from: Option<i64>,
) -> bool {
    if approval_problem(ap, ev).is_some() {
        return false;
    }
    let Some(ev) = ev else { return false };
    let keyed = keyed_from.is_some_and(|k| ev.seq >= k);
    let expected = match (keyed, key) {
        (false, _) => event_hash(ev.seq, &ev.at, &ev.content(), &ev.prev_hash),
        (true, Some(k)) => keyed_event_hash(k, ev.seq, &ev.at, &ev.content(), &ev.prev_hash),
        (true, None) => return false,
    };
    expected == ev.hash
}
