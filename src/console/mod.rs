//! The operator console: server-rendered pages (askama templates compiled into
//! the binary, one stylesheet, one small script, no build step) for people who
//! sign in with Entra ID. Like the API and the CLI it is an edge: each handler
//! parses the request, checks the signed-in caller's role, calls a use case in
//! `service` and renders the answer.
//!
//! Every response carries a Content-Security-Policy without inline scripts or
//! styles, `no-store` caching and no referrer; every state-changing request is
//! a POST carrying the session's CSRF token.

mod auth;
mod history;
mod page;
mod posture;
mod queue;
mod remediate;
pub mod session;
pub mod oidc;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use crate::api::DaemonRequest;
use crate::config::Config;
use crate::store::Store;
use session::{CookieNames, Sessions};

pub use page::PageError;

/// Everything the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    /// The history store.
    pub store: Arc<dyn Store>,
    /// The config in force (reloaded on SIGHUP).
    pub config: Arc<RwLock<Arc<Config>>>,
    /// Signed-in sessions and sign-ins in progress.
    pub sessions: Arc<Sessions>,
    /// The OpenID Connect relying party.
    pub oidc: Arc<oidc::Oidc>,
    /// Requests to the daemon (prompt execution after an approval).
    pub requests: mpsc::Sender<DaemonRequest>,
    /// Cookie names and attributes.
    pub cookies: CookieNames,
    /// The scans pages show, loaded once and kept (the two most recent).
    pub scans: Arc<crate::service::scan_view::ScanCache>,
}

impl ConsoleState {
    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The Content-Security-Policy of every console response: only our own
/// stylesheet and script, no inline code, no frames, forms only to us.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

const APP_CSS: &str = include_str!("../../templates/console/app.css");
const APP_JS: &str = include_str!("../../templates/console/app.js");

async fn app_css() -> Response {
    static_file("text/css; charset=utf-8", APP_CSS)
}

async fn app_js() -> Response {
    static_file("text/javascript; charset=utf-8", APP_JS)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn to_console() -> Redirect {
    Redirect::to("/console")
}

/// The console's routes under `/console` (and `/` leading to it), with their
/// security headers; merged into the API's router by the daemon.
pub fn router(state: ConsoleState) -> Router {
    let console = Router::new()
        .route("/", get(page::home))
        .route("/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/logout", post(auth::logout))
        .route("/t/{tenant}", get(posture::dashboard))
        .route("/t/{tenant}/findings/{id}", get(posture::finding))
        .route("/t/{tenant}/identities/{id}", get(posture::identity))
        .route("/t/{tenant}/remediate", post(remediate::review))
        .route("/t/{tenant}/remediate/confirm", post(remediate::confirm))
        .route("/history", get(history::history))
        .route("/history.csv", get(history::history_csv))
        .route("/history/verify", get(history::verify))
        .route("/approvals", get(queue::approvals))
        .route("/actions/{id}", get(queue::action))
        .route("/actions/{id}/decide", post(queue::decide))
        .route("/actions/{id}/undo", post(queue::undo))
        .route("/static/app.css", get(app_css))
        .route("/static/app.js", get(app_js))
        .with_state(state);
    Router::new()
        .route("/", get(to_console))
        .nest("/console", console)
        .layer(middleware::from_fn(security_headers))
}

/// Drops sessions idle or too old; the daemon calls it on a timer.
pub fn sweep(state: &ConsoleState) {
    let cfg = state.config();
    state
        .sessions
        .sweep(cfg.console.idle_timeout.0, cfg.console.session_lifetime.0);
}
