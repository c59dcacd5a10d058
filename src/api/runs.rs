//! `POST /v1/runs`: asks the daemon's scheduler for a run now.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::body::JsonBody;
use super::caller::{refuse_typed_name, require, typed_name};
use super::error::{ApiError, ApiResult};
use super::{DaemonRequest, Shared};
use crate::access::{Caller, Role};

/// The body of `POST /v1/runs`: which tenant, whether to force. Who asks is
/// the calling token; a `"by"` is refused, never recorded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunBody {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    force: bool,
    #[serde(default, deserialize_with = "typed_name")]
    by: Option<()>,
}

/// `POST /v1/runs`: queues a run for the daemon's scheduler (202), or says why not.
pub(super) async fn trigger_run(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<RunBody>,
) -> ApiResult<Response> {
    require(&caller, Role::Operator, "request runs")?;
    refuse_typed_name(body.by)?;
    let cfg = s.api.config();
    if let Some(t) = &body.tenant
        && cfg.tenant(t).is_none()
    {
        return Err(ApiError::not_found(format!(
            "no tenant named {t:?} in the config"
        )));
    }
    if cfg.tenants.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_tenants",
            "no [[tenant]] is configured",
        ));
    }
    let by = caller.name.clone();
    let req = DaemonRequest::Run {
        tenant: body.tenant.clone(),
        force: body.force,
        by: by.clone(),
    };
    match s.api.requests.try_send(req) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            let mut resp = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the daemon has too many requests queued; try again shortly",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Ok(resp);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the daemon is shutting down and takes no more runs",
            ));
        }
    }
    tracing::info!(tenant = ?body.tenant, force = body.force, by = %by, "run requested through the API");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"accepted": true, "tenant": body.tenant, "force": body.force})),
    )
        .into_response())
}
