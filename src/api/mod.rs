//! The daemon's local HTTP API: health, readiness, metrics, approvals, run
//! triggers and people's remediation requests.
//!
//! Every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.
//! Approvals follow exactly the rules of `approvals approve|reject` on the command
//! line: the store decides atomically, so the API adds no check of its own that
//! could race. Errors are JSON: `{"error": {"code": "...", "message": "..."}}`.

mod approvals;
mod body;
mod caller;
mod error;
mod runs;
mod remediate;
mod serve;
mod token;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use error::ApiError;
pub use serve::{Bound, ServeLimits, bind, serve, serve_with};
pub use token::{NamedToken, Tokens, load_tokens};

/// What the daemon asks of its scheduler on behalf of an API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonRequest {
    /// Run a cycle now for one tenant or all of them.
    Run {
        /// Only this tenant; all when `None`.
        tenant: Option<String>,
        /// Process the scan even if it was processed before.
        force: bool,
        /// Who asked: the calling token's recorded name, `token:NAME`.
        by: String,
    },
    /// Execute the tenant's approved actions now rather than at the next tick.
    Execute {
        /// Tenant name.
        tenant: String,
    },
    /// A person's remediation was recorded (console or API): execute what is
    /// ready and tell the webhooks about what waits for approval, as after a
    /// rule run.
    Recorded {
        /// Tenant name.
        tenant: String,
        /// The run it was recorded as.
        run_id: String,
    },
}

/// Everything the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The history store.
    pub store: Arc<dyn Store>,
    /// The current config (reloaded on SIGHUP); clone the `Arc` out, never hold the lock.
    pub config: Arc<RwLock<Arc<Config>>>,
    /// The named bearer tokens; every route but the health checks needs one.
    pub tokens: Tokens,
    /// The daemon's counters.
    pub metrics: Arc<Metrics>,
    /// True once the daemon is ready to serve (false while starting or stopping).
    pub ready: Arc<AtomicBool>,
    /// Requests to the daemon's scheduler.
    pub requests: mpsc::Sender<DaemonRequest>,
}

impl ApiState {
    /// The config in force now.
    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[derive(Clone)]
struct Shared {
    api: ApiState,
    max_body: usize,
}

/// Builds the API's routes with its auth, body limit and JSON fallbacks.
pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    let shared = Shared {
        api: state,
        max_body: max_body_bytes,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/approvals", get(approvals::list_approvals))
        .route("/v1/actions/{id}", get(approvals::show_action))
        .route("/v1/actions/{id}/approve", post(approvals::approve_action))
        .route("/v1/actions/{id}/reject", post(approvals::reject_action))
        .route("/v1/runs/{run_id}/approve", post(approvals::approve_run))
        .route("/v1/runs", post(runs::trigger_run))
        .route("/v1/remediations", post(remediate::remediate))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

/// Paths anyone may call: liveness and readiness probes.
fn is_public(path: &str) -> bool {
    path == "/healthz" || path == "/readyz"
}

async fn auth(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    match token::caller(req.headers(), &s.api.tokens.current()) {
        // Handlers read who calls from this extension, never from the body.
        // Every token holds a role, and any role may read.
        Some(caller) if !caller.roles.is_empty() => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        _ => {
            tracing::debug!(method = %req.method(), path = %req.uri().path(), "API request without a valid bearer token");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs an API bearer token: Authorization: Bearer <token>",
            )
            .into_response()
        }
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// What a health probe answers as its status.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Probe {
    /// The process is alive.
    Ok,
    /// The daemon serves.
    Ready,
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": Probe::Ok}))
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.api.ready.load(Ordering::Acquire) {
        axum::Json(json!({"status": Probe::Ready})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the daemon is starting or shutting down",
        )
        .into_response()
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.api.metrics.render(),
    )
        .into_response()
}
