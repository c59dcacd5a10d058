//! `POST /v1/remediations`: a person's (or a named token's) request for one
//! action. Without `confirm` it answers the preview; with it, it records the
//! request and answers the run and action ids with their states. The caller is
//! the auth middleware's, never a name in the body.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::error::{ApiError, ApiResult};
use super::{DaemonRequest, Shared};
use crate::access::Caller;
use crate::domain::ActionKind;
use crate::output::planned_json;
use crate::plan::Plan;
use crate::service::remediate::{self, RemediateError, RemediationRequest, Selection};

/// The body of `POST /v1/remediations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemediateBody {
    tenant: String,
    action: String,
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default)]
    finding: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    reason: String,
    /// The scan's `scanned_at` (RFC 3339); the newest when absent.
    #[serde(default)]
    scan: Option<String>,
    #[serde(default)]
    confirm: bool,
}

/// `POST /v1/remediations`: previews, or with `confirm` records, a request.
pub(super) async fn remediate(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<RemediateBody>,
) -> ApiResult<axum::Json<Value>> {
    remediate::authorize(&caller)?;
    let cfg = s.api.config();
    let kind = ActionKind::parse(body.action.trim()).ok_or_else(|| {
        let names: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::bad_request(
            "invalid_request",
            format!(
                "action: {:?} is not an action; one of: {}",
                body.action,
                names.join(", ")
            ),
        )
    })?;
    let selection = match (body.finding, body.identities.is_empty()) {
        (Some(f), true) => Selection::Finding(f),
        (None, false) => Selection::Identities(body.identities),
        (Some(_), false) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "identities, finding: give either identities or a finding, not both",
            ));
        }
        (None, true) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "identities, finding: name at least one identity or a finding",
            ));
        }
    };
    let scanned_at = body.scan.as_deref().map(scan_time).transpose()?;
    let now = Utc::now();
    let scan = remediate::load_scan(&cfg, &body.tenant, scanned_at, now).await?;
    let req = RemediationRequest {
        tenant: body.tenant,
        kind,
        selection,
        targets: body.targets,
        reason: body.reason,
        caller,
        now,
    };
    let store = s.api.store.as_ref();
    if !body.confirm {
        let p = remediate::preview(&cfg, Some(store), &scan, &req).await?;
        return Ok(axum::Json(json!({
            "recorded": false,
            "tenant": p.plan.tenant,
            "scan": p.scan_source,
            "scanned_at": p.scanned_at.to_rfc3339(),
            "scan_sha256": p.sha256,
            "identities": p.identities,
            "mode": p.plan.mode.as_str(),
            "downgrades": p.plan.downgrades,
            "actions": actions(&p.plan, &[]),
        })));
    }
    let done = remediate::submit(&cfg, store, &scan, &req).await?;
    // A full queue is fine: the periodic executor runs them anyway (the
    // webhook notice is then not sent; history has the actions).
    let _ = s.api.requests.try_send(DaemonRequest::Recorded {
        tenant: done.plan.tenant.clone(),
        run_id: done.run_id.clone(),
    });
    Ok(axum::Json(json!({
        "recorded": true,
        "run_id": done.run_id,
        "tenant": done.plan.tenant,
        "mode": done.plan.mode.as_str(),
        "downgrades": done.plan.downgrades,
        "ids": done.ids,
        "actions": actions(&done.plan, &done.ids),
    })))
}

fn actions(plan: &Plan, ids: &[i64]) -> Vec<Value> {
    plan.actions
        .iter()
        .enumerate()
        .map(|(i, a)| planned_json(a, ids.get(i).copied()))
        .collect()
}

fn scan_time(v: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                format!("scan: {v:?} is not an RFC 3339 time like 2026-11-20T06:00:00Z"),
            )
        })
}

impl From<RemediateError> for ApiError {
    fn from(e: RemediateError) -> Self {
        let message = e.to_string();
        match e {
            RemediateError::Forbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            RemediateError::Invalid(_) => ApiError::bad_request("invalid_request", message),
            RemediateError::UnknownTenant(_) => ApiError::not_found(message),
            RemediateError::UnknownIdentity(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_identity", message)
            }
            RemediateError::UnknownFinding(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_finding", message)
            }
            RemediateError::Scan(crate::scan::ScanError::BadRequest(_)) => {
                ApiError::new(StatusCode::NOT_FOUND, "scan_not_found", message)
            }
            RemediateError::Scan(_) => ApiError::new(StatusCode::CONFLICT, "scan_refused", message),
            RemediateError::Exceptions(_) | RemediateError::Policy(_) => {
                tracing::error!(error = %message, "remediation request failed on the configuration");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "config_error", message)
            }
            RemediateError::Store(s) => s.into(),
        }
    }
}
