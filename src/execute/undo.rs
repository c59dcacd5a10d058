//! Deciding an undo: the done action it names, and the snapshot committed with
//! that action's intent, handed to the action's own module.

use serde_json::Value;

use crate::actions::context::{Ctx, Work};
use crate::actions::handler;
use crate::domain::{Outcome, Snapshot, WorkKind};
use crate::store::{EventRow, Filter};

/// The `snapshot` of the last write intent among an action's events, if any
/// intent was recorded (`null` when the intent kept none or is unreadable).
pub(super) fn intent_snapshot(events: &[EventRow]) -> Option<Value> {
    events
        .iter()
        .rev()
        .find(|e| e.kind == "graph_write_intent")
        .map(|e| {
            serde_json::from_str::<Value>(&e.detail)
                .map(|d| d["snapshot"].clone())
                .unwrap_or(Value::Null)
        })
}

/// Undo: rebuilds the inverse of a done action from the snapshot committed with
/// its intent.
pub(super) async fn plan_undo(cx: &Ctx<'_>, w: &mut Work) {
    let Some(orig_id) = w.action.targets.first().and_then(|t| t.parse::<i64>().ok()) else {
        return w.decide(Outcome::Refused("undo names no action".into()));
    };
    let orig = match cx.store.action(orig_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return w.decide(Outcome::Refused(format!("action {orig_id} does not exist")));
        }
        Err(e) => return w.decide(Outcome::retryable(format!("history unavailable: {e}"))),
    };
    let filter = Filter {
        action_id: Some(orig_id),
        ..Filter::default()
    };
    let events = match cx.store.events(&filter).await {
        Ok(e) => e,
        Err(e) => return w.decide(Outcome::retryable(format!("history unavailable: {e}"))),
    };
    let snapshot = intent_snapshot(&events).unwrap_or(Value::Null);
    let snapshot = match Snapshot::parse(&snapshot) {
        Ok(s) => s,
        Err(why) => return w.decide(Outcome::Refused(why)),
    };
    match orig.kind {
        WorkKind::Remedy(k) => handler(k).plan_undo(cx, w, &orig, &snapshot).await,
        WorkKind::Undo => w.decide(Outcome::Refused(
            "an undo cannot be undone; run the action again".into(),
        )),
    }
}
