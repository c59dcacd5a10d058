//! Delivery with retries: one background task per webhook sends its queued
//! notices in order. 5xx, 429 (honouring `Retry-After`) and transport errors
//! are retried with exponential backoff and jitter up to the webhook's
//! `max_attempts`; other answers are not retried. Errors never show the URL.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::ResultHook;

/// The first retry's wait before jitter, unless a test changes it.
const DEFAULT_FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between two attempts, unless a test changes it.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// What the notifier and its delivery tasks share: the HTTP client, the
/// counts of notices delivered, given up and still pending, the result hook
/// and the backoff delays.
pub(super) struct DeliveryState {
    http: reqwest::Client,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Notices accepted but not yet delivered or given up.
    pending: AtomicUsize,
    idle: tokio::sync::Notify,
    on_result: RwLock<Option<ResultHook>>,
    first_delay: RwLock<Duration>,
    max_delay: RwLock<Duration>,
}

impl DeliveryState {
    /// Nothing delivered yet, the default backoff, no result hook.
    pub(super) fn new(http: reqwest::Client) -> DeliveryState {
        DeliveryState {
            http,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            on_result: RwLock::new(None),
            first_delay: RwLock::new(DEFAULT_FIRST_DELAY),
            max_delay: RwLock::new(DEFAULT_MAX_DELAY),
        }
    }

    /// Counts a notice put on a queue, until [`Self::done_one`].
    pub(super) fn accepted(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a notice's final outcome and tells the result hook.
    pub(super) fn finish(&self, webhook: &str, ok: bool) {
        if ok {
            self.delivered.fetch_add(1, Ordering::SeqCst);
        } else {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        let hook = self
            .on_result
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        if let Some(f) = hook {
            f(webhook, ok);
        }
    }

    /// A queued notice is settled: wakes a waiting flush.
    pub(super) fn done_one(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.idle.notify_waiters();
    }

    /// Notices delivered (2xx) so far.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Notices given up on or dropped so far.
    pub(super) fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Sets the hook told of each final outcome.
    pub(super) fn set_on_result(&self, f: ResultHook) {
        match self.on_result.write() {
            Ok(mut g) => *g = Some(f),
            Err(e) => *e.into_inner() = Some(f),
        }
    }

    /// Sets the backoff's first delay and cap (the cap is at least the first delay).
    pub(super) fn set_delays(&self, first: Duration, cap: Duration) {
        if let Ok(mut g) = self.first_delay.write() {
            *g = first;
        }
        if let Ok(mut g) = self.max_delay.write() {
            *g = cap.max(first);
        }
    }

    fn delays(&self) -> (Duration, Duration) {
        let read = |l: &RwLock<Duration>| *l.read().unwrap_or_else(|e| e.into_inner());
        (read(&self.first_delay), read(&self.max_delay))
    }

    /// The wait before retry `n` (1-based): exponential from the first delay, capped,
    /// with jitter between half and all of it.
    fn backoff(&self, n: u32) -> Duration {
        let (first, cap) = self.delays();
        let base = first
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(cap);
        base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// Waits (at most `timeout`) until no accepted notice is pending.
    pub(super) async fn wait_idle(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let left = self.pending.load(Ordering::SeqCst);
            if left == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(
                    pending = left,
                    "webhook deliveries still pending after the flush timeout"
                );
                return;
            }
        }
    }
}

/// Sends one webhook's queued notices in order until the notifier is dropped.
pub(super) async fn worker(
    state: std::sync::Arc<DeliveryState>,
    name: String,
    url: reqwest::Url,
    max_attempts: u32,
    mut rx: mpsc::Receiver<Value>,
) {
    while let Some(body) = rx.recv().await {
        let ok = deliver(&state, &name, &url, max_attempts, &body).await;
        state.finish(&name, ok);
        state.done_one();
    }
}

/// Parses `Retry-After` in seconds (HTTP dates are ignored: backoff applies).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: f64 = v.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// One notice to one webhook, with retries; true when it was accepted (2xx).
async fn deliver(
    state: &DeliveryState,
    name: &str,
    url: &reqwest::Url,
    max_attempts: u32,
    body: &Value,
) -> bool {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (why, after) = match state.http.post(url.clone()).json(body).send().await {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(webhook = %name, attempt, "webhook notice delivered");
                return true;
            }
            Ok(resp) => {
                let status = resp.status();
                if !(status.is_server_error() || status.as_u16() == 429) {
                    tracing::warn!(webhook = %name, status = status.as_u16(), attempt,
                        "webhook refused the notice; not retrying");
                    return false;
                }
                (format!("HTTP {}", status.as_u16()), retry_after(&resp))
            }
            // The error's URL is removed: it may carry the webhook's secret.
            Err(e) => (e.without_url().to_string(), None),
        };
        if attempt >= max_attempts {
            tracing::warn!(webhook = %name, attempts = attempt, error = %why,
                "webhook delivery failed; giving up");
            return false;
        }
        let (_, cap) = state.delays();
        let wait = after.map_or_else(|| state.backoff(attempt), |a| a.min(cap));
        tracing::debug!(webhook = %name, attempt, error = %why,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "webhook delivery failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let state = DeliveryState::new(reqwest::Client::new());
        for _ in 0..50 {
            let d = state.backoff(1);
            assert!(d >= Duration::from_millis(250) && d <= Duration::from_millis(500));
            let d = state.backoff(3);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
            let d = state.backoff(30);
            assert!(d >= Duration::from_secs(15) && d <= Duration::from_secs(30));
        }
    }
}
