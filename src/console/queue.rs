//! The approvals queue, one action's full record, and the decisions made on
//! it: approve, reject (each with a comment), undo. Each decision goes through
//! the same use case as the CLI's and the API's, as the signed-in person.

use std::collections::BTreeSet;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::ConsoleState;
use super::page::{Chrome, PageError, Signed, render};
use crate::access::Role;
use crate::api::DaemonRequest;
use crate::approval::{ApprovalPolicy, Decision};
use crate::domain::{Action, ActionState};
use crate::service::approvals::{self, DecideError, DecisionRequest};
use crate::service::{actions, show, undo};
use crate::store::{ApprovalRow, EventRow};

/// One pending action as the queue shows it.
pub struct QueueRow {
    /// The action.
    pub action: Action,
    /// Who approved it so far (four eyes).
    pub approved_by: Vec<String>,
    /// Whether it needs two approvers.
    pub four_eyes: bool,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
struct Queue {
    chrome: Chrome,
    rows: Vec<QueueRow>,
}

/// `GET /console/approvals`: pending actions with their reasons and approvals so far.
pub async fn approvals(State(s): State<ConsoleState>, who: Signed) -> Response {
    let now = Utc::now();
    let rows = match actions::pending(s.store.as_ref(), None, None, now).await {
        Ok(r) => r,
        Err(e) => return PageError::internal("reading pending actions", &e).into_response(),
    };
    let cfg = s.config();
    let mut out = Vec::with_capacity(rows.len());
    for a in rows.into_iter().rev().take(500) {
        let approved_by = match s.store.approvals(a.id).await {
            Ok(list) => approvers(&list),
            Err(e) => return PageError::internal("reading approvals", &e).into_response(),
        };
        let four_eyes = a
            .remedy()
            .is_some_and(|k| cfg.approvals.four_eyes.contains(&k));
        out.push(QueueRow {
            action: a,
            approved_by,
            four_eyes,
        });
    }
    render(&Queue {
        chrome: who.chrome(),
        rows: out,
    })
}

fn approvers(list: &[ApprovalRow]) -> Vec<String> {
    list.iter()
        .filter(|a| a.decision == Decision::Approve.as_str())
        .map(|a| a.approver.clone())
        .collect()
}

#[derive(Template)]
#[template(path = "console/action.html")]
struct ActionPage {
    chrome: Chrome,
    action: Action,
    approvals: Vec<ApprovalRow>,
    history: Vec<EventRow>,
    pending: bool,
    undoable: bool,
    flash: Option<String>,
}

/// The query of an action page: what was just done, to say so.
#[derive(Debug, Deserialize)]
pub struct ActionQuery {
    done: Option<String>,
}

/// `GET /console/actions/{id}`: the full record of one action.
pub async fn action(
    State(s): State<ConsoleState>,
    who: Signed,
    Path(id): Path<i64>,
    q: axum::extract::Query<ActionQuery>,
) -> Response {
    let detail = match show::show(s.store.as_ref(), id, Utc::now()).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return PageError::not_found(format!("Action {id} does not exist.")).into_response();
        }
        Err(e) => return PageError::internal("reading the action", &e).into_response(),
    };
    let flash = q.done.as_deref().map(|d| match d {
        "approve" => "Your approval is recorded.".to_string(),
        "reject" => "Your rejection is recorded.".to_string(),
        "undo" => "The undo is recorded as a new action (below in history).".to_string(),
        _ => String::new(),
    });
    render(&ActionPage {
        chrome: who.chrome(),
        pending: detail.action.state == ActionState::Pending,
        undoable: detail.action.state == ActionState::Done && detail.action.remedy().is_some(),
        action: detail.action,
        approvals: detail.approvals,
        history: detail.history,
        flash,
    })
}

/// The approve / reject form.
#[derive(Debug, Deserialize)]
pub struct DecideForm {
    csrf: Option<String>,
    decision: String,
    #[serde(default)]
    comment: String,
}

fn decision_error(e: DecideError) -> PageError {
    match e {
        DecideError::Approval(a) => {
            PageError::new(StatusCode::CONFLICT, format!("{a}. Nothing was changed."))
        }
        DecideError::Store(e) => PageError::internal("recording the decision", &e),
        DecideError::Contended => PageError::new(StatusCode::CONFLICT, e.to_string()),
    }
}

/// `POST /console/actions/{id}/decide`: approve or reject as the signed-in person.
pub async fn decide(
    State(s): State<ConsoleState>,
    who: Signed,
    Path(id): Path<i64>,
    Form(f): Form<DecideForm>,
) -> Result<Response, PageError> {
    who.check_csrf(f.csrf.as_deref())?;
    who.require(Role::Approver)?;
    let decision = match f.decision.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        other => {
            return Err(PageError::bad_request(format!(
                "decision {other:?} must be approve or reject"
            )));
        }
    };
    let comment = f.comment.trim();
    if comment.chars().count() > 1000 {
        return Err(PageError::bad_request(
            "The comment is longer than 1000 characters.",
        ));
    }
    let cfg = s.config();
    let req = DecisionRequest {
        ids: vec![id],
        decision,
        by: who.0.caller.name.clone(),
        comment: (!comment.is_empty()).then(|| comment.to_string()),
        bulk: false,
        now: Utc::now(),
        origin: who.0.caller.origin(),
    };
    let rows = approvals::decide(
        s.store.as_ref(),
        &req,
        &ApprovalPolicy::from(&cfg.approvals),
    )
    .await
    .map_err(decision_error)?;
    tracing::info!(action = id, decision = decision.as_str(), by = %req.by, "action decided in the console");
    request_execution(&s.requests, &rows);
    Ok(Redirect::to(&format!("/console/actions/{id}?done={}", decision.as_str())).into_response())
}

/// Asks the daemon to execute the tenants whose actions just became approved.
fn request_execution(requests: &mpsc::Sender<DaemonRequest>, rows: &[Action]) {
    let tenants: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.state == ActionState::Approved)
        .map(|r| r.tenant.as_str())
        .collect();
    for tenant in tenants {
        // A full queue is fine: the periodic executor picks them up anyway.
        let _ = requests.try_send(DaemonRequest::Execute {
            tenant: tenant.to_string(),
        });
    }
}

/// The undo form.
#[derive(Debug, Deserialize)]
pub struct UndoForm {
    csrf: Option<String>,
}

/// `POST /console/actions/{id}/undo`: records an undo of a done action under
/// the tenant's mode (undoing is a decision: approvers and admins only).
pub async fn undo(
    State(s): State<ConsoleState>,
    who: Signed,
    Path(id): Path<i64>,
    Form(f): Form<UndoForm>,
) -> Result<Response, PageError> {
    who.check_csrf(f.csrf.as_deref())?;
    who.require(Role::Approver)?;
    let cfg = s.config();
    let (undo_id, state) = undo::request_undo(
        &cfg,
        s.store.as_ref(),
        id,
        &who.0.caller.name,
        &who.0.caller.origin(),
        Utc::now(),
    )
    .await
    .map_err(|e| match e {
        undo::UndoError::Store(e) => PageError::internal("recording the undo", &e),
        other => PageError::new(
            StatusCode::CONFLICT,
            format!("{other}. Nothing was changed."),
        ),
    })?;
    tracing::info!(action = id, undo = undo_id, state = %state, by = %who.0.caller.name, "undo requested in the console");
    Ok(Redirect::to(&format!("/console/actions/{undo_id}?done=undo")).into_response())
}
