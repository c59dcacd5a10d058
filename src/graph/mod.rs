//! The one Microsoft Graph client: authentication, one retry policy for
//! throttling, 5xx and timeouts, JSON `$batch`, listings paged by
//! `@odata.nextLink`, and the Conditional Access write pace. It knows nothing of
//! actions or history: callers record what it returns.

mod auth;
mod batch;
mod pace;
pub mod paging;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

pub use auth::TokenSource;

use crate::config::GraphConfig;

/// Why a Graph call could not be completed at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// No token could be obtained.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The request never got an HTTP answer (connection, timeout).
    #[error("no answer from Graph: {0}")]
    Transport(String),
}

/// One Graph request, relative to `/v1.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphRequest {
    /// HTTP method.
    pub method: Method,
    /// Path and query below `/v1.0`, such as `/users/{id}`.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Value>,
}

impl GraphRequest {
    /// A GET.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: None,
        }
    }

    /// A request with a JSON body.
    pub fn with_body(method: Method, path: impl Into<String>, body: Value) -> Self {
        Self {
            method,
            path: path.into(),
            body: Some(body),
        }
    }

    /// A request without a body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
        }
    }

    /// Conditional Access and Identity Protection requests (reads too) share
    /// Graph's pace of one per second per tenant, whose 429s carry no Retry-After.
    fn is_ca(&self) -> bool {
        self.path.starts_with("/identity/conditionalAccess")
            || self.path.starts_with("/identityProtection")
    }

    /// `METHOD path`, for history.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// One HTTP attempt, kept for history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    /// The `client-request-id` we sent.
    pub client_request_id: String,
    /// Graph's `request-id`, when it answered.
    pub request_id: Option<String>,
    /// The status, 0 when there was no answer.
    pub status: u16,
    /// Inside a `$batch`.
    pub batched: bool,
    /// For a `$batch` item: the envelope's `request-id`, to find the batch in Graph's logs.
    pub batch_request_id: Option<String>,
}

/// Graph's answer to a request, after retries.
#[derive(Debug, Clone)]
pub struct GraphResponse {
    /// Final HTTP status.
    pub status: u16,
    /// Parsed body (`Null` when empty or not JSON).
    pub body: Value,
    /// Every attempt made.
    pub attempts: Vec<Attempt>,
}

impl GraphResponse {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Graph's error `code`, e.g. `Request_ResourceNotFound`.
    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }

    /// Graph's error message, for people.
    pub fn error_message(&self) -> String {
        let msg = self
            .body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("");
        format!(
            "HTTP {} {} {msg}",
            self.status,
            self.error_code().unwrap_or("")
        )
        .trim()
        .to_string()
    }

    /// The last `request-id` Graph gave.
    pub fn request_id(&self) -> Option<&str> {
        self.attempts
            .iter()
            .rev()
            .find_map(|a| a.request_id.as_deref())
    }
}

/// A request's final answer, or why there was none.
pub type Answer = Result<GraphResponse, GraphError>;

/// Statuses worth another attempt.
fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Reads `Retry-After` as seconds, fractions allowed.
fn retry_after(v: Option<&str>) -> Option<Duration> {
    let secs: f64 = v?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

/// Told of every HTTP answer (`Some(status)`, 0 when none came) and of every
/// wait before a retry (`None`, the wait).
pub type CallObserver = Arc<dyn Fn(Option<u16>, Duration) + Send + Sync>;

/// Graph access for one tenant.
pub struct GraphClient {
    observer: std::sync::RwLock<Option<CallObserver>>,
    http: reqwest::Client,
    base: String,
    tokens: TokenSource,
    batch_size: usize,
    max_attempts: u32,
    max_retry: Duration,
    ca_pace: tokio::sync::Mutex<Option<Instant>>,
    /// How fast `batch` sends and how many envelopes are in flight, learned
    /// and counted across its calls.
    pace: std::sync::Mutex<pace::Pace>,
    /// Told when an envelope in flight ends, so that a `batch` call waiting
    /// for room in the window (taken by other calls) goes on.
    freed: tokio::sync::Notify,
}

impl GraphClient {
    /// Builds the client for a tenant from its config (reads the credential now).
    pub fn new(tenant_id: &str, cfg: &GraphConfig) -> Result<Arc<GraphClient>, GraphError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("entra-remediator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Transport(e.to_string()))?;
        Ok(Arc::new(GraphClient {
            tokens: TokenSource::new(tenant_id, cfg)?,
            http,
            base: format!("{}/v1.0", cfg.graph_url()),
            batch_size: cfg.batch_size,
            max_attempts: cfg.max_attempts,
            max_retry: Duration::from_secs(cfg.max_retry_secs),
            ca_pace: tokio::sync::Mutex::new(None),
            pace: std::sync::Mutex::new(pace::Pace::new(cfg.max_concurrency)),
            freed: tokio::sync::Notify::new(),
            observer: std::sync::RwLock::new(None),
        }))
    }

    /// How many requests a caller that hands `batch` its work in chunks
    /// should put in one, now: full envelopes for the whole current window, or
    /// a second's worth at the learned pace (a throttled item waits about that
    /// long), whichever is more.
    pub fn chunk_requests(&self) -> usize {
        let (window, rate) = self
            .pace
            .lock()
            .map_or((pace::START_WINDOW, None), |p| (p.window(), p.rate()));
        let second = rate.map_or(0, |r| r.ceil() as usize);
        (self.batch_size.max(1) * window).max(second)
    }

    /// Sets the observer that metrics are fed from.
    pub fn observe(&self, o: CallObserver) {
        if let Ok(mut g) = self.observer.write() {
            *g = Some(o);
        }
    }

    fn report(&self, status: Option<u16>, wait: Duration) {
        let o = self.observer.read().ok().and_then(|g| g.clone());
        if let Some(o) = o {
            o(status, wait);
        }
    }

    /// The delay before attempt `n` (1-based retry count) without a Retry-After:
    /// exponential from 1 s, capped at 32 s, with full jitter between half and all.
    fn backoff(n: u32) -> Duration {
        let base = Duration::from_secs(1u64 << n.saturating_sub(1).min(5));
        base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    async fn pace_ca(&self) {
        let mut last = self.ca_pace.lock().await;
        if let Some(t) = *last {
            let next = t + Duration::from_millis(1050);
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
        *last = Some(Instant::now());
    }

    async fn send_once(
        &self,
        req: &GraphRequest,
        force_token: bool,
    ) -> Result<(u16, Value, Attempt, Option<Duration>), (GraphError, Attempt)> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let failed = |e: GraphError| {
            (
                e,
                Attempt {
                    client_request_id: client_request_id.clone(),
                    request_id: None,
                    status: 0,
                    batched: false,
                    batch_request_id: None,
                },
            )
        };
        let token = self
            .tokens
            .token(&self.http, force_token)
            .await
            .map_err(failed)?;
        if req.is_ca() {
            self.pace_ca().await;
        }
        let mut rb = self
            .http
            .request(req.method.clone(), format!("{}{}", self.base, req.path))
            .bearer_auth(token)
            .header("client-request-id", &client_request_id)
            .header("return-client-request-id", "true");
        if let Some(b) = &req.body {
            rb = rb.json(b);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| failed(GraphError::Transport(e.without_url().to_string())))?;
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = header("request-id");
        let after = retry_after(header("retry-after").as_deref());
        let text = resp
            .text()
            .await
            .map_err(|e| failed(GraphError::Transport(e.without_url().to_string())))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((
            status,
            body,
            Attempt {
                client_request_id,
                request_id,
                status,
                batched: false,
                batch_request_id: None,
            },
            after,
        ))
    }

    /// Sends one request with the retry policy: throttling (honouring
    /// `Retry-After`), 5xx and timeouts are retried with backoff, within bounded
    /// attempts and time; other 4xx are returned at once; a 401 renews the token once.
    pub async fn call(&self, req: &GraphRequest) -> Result<GraphResponse, GraphError> {
        let started = Instant::now();
        let mut attempts = Vec::new();
        let mut renewed = false;
        let mut retries = 0;
        loop {
            let outcome = self.send_once(req, false).await;
            let wait = match outcome {
                Ok((401, _, attempt, _)) if !renewed => {
                    attempts.push(attempt);
                    renewed = true;
                    // Renew the token before trying again.
                    self.tokens.token(&self.http, true).await?;
                    continue;
                }
                Ok((status, body, attempt, after)) => {
                    attempts.push(attempt);
                    self.report(Some(status), Duration::ZERO);
                    if !retryable(status) {
                        return Ok(GraphResponse {
                            status,
                            body,
                            attempts,
                        });
                    }
                    retries += 1;
                    let wait = after.unwrap_or_else(|| Self::backoff(retries));
                    if retries >= self.max_attempts || started.elapsed() + wait > self.max_retry {
                        return Ok(GraphResponse {
                            status,
                            body,
                            attempts,
                        });
                    }
                    tracing::info!(request = %req.describe(), status, wait_ms = wait.as_millis() as u64, "Graph asked us to wait; retrying");
                    self.report(None, wait);
                    wait
                }
                Err((GraphError::Transport(e), attempt)) => {
                    attempts.push(attempt);
                    self.report(Some(0), Duration::ZERO);
                    retries += 1;
                    let wait = Self::backoff(retries);
                    if retries >= self.max_attempts || started.elapsed() + wait > self.max_retry {
                        return Err(GraphError::Transport(e));
                    }
                    wait
                }
                Err((e, _)) => return Err(e),
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_whole_and_fractional_seconds_only() {
        assert_eq!(retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("0.25")), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after(Some(" 1.5 ")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(Some("-1")), None);
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!(retry_after(None), None);
        assert_eq!(retry_after(Some("100000")), Some(Duration::from_secs(300)));
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        for n in 1..10 {
            let d = GraphClient::backoff(n);
            let base = 1u64 << (n - 1).min(5);
            assert!(d >= Duration::from_millis(base * 500), "{n}: {d:?}");
            assert!(d <= Duration::from_secs(base), "{n}: {d:?}");
        }
    }

    #[test]
    fn only_throttling_and_server_errors_are_retried() {
        for s in [429, 500, 502, 503, 504] {
            assert!(retryable(s));
        }
        for s in [200, 204, 400, 401, 403, 404, 409, 424] {
            assert!(!retryable(s));
        }
    }
}
