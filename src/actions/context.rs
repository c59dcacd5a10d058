//! What every action works with: the tenant it acts in (Graph, store, config),
//! one action being executed (`Work`), and the mapping of Graph answers.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{Config, TenantConfig};
use crate::domain::{Action, ActionState, Outcome, Snapshot};
use crate::graph::{GraphClient, GraphError, GraphRequest, GraphResponse};
use crate::store::{NewEvent, Store};

/// The tenant an execution pass acts in, and who acts.
pub struct Ctx<'a> {
    /// The whole configuration (protected identities).
    pub(crate) cfg: &'a Config,
    /// The tenant.
    pub(crate) tenant: &'a TenantConfig,
    /// History and the tenant's kept ids.
    pub(crate) store: &'a dyn Store,
    /// Graph for this tenant.
    pub(crate) graph: Arc<GraphClient>,
    /// Who acts, for history.
    pub(crate) actor: String,
}

impl Ctx<'_> {
    /// An event about action `a`, recorded while it is executing.
    pub(crate) fn event(&self, kind: &str, a: &Action, detail: Value) -> NewEvent {
        NewEvent {
            tenant: Some(self.tenant.name.clone()),
            run_id: Some(a.run_id.clone()),
            action_id: Some(a.id),
            identity_id: Some(a.identity_id.clone()),
            action_kind: Some(a.kind.to_string()),
            rule: None,
            kind: kind.into(),
            actor: self.actor.clone(),
            state: Some(ActionState::Executing.to_string()),
            detail: detail.to_string(),
        }
    }

    /// An event about the tenant (a policy or group created or adopted).
    pub(crate) fn tenant_event(&self, kind: &str, detail: Value) -> NewEvent {
        NewEvent {
            tenant: Some(self.tenant.name.clone()),
            kind: kind.into(),
            actor: self.actor.clone(),
            detail: detail.to_string(),
            ..NewEvent::default()
        }
    }

    /// The Graph base URL of the tenant (for `@odata.id` references).
    pub(crate) fn graph_base(&self) -> String {
        self.tenant
            .graph
            .as_ref()
            .map(|g| g.graph_url())
            .unwrap_or_default()
    }

    /// One GET, recorded in `calls`; a transport failure is retryable.
    pub(crate) async fn call(
        &self,
        req: GraphRequest,
        calls: &mut Vec<Value>,
    ) -> Result<GraphResponse, String> {
        let ans = self.graph.call(&req).await;
        calls.push(call_record(&req, &ans));
        ans.map_err(|e| format!("{}: {e}", req.describe()))
    }
}

/// One action being executed.
pub(crate) struct Work {
    /// The action, as claimed.
    pub action: Action,
    /// Calls made so far, for history.
    pub calls: Vec<Value>,
    /// The user as the live tenant has it, once read and found unprotected.
    pub live_user: Option<Value>,
    /// Writes to send, when live state says so.
    pub writes: Vec<GraphRequest>,
    /// What undo needs, committed with the intent.
    pub snapshot: Option<Snapshot>,
    /// Set once decided.
    pub outcome: Option<Outcome>,
    /// Which execution attempt this is: 1 + the retryable failures before it.
    pub attempt: u32,
}

impl Work {
    /// A claimed action, not yet decided.
    pub(crate) fn new(action: Action) -> Work {
        Work {
            action,
            calls: Vec::new(),
            live_user: None,
            writes: Vec::new(),
            snapshot: None,
            outcome: None,
            attempt: 1,
        }
    }

    /// Decides the outcome, unless one was decided already.
    pub(crate) fn decide(&mut self, o: Outcome) {
        if self.outcome.is_none() {
            self.outcome = Some(o);
        }
    }

    /// The UPN as the live tenant has it (else as the scan had it).
    pub(crate) fn live_upn(&self) -> String {
        self.live_user
            .as_ref()
            .and_then(|u| u["userPrincipalName"].as_str())
            .unwrap_or(&self.action.identity_upn)
            .to_string()
    }

    /// One GET sent now, recorded; a transport failure decides the action.
    pub(crate) async fn get(&mut self, cx: &Ctx<'_>, path: String) -> Option<GraphResponse> {
        let req = GraphRequest::get(path);
        let ans = cx.graph.call(&req).await;
        self.calls.push(call_record(&req, &ans));
        match ans {
            Ok(r) => Some(r),
            Err(e) => {
                self.decide(Outcome::retryable(format!("{}: {e}", req.describe())));
                None
            }
        }
    }
}

/// Maps a final Graph answer to an outcome, from status and error code only.
pub fn map_error(resp: &GraphResponse, what: &str) -> Outcome {
    let code = resp.error_code().unwrap_or("");
    let msg = resp.error_message();
    match resp.status {
        403 => Outcome::failed(format!(
            "{what}: forbidden ({code}); the app lacks the permission or directory role for this (acting on administrators needs the Privileged Authentication Administrator role): {msg}"
        )),
        404 => Outcome::failed(format!("{what}: not found ({code})")),
        429 | 500 | 502 | 503 | 504 => Outcome::retryable(format!(
            "{what}: Graph still unavailable or throttling after retries: {msg}"
        )),
        401 => Outcome::retryable(format!("{what}: authentication refused ({code})")),
        _ => Outcome::failed(format!("{what}: {msg}")),
    }
}

/// A record of one Graph call, for history.
pub(crate) fn call_record(req: &GraphRequest, resp: &Result<GraphResponse, GraphError>) -> Value {
    match resp {
        Ok(r) => json!({
            "request": req.describe(),
            "status": r.status,
            "code": r.error_code(),
            "attempts": r.attempts,
        }),
        Err(e) => json!({"request": req.describe(), "error": e.to_string()}),
    }
}

/// Percent-encodes a `$filter` literal (quotes doubled, as OData wants).
pub(crate) fn odata_literal(v: &str) -> String {
    let mut out = String::new();
    for b in v.replace('\'', "''").bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `$filter=field eq 'value'`, encoded for a `$batch` URL or a direct call.
pub(crate) fn filter_eq(field: &str, value: &str) -> String {
    format!("$filter={field}%20eq%20%27{value}%27")
}
