//! The approval routes: list pending actions, show one, approve or reject one,
//! approve a whole run. Each parses its input, calls the use case and answers
//! with JSON; approved actions are handed to the daemon for prompt execution.

use std::collections::BTreeSet;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::body::JsonBody;
use super::caller::{refuse_typed_name, require, typed_name};
use super::error::{ApiError, ApiResult};
use super::{ApiState, DaemonRequest, Shared};
use crate::access::{Caller, Role};
use crate::approval::{ApprovalError, ApprovalPolicy, Decision, check_approver};
use crate::domain::{Action, ActionState};
use crate::output::{action_json, detail_json};
use crate::service::approvals::{self, DecisionRequest};
use crate::service::run_decision::{self, RunDecisionError};
use crate::service::{actions, show};

/// The action id of a route, or a 400 naming what is wrong with it.
fn path_id(p: Result<Path<i64>, PathRejection>) -> ApiResult<i64> {
    p.map(|Path(id)| id).map_err(|e| {
        ApiError::bad_request(
            "invalid_id",
            format!("the action id must be a whole number: {}", e.body_text()),
        )
    })
}

/// The query of `GET /v1/approvals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    tenant: Option<String>,
    run: Option<String>,
}

/// `GET /v1/approvals`: the pending actions, of one tenant or run when asked.
pub(super) async fn list_approvals(
    State(s): State<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    // The daemon expires approvals on a timer; one overdue since its last tick
    // is expired now (a write), so a read never lists it as pending.
    let rows = actions::pending(
        s.api.store.as_ref(),
        q.tenant.filter(|t| !t.is_empty()),
        q.run.filter(|r| !r.is_empty()),
        Utc::now(),
    )
    .await?;
    let actions: Vec<Value> = rows.iter().map(action_json).collect();
    Ok(axum::Json(json!({ "actions": actions })))
}

/// `GET /v1/actions/{id}`: one action with its approvals and history.
pub(super) async fn show_action(
    State(s): State<Shared>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(id)?;
    let detail = show::show(s.api.store.as_ref(), id, Utc::now())
        .await?
        .ok_or(ApprovalError::UnknownId(id))?;
    Ok(axum::Json(detail_json(&detail)))
}

/// The body of an approval or rejection: why. Who decides is the calling
/// token; a `"by"` is refused, never recorded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecideBody {
    #[serde(default, deserialize_with = "typed_name")]
    by: Option<()>,
    #[serde(default)]
    comment: Option<String>,
}

impl DecideBody {
    /// The comment, once the caller may decide and the body typed no name.
    fn checked(self, caller: &Caller) -> ApiResult<Option<String>> {
        require(caller, Role::Approver, "approve or reject actions")?;
        refuse_typed_name(self.by)?;
        Ok(self.comment)
    }
}

/// Asks the daemon to execute the tenants whose actions just became approved.
/// A full queue is fine: the periodic executor picks them up anyway.
fn request_execution(s: &ApiState, rows: &[Action]) {
    let tenants: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.state == ActionState::Approved)
        .map(|r| r.tenant.as_str())
        .collect();
    for tenant in tenants {
        let req = DaemonRequest::Execute {
            tenant: tenant.to_string(),
        };
        match s.requests.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => tracing::debug!(
                tenant,
                "execution request not queued (queue full); the periodic executor will run it"
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => tracing::warn!(
                tenant,
                "execution request not queued: the daemon is shutting down"
            ),
        }
    }
}

async fn decide_one(
    s: &Shared,
    caller: &Caller,
    id: i64,
    body: DecideBody,
    decision: Decision,
) -> ApiResult<axum::Json<Value>> {
    let comment = body.checked(caller)?;
    let cfg = s.api.config();
    let policy = ApprovalPolicy::from(&cfg.approvals);
    let now = Utc::now();
    let store = s.api.store.as_ref();
    actions::expire_overdue(store, now).await?;
    let req = DecisionRequest {
        ids: vec![id],
        decision,
        by: caller.name.clone(),
        comment,
        bulk: false,
        now,
        origin: caller.origin(),
    };
    let rows = approvals::decide(store, &req, &policy).await?;
    request_execution(&s.api, &rows);
    let row = rows.into_iter().next().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            format!("action {id} was decided but could not be read back"),
        )
    })?;
    tracing::info!(
        action = id,
        decision = decision.as_str(),
        by = %req.by,
        state = %row.state,
        "action decided through the API"
    );
    Ok(axum::Json(action_json(&row)))
}

/// `POST /v1/actions/{id}/approve`.
pub(super) async fn approve_action(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(body): JsonBody<DecideBody>,
) -> ApiResult<axum::Json<Value>> {
    decide_one(&s, &caller, path_id(id)?, body, Decision::Approve).await
}

/// `POST /v1/actions/{id}/reject`.
pub(super) async fn reject_action(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(body): JsonBody<DecideBody>,
) -> ApiResult<axum::Json<Value>> {
    decide_one(&s, &caller, path_id(id)?, body, Decision::Reject).await
}

impl From<RunDecisionError> for ApiError {
    fn from(e: RunDecisionError) -> Self {
        match e {
            RunDecisionError::Store(e) => e.into(),
            RunDecisionError::UnknownRun(_) => ApiError::not_found(e.to_string()),
            RunDecisionError::NothingToDecide { .. } => {
                ApiError::new(StatusCode::CONFLICT, "nothing_to_decide", e.to_string())
            }
        }
    }
}

/// `POST /v1/runs/{run_id}/approve`: approves every pending action of the run
/// that may be approved in bulk and lists the single-identity ones it skipped.
pub(super) async fn approve_run(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    run: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<DecideBody>,
) -> ApiResult<axum::Json<RunApproved>> {
    let comment = body.checked(&caller)?;
    let Path(run) = run.map_err(|e| ApiError::bad_request("invalid_run", e.body_text()))?;
    let cfg = s.api.config();
    let policy = ApprovalPolicy::from(&cfg.approvals);
    let now = Utc::now();
    let store = s.api.store.as_ref();
    let by = caller.name.clone();
    // Refuse a wrong approver before revealing anything about the run.
    check_approver(&policy, &by)?;
    let selection = run_decision::select(store, &run, Decision::Approve, now).await?;
    let skipped: Vec<Value> = selection
        .skipped
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "action": p.kind,
                "identity_upn": p.identity_upn,
                "reason": "single-identity actions must be approved on their own",
            })
        })
        .collect();
    let req = DecisionRequest {
        ids: selection.ids,
        decision: Decision::Approve,
        by,
        comment,
        bulk: true,
        now,
        origin: caller.origin(),
    };
    let rows = approvals::decide(store, &req, &policy).await?;
    request_execution(&s.api, &rows);
    tracing::info!(
        run = %run,
        by = %req.by,
        approved = rows.len(),
        skipped = skipped.len(),
        "run approved in bulk through the API"
    );
    let decided: Vec<Value> = rows.iter().map(action_json).collect();
    Ok(axum::Json(RunApproved {
        decided,
        run_id: run,
        skipped,
    }))
}

/// The answer to a run approval (fields in the order JSON objects print).
#[derive(Debug, Serialize)]
pub(super) struct RunApproved {
    /// The actions decided, as they stand now.
    decided: Vec<Value>,
    /// The run.
    run_id: String,
    /// The single-identity actions left for approval on their own.
    skipped: Vec<Value>,
}
