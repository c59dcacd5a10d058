//! Webhook notifications: approvals waiting, runs held back by a guardrail, failed
//! actions and broken rule sets are POSTed as JSON to the configured webhooks.
//!
//! Delivery never holds up a run: [`Notifier::notify`] only puts the notice on a
//! bounded queue per webhook (a full queue drops it with a warning), and a background
//! task per webhook sends the queued notices in order (`delivery`). Each POST has a
//! 10 s timeout; 5xx, 429 (honouring `Retry-After`) and transport errors are retried
//! with exponential backoff and jitter (from 0.5 s, capped at 30 s) up to the webhook's
//! `max_attempts`; other answers are not retried. Webhook URLs are secrets for Slack
//! and Teams, so logs and errors name the webhook, never its URL.
//!
//! The [`notice`]s are sent in the webhook's format ([`format::payload`]).

mod delivery;
pub mod format;
pub mod notice;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::{NoticeKind, NotifyConfig, WebhookConfig, WebhookFormat};
use delivery::DeliveryState;
use notice::Notice;

/// Notices queued per webhook before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 256;
/// Timeout of one POST.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A delivery outcome callback: (webhook name, delivered).
pub type ResultHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// One webhook with its resolved URL and its queue.
struct Hook {
    name: String,
    format: WebhookFormat,
    events: Vec<NoticeKind>,
    max_attempts: u32,
    url: reqwest::Url,
    tx: mpsc::Sender<Value>,
    /// The queue's receiving end until the delivery task is started (on first use,
    /// so that `new` needs no runtime).
    rx: Mutex<Option<mpsc::Receiver<Value>>>,
}

/// Delivers notices to the configured webhooks in the background.
#[derive(Clone)]
pub struct Notifier {
    hooks: Arc<Vec<Hook>>,
    deliveries: Arc<DeliveryState>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URLs: they are secrets for Slack and Teams.
        f.debug_struct("Notifier")
            .field(
                "webhooks",
                &self.hooks.iter().map(|h| &h.name).collect::<Vec<_>>(),
            )
            .field("delivered", &self.delivered())
            .field("failed", &self.failed()) // deliveries, not an action state
            .finish()
    }
}

fn resolve_url(w: &WebhookConfig) -> Result<reqwest::Url, String> {
    let raw = match (&w.url, &w.url_file) {
        (Some(u), _) => u.trim().to_string(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| {
                format!(
                    "webhook {:?}: cannot read url_file {}: {e}",
                    w.name,
                    p.display()
                )
            })?
            .trim()
            .to_string(),
        (None, None) => return Err(format!("webhook {:?}: no url or url_file", w.name)),
    };
    let from = if w.url.is_some() { "url" } else { "url_file" };
    if raw.is_empty() {
        return Err(format!("webhook {:?}: {from} is empty", w.name));
    }
    // The URL itself stays out of the messages: it may carry a secret.
    let url = reqwest::Url::parse(&raw)
        .map_err(|e| format!("webhook {:?}: {from} is not a valid URL: {e}", w.name))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "webhook {:?}: {from} must be an http(s) URL",
            w.name
        ));
    }
    Ok(url)
}

impl Notifier {
    /// Reads URLs (url or url_file) now; an unreadable url_file is an error naming the webhook.
    pub fn new(cfg: &NotifyConfig) -> Result<Notifier, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            // A redirected POST would turn into a GET; treat 3xx as an answer instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("entra-remediator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        let mut hooks = Vec::with_capacity(cfg.webhooks.len());
        for w in &cfg.webhooks {
            let url = resolve_url(w)?;
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            hooks.push(Hook {
                name: w.name.clone(),
                format: w.format,
                events: w.events.clone(),
                max_attempts: w.max_attempts.max(1),
                url,
                tx,
                rx: Mutex::new(Some(rx)),
            });
        }
        Ok(Notifier {
            hooks: Arc::new(hooks),
            deliveries: Arc::new(DeliveryState::new(http)),
        })
    }

    /// Changes the retry backoff (first delay and cap; defaults 0.5 s and 30 s), for tests.
    pub fn set_retry_delays(&self, first: Duration, cap: Duration) {
        self.deliveries.set_delays(first, cap);
    }

    /// The configured webhook names, in order.
    pub fn webhooks(&self) -> Vec<String> {
        self.hooks.iter().map(|h| h.name.clone()).collect()
    }

    /// Never blocks and never fails the caller: queues the notice for every webhook that wants its kind.
    pub fn notify(&self, n: Notice) {
        let kind = n.kind();
        for hook in self.hooks.iter() {
            if !hook.events.is_empty() && !hook.events.contains(&kind) {
                continue;
            }
            if !self.start_worker(hook) {
                tracing::warn!(webhook = %hook.name, event = n.event(),
                    "no async runtime to deliver the notice; dropped");
                self.deliveries.finish(&hook.name, false);
                continue;
            }
            let body = format::payload(hook.format, &n);
            self.deliveries.accepted();
            match hook.tx.try_send(body) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(webhook = %hook.name, event = n.event(),
                        capacity = QUEUE_CAPACITY, "webhook queue is full; notice dropped");
                    self.deliveries.finish(&hook.name, false);
                    self.deliveries.done_one();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!(webhook = %hook.name, event = n.event(),
                        "webhook delivery task has stopped; notice dropped");
                    self.deliveries.finish(&hook.name, false);
                    self.deliveries.done_one();
                }
            }
        }
    }

    /// Starts the hook's delivery task if it is not running; false without a runtime.
    fn start_worker(&self, hook: &Hook) -> bool {
        let mut rx = match hook.rx.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        if rx.is_none() {
            return true;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if let Some(rx) = rx.take() {
            let deliveries = Arc::clone(&self.deliveries);
            let name = hook.name.clone();
            let url = hook.url.clone();
            let attempts = hook.max_attempts;
            rt.spawn(delivery::worker(deliveries, name, url, attempts, rx));
        }
        true
    }

    /// Waits (at most `timeout`) until queued deliveries are finished; for shutdown and tests.
    pub async fn flush(&self, timeout: Duration) {
        self.deliveries.wait_idle(timeout).await;
    }

    /// Notices delivered (2xx) so far, over all webhooks.
    pub fn delivered(&self) -> u64 {
        self.deliveries.delivered()
    }

    /// Notices given up on or dropped so far, over all webhooks.
    pub fn failed(&self) -> u64 {
        self.deliveries.failed()
    }

    /// Called after each delivery attempt outcome (webhook name, ok): lets the daemon feed its metrics.
    ///
    /// It is called once per notice and webhook with the final outcome: delivered,
    /// given up after retries, refused, or dropped because the queue was full.
    pub fn on_result(&self, f: ResultHook) {
        self.deliveries.set_on_result(f);
    }
}
