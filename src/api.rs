//! The daemon's local HTTP API: health, readiness, metrics, approvals and run
//! triggers.
//!
//! Every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.
//! Approvals follow exactly the rules of `approvals approve|reject` on the command
//! line: the store decides atomically, so the API adds no check of its own that
//! could race. Errors are JSON: `{"error": {"code": "...", "message": "..."}}`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::approval::{ApprovalError, ApprovalPolicy, Decision};
use crate::config::{ApiConfig, Config};
use crate::domain::{Action, ActionState};
use crate::metrics::Metrics;
use crate::output::action_json;
use crate::service::approvals::{self, DecideError, DecisionRequest};
use crate::store::{Filter, Store, StoreError};

/// What the daemon asks of its scheduler on behalf of an API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonRequest {
    /// Run a cycle now for one tenant or all of them.
    Run {
        /// Only this tenant; all when `None`.
        tenant: Option<String>,
        /// Process the scan even if it was processed before.
        force: bool,
        /// Who asked (`api`, or `api:NAME` when the body names someone).
        by: String,
    },
    /// Execute the tenant's approved actions now rather than at the next tick.
    Execute {
        /// Tenant name.
        tenant: String,
    },
}

/// Everything the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The history store.
    pub store: Arc<dyn Store>,
    /// The current config (reloaded on SIGHUP); clone the `Arc` out, never hold the lock.
    pub config: Arc<RwLock<Arc<Config>>>,
    /// The bearer token every route but the health checks requires.
    pub token: Token,
    /// The daemon's counters.
    pub metrics: Arc<Metrics>,
    /// True once the daemon is ready to serve (false while starting or stopping).
    pub ready: Arc<AtomicBool>,
    /// Requests to the daemon's scheduler.
    pub requests: mpsc::Sender<DaemonRequest>,
}

/// The API bearer token, shared with the daemon so that SIGHUP can replace it
/// (a rotated token works at once and the old one is refused).
#[derive(Clone)]
pub struct Token(Arc<RwLock<Arc<str>>>);

impl Token {
    /// A token slot holding `token`.
    pub fn new(token: &str) -> Token {
        Token(Arc::new(RwLock::new(Arc::from(token))))
    }

    /// The token in force now.
    pub fn get(&self) -> Arc<str> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the token; requests after this need the new one.
    pub fn set(&self, token: &str) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::from(token);
    }
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

/// An error answer: status, a stable code, and a message for people.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may never come: do not wait to read it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "API request failed in the history store");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            "the history store failed; the daemon log has the details",
        )
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::Approval(a) => a.into(),
            DecideError::Store(s) => s.into(),
            DecideError::Contended => {
                ApiError::new(StatusCode::CONFLICT, "contended", e.to_string())
            }
        }
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        let message = e.to_string();
        match e {
            ApprovalError::UnknownId(_) => ApiError::not_found(message),
            ApprovalError::NotPending { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_pending", message)
            }
            ApprovalError::SameApprover { .. } | ApprovalError::SameOsUser { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_approved", message)
            }
            ApprovalError::NotBulk { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_bulk", message)
            }
            ApprovalError::Empty => {
                ApiError::new(StatusCode::CONFLICT, "nothing_to_decide", message)
            }
            ApprovalError::NotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_an_approver", message)
            }
            ApprovalError::NoName => ApiError::bad_request(
                "missing_approver",
                "\"by\" must name who approves or rejects",
            ),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body: any size up to the limit (413 beyond), parsed with a
/// message naming the field at fault. An empty body counts as `{}`.
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let mime = ct
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .map(|m| m.trim().to_ascii_lowercase())
                .unwrap_or_default();
            if !(mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json")))
            {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the request body must be JSON (Content-Type: application/json)",
                ));
            }
        }
        let limit = state.api.config().api.body_timeout.0;
        let read = tokio::time::timeout(limit, Bytes::from_request(req, state)).await;
        let Ok(read) = read else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} (api.body_timeout)",
                    humantime::format_duration(limit)
                ),
            ));
        };
        let bytes = read.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the request body is larger than the limit of {} bytes (api.max_body_bytes)",
                        state.max_body
                    ),
                )
            } else {
                ApiError::bad_request(
                    "unreadable_body",
                    format!("cannot read the request body: {}", rej.body_text()),
                )
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
        })?;
        de.end().map_err(|e| {
            ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
        })?;
        Ok(JsonBody(value))
    }
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
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/actions/{id}", get(show_action))
        .route("/v1/actions/{id}/approve", post(approve_action))
        .route("/v1/actions/{id}/reject", post(reject_action))
        .route("/v1/runs/{run_id}/approve", post(approve_run))
        .route("/v1/runs", post(trigger_run))
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

async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) || authorized(req.headers(), &s.api.token.get()) {
        next.run(req).await
    } else {
        tracing::debug!(method = %req.method(), path = %req.uri().path(), "API request without a valid bearer token");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs the API bearer token: Authorization: Bearer <token>",
        )
        .into_response()
    }
}

/// Whether the request carries the token; compared in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(given.trim(), token)
}

/// Compares the SHA-256 digests of both strings without an early exit, so the
/// time taken reveals neither a matching prefix nor the token's length.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    let diff = x
        .iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
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

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.api.ready.load(Ordering::Acquire) {
        axum::Json(json!({"status": "ready"})).into_response()
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

/// An action as `approvals list --format json` prints it.
fn path_id(p: Result<Path<i64>, PathRejection>) -> ApiResult<i64> {
    p.map(|Path(id)| id).map_err(|e| {
        ApiError::bad_request(
            "invalid_id",
            format!("the action id must be a whole number: {}", e.body_text()),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    run: Option<String>,
}

async fn list_approvals(
    State(s): State<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let store = &s.api.store;
    let filter = Filter {
        tenant: q.tenant.filter(|t| !t.is_empty()),
        run: q.run.filter(|r| !r.is_empty()),
        state: Some(ActionState::Pending.to_string()),
        ..Filter::default()
    };
    let mut rows = store.actions(&filter).await?;
    // The daemon expires approvals on a timer; one overdue since its last tick
    // is expired now (a write), so a read never lists it as pending.
    let now = Utc::now();
    if rows.iter().any(|a| overdue(a, now)) {
        store.expire_due(now).await?;
        rows = store.actions(&filter).await?;
    }
    let actions: Vec<Value> = rows.iter().map(action_json).collect();
    Ok(axum::Json(json!({ "actions": actions })))
}

async fn show_action(
    State(s): State<Shared>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(id)?;
    let store = &s.api.store;
    let mut a = store
        .action(id)
        .await?
        .ok_or(ApprovalError::UnknownId(id))?;
    let now = Utc::now();
    if overdue(&a, now) {
        store.expire_due(now).await?;
        a = store
            .action(id)
            .await?
            .ok_or(ApprovalError::UnknownId(id))?;
    }
    let approvals = store.approvals(id).await?;
    let events = store
        .events(&Filter {
            action_id: Some(id),
            ..Filter::default()
        })
        .await?;
    let mut rec = action_json(&a);
    rec["approvals"] = serde_json::to_value(&approvals).unwrap_or(Value::Null);
    rec["history"] = serde_json::to_value(&events).unwrap_or(Value::Null);
    Ok(axum::Json(rec))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// A pending action whose approval window has passed but that is not marked
/// expired yet (times are stored as sortable RFC 3339 text).
fn overdue(a: &Action, now: chrono::DateTime<Utc>) -> bool {
    a.state == ActionState::Pending && a.is_overdue(now)
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
    id: i64,
    body: DecideBody,
    decision: Decision,
) -> ApiResult<axum::Json<Value>> {
    let cfg = s.api.config();
    let policy = ApprovalPolicy::from(&cfg.approvals);
    let now = Utc::now();
    let store = &s.api.store;
    store.expire_due(now).await?;
    let req = DecisionRequest {
        ids: vec![id],
        decision,
        by: body.by.unwrap_or_default(),
        comment: body.comment,
        bulk: false,
        now,
        origin: crate::approval::Origin::api(),
    };
    let rows = approvals::decide(store.as_ref(), &req, &policy).await?;
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

async fn approve_action(
    State(s): State<Shared>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(body): JsonBody<DecideBody>,
) -> ApiResult<axum::Json<Value>> {
    decide_one(&s, path_id(id)?, body, Decision::Approve).await
}

async fn reject_action(
    State(s): State<Shared>,
    id: Result<Path<i64>, PathRejection>,
    JsonBody(body): JsonBody<DecideBody>,
) -> ApiResult<axum::Json<Value>> {
    decide_one(&s, path_id(id)?, body, Decision::Reject).await
}

async fn approve_run(
    State(s): State<Shared>,
    run: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<DecideBody>,
) -> ApiResult<axum::Json<Value>> {
    let Path(run) = run.map_err(|e| ApiError::bad_request("invalid_run", e.body_text()))?;
    let cfg = s.api.config();
    let policy = ApprovalPolicy::from(&cfg.approvals);
    let now = Utc::now();
    let store = &s.api.store;
    let by = body.by.unwrap_or_default();
    // Refuse a wrong approver before revealing anything about the run.
    crate::approval::check_approver(&policy, &by)?;
    store.expire_due(now).await?;
    let all = store
        .actions(&Filter {
            run: Some(run.clone()),
            ..Filter::default()
        })
        .await?;
    if all.is_empty() {
        return Err(ApiError::not_found(format!(
            "run {run} does not exist or recorded no actions"
        )));
    }
    let mut ids = Vec::new();
    let mut skipped = Vec::new();
    for p in all.iter().filter(|a| a.state == ActionState::Pending) {
        if p.kind.is_single_identity() {
            skipped.push(json!({
                "id": p.id,
                "action": p.kind,
                "identity_upn": p.identity_upn,
                "reason": "single-identity actions must be approved on their own",
            }));
        } else {
            ids.push(p.id);
        }
    }
    if ids.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_decide",
            format!(
                "run {run} has no pending actions that can be decided in bulk ({} single-identity action(s) must be approved on their own)",
                skipped.len()
            ),
        ));
    }
    let req = DecisionRequest {
        ids,
        decision: Decision::Approve,
        by,
        comment: body.comment,
        bulk: true,
        now,
        origin: crate::approval::Origin::api(),
    };
    let rows = approvals::decide(store.as_ref(), &req, &policy).await?;
    request_execution(&s.api, &rows);
    tracing::info!(
        run = %run,
        by = %req.by,
        approved = rows.len(),
        skipped = skipped.len(),
        "run approved in bulk through the API"
    );
    let decided: Vec<Value> = rows.iter().map(action_json).collect();
    Ok(axum::Json(json!({
        "run_id": run,
        "decided": decided,
        "skipped": skipped,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    by: Option<String>,
}

async fn trigger_run(
    State(s): State<Shared>,
    JsonBody(body): JsonBody<RunBody>,
) -> ApiResult<Response> {
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
    let by = match body.by.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => format!("api:{name}"),
        _ => "api".to_string(),
    };
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

/// How long connections may take and how many are served at once.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time allowed for a request's headers once a connection waits for one.
    pub header_timeout: std::time::Duration,
    /// Connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits::from(&ApiConfig::default())
    }
}

impl From<&ApiConfig> for ServeLimits {
    fn from(c: &ApiConfig) -> Self {
        ServeLimits {
            header_timeout: c.header_timeout.0,
            max_connections: c.max_connections.max(1),
        }
    }
}

/// Serves on "HOST:PORT" or "unix:/path" with the default limits until
/// `shutdown` resolves.
pub async fn serve(
    listen: &str,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listen, router, ServeLimits::default(), shutdown).await
}

/// Serves on "HOST:PORT" or "unix:/path" until `shutdown` resolves, closing
/// connections that send no request headers in time and serving at most
/// `limits.max_connections` at once.
pub async fn serve_with(
    listen: &str,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    bind(listen).await?.serve(router, limits, shutdown).await;
    Ok(())
}

/// A bound API listener: binding is separate from serving so that the daemon
/// knows at once whether the address is usable, with no wait.
pub enum Bound {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket listener and its path (removed when serving stops).
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, PathBuf),
}

/// Binds "HOST:PORT" or "unix:/path"; errors name the address.
pub async fn bind(listen: &str) -> std::io::Result<Bound> {
    let annotate =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("API on {listen}: {e}"));
    if let Some(path) = listen.strip_prefix("unix:") {
        return bind_unix(std::path::Path::new(path))
            .await
            .map_err(annotate);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(annotate)?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    Ok(Bound::Tcp(listener))
}

impl Bound {
    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        router: Router,
        limits: ServeLimits,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        match self {
            Bound::Tcp(l) => serve_connections(l, router, limits, shutdown).await,
            #[cfg(unix)]
            Bound::Unix(l, path) => {
                serve_connections(l, router, limits, shutdown).await;
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The accept loop: one permit per connection, HTTP/1.1 with a header-read
/// timeout, graceful shutdown of every connection when `shutdown` resolves.
async fn serve_connections<L: axum::serve::Listener>(
    mut listener: L,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let connections = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        // At the limit, wait for a connection to close before accepting another.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, _addr) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        if permits.available_permits() == 0 {
            tracing::warn!(
                max = limits.max_connections,
                "the API serves api.max_connections connections; new ones wait until one closes"
            );
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "API connection closed");
            }
        });
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
}

#[cfg(unix)]
async fn bind_unix(path: &std::path::Path) -> std::io::Result<Bound> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    if path.as_os_str().is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "unix: needs a socket path",
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::new(
                    ErrorKind::AddrInUse,
                    "another process is listening on the socket",
                ));
            }
            // A stale socket left by a process that stopped.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "the path exists and is not a socket; refusing to replace it",
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // Owner and group only; the bearer token is still required.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %path.display(), "API listening");
    Ok(Bound::Unix(listener, path.to_path_buf()))
}

#[cfg(not(unix))]
async fn bind_unix(_path: &std::path::Path) -> std::io::Result<Bound> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "unix sockets are not supported on this platform",
    ))
}

/// Reads the bearer token from `api.token_file` or `$CREDENTIALS_DIRECTORY/<api.token_credential>`.
pub fn load_token(cfg: &ApiConfig) -> Result<String, String> {
    let (source, path): (String, PathBuf) = match (&cfg.token_file, &cfg.token_credential) {
        (Some(_), Some(_)) => {
            return Err(
                "api: give only one of token_file or token_credential for the bearer token".into(),
            );
        }
        (Some(file), None) => (format!("api.token_file {}", file.display()), file.clone()),
        (None, Some(name)) => {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!(
                    "api.token_credential {name:?} must be a credential name, not a path"
                ));
            }
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!(
                    "api.token_credential {name:?} needs systemd's LoadCredential= ($CREDENTIALS_DIRECTORY is not set)"
                )
            })?;
            (
                format!("api.token_credential {name:?}"),
                std::path::Path::new(&dir).join(name),
            )
        }
        (None, None) => {
            return Err(
                "the API needs a bearer token: set api.token_file or api.token_credential".into(),
            );
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the API token ({source}): {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the API token ({source}) is empty"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the API token ({source}) must be one line without spaces"
        ));
    }
    #[cfg(unix)]
    if cfg.token_file.is_some() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the API token file is readable by group or others; chmod 600 it"
            );
        }
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_compare_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        assert!(!authorized(&h, ""));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert!(authorized(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(!authorized(&h, "s3cret"));
    }

    #[test]
    fn load_token_reads_a_trimmed_file_and_refuses_empty_or_ambiguous_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc123\n").unwrap();
        let mut cfg = ApiConfig {
            token_file: Some(file.clone()),
            ..ApiConfig::default()
        };
        assert_eq!(load_token(&cfg).unwrap(), "abc123");
        std::fs::write(&file, " \n").unwrap();
        assert!(load_token(&cfg).unwrap_err().contains("empty"));
        cfg.token_credential = Some("api-token".into());
        assert!(load_token(&cfg).unwrap_err().contains("only one"));
        cfg.token_file = None;
        cfg.token_credential = Some("../x".into());
        assert!(load_token(&cfg).unwrap_err().contains("not a path"));
        cfg.token_credential = None;
        assert!(
            load_token(&cfg)
                .unwrap_err()
                .contains("needs a bearer token")
        );
    }
}
