//! Webhook notifications: approvals waiting, runs held back by a guardrail, failed
//! actions and broken rule sets are POSTed as JSON to the configured webhooks.
//!
//! Delivery never holds up a run: [`Notifier::notify`] only puts the notice on a
//! bounded queue per webhook (a full queue drops it with a warning), and a background
//! task per webhook sends the queued notices in order. Each POST has a 10 s timeout;
//! 5xx, 429 (honouring `Retry-After`) and transport errors are retried with
//! exponential backoff and jitter (from 0.5 s, capped at 30 s) up to the webhook's
//! `max_attempts`; other answers are not retried. Webhook URLs are secrets for Slack
//! and Teams, so logs and errors name the webhook, never its URL.
//!
//! Payload formats ([`payload`]):
//!
//! - `generic`: `{"event", "tenant", "summary", "details", "sent_at"}`, where
//!   `details` is the [`Notice`] itself (with its `event` tag) and `sent_at` RFC 3339.
//! - `slack`: an incoming-webhook message, `{"text": summary, "blocks": [...]}`, with
//!   mrkdwn sections listing up to 10 actions and "and N more".
//! - `teams`: an Adaptive Card (version 1.4) in the
//!   `{"type": "message", "attachments": [{"contentType":
//!   "application/vnd.microsoft.card.adaptive", "content": {...}}]}` envelope that
//!   Teams Workflows ("Post to a channel when a webhook request is received") accept;
//!   the retired Office 365 connector MessageCard is not produced.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::{NoticeKind, NotifyConfig, WebhookConfig, WebhookFormat};

/// Notices queued per webhook before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 256;
/// Timeout of one POST.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Actions listed by name in Slack and Teams messages; the rest are counted.
pub const MAX_LISTED_ACTIONS: usize = 10;
const DEFAULT_FIRST_DELAY: Duration = Duration::from_millis(500);
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// Something worth telling people about.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    /// Actions of a run wait for approval.
    ApprovalPending {
        /// The tenant's configured name.
        tenant: String,
        /// The run that planned them.
        run_id: String,
        /// The actions waiting.
        actions: Vec<NoticeAction>,
    },
    /// A guardrail held a run for approval.
    RunDowngraded {
        /// The tenant's configured name.
        tenant: String,
        /// The run held back.
        run_id: String,
        /// Why, one line per guardrail.
        reasons: Vec<String>,
    },
    /// Actions failed to execute.
    ActionFailed {
        /// The tenant's configured name.
        tenant: String,
        /// The failed actions, with the failure as `reason`.
        actions: Vec<NoticeAction>,
    },
    /// The rule set could not be loaded.
    RulesError {
        /// What is wrong.
        message: String,
    },
}

/// One action mentioned in a notice.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NoticeAction {
    /// The action's id (as in `approvals show ID`).
    pub id: i64,
    /// The action kind, e.g. `disable_user`.
    pub kind: String,
    /// The identity's user principal name.
    pub upn: String,
    /// Why it was planned, or why it failed.
    pub reason: String,
}

impl Notice {
    /// The event kind, as used in `notify.webhook.events`.
    pub fn kind(&self) -> NoticeKind {
        match self {
            Notice::ApprovalPending { .. } => NoticeKind::ApprovalPending,
            Notice::RunDowngraded { .. } => NoticeKind::RunDowngraded,
            Notice::ActionFailed { .. } => NoticeKind::ActionFailed,
            Notice::RulesError { .. } => NoticeKind::RulesError,
        }
    }

    /// The event name, e.g. `approval_pending`.
    pub fn event(&self) -> &'static str {
        match self.kind() {
            NoticeKind::ApprovalPending => "approval_pending",
            NoticeKind::RunDowngraded => "run_downgraded",
            NoticeKind::ActionFailed => "action_failed",
            NoticeKind::RulesError => "rules_error",
        }
    }

    /// The tenant concerned, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Notice::ApprovalPending { tenant, .. }
            | Notice::RunDowngraded { tenant, .. }
            | Notice::ActionFailed { tenant, .. } => Some(tenant),
            Notice::RulesError { .. } => None,
        }
    }

    /// One line for people, e.g. "3 actions wait for approval in tenant contoso".
    pub fn summary(&self) -> String {
        let n_actions = |n: usize| {
            if n == 1 {
                "1 action".to_string()
            } else {
                format!("{n} actions")
            }
        };
        match self {
            Notice::ApprovalPending {
                tenant, actions, ..
            } => {
                let verb = if actions.len() == 1 { "waits" } else { "wait" };
                format!(
                    "{} {verb} for approval in tenant {tenant}",
                    n_actions(actions.len())
                )
            }
            Notice::RunDowngraded { tenant, run_id, .. } => {
                format!("Run {run_id} in tenant {tenant} was held for approval by a guardrail")
            }
            Notice::ActionFailed { tenant, actions } => {
                format!("{} failed in tenant {tenant}", n_actions(actions.len()))
            }
            Notice::RulesError { message } => {
                let first = message.lines().next().unwrap_or_default();
                format!("The rule set could not be loaded: {}", clip(first, 200))
            }
        }
    }

    fn actions(&self) -> &[NoticeAction] {
        match self {
            Notice::ApprovalPending { actions, .. } | Notice::ActionFailed { actions, .. } => {
                actions
            }
            _ => &[],
        }
    }

    fn run_id(&self) -> Option<&str> {
        match self {
            Notice::ApprovalPending { run_id, .. } | Notice::RunDowngraded { run_id, .. } => {
                Some(run_id)
            }
            _ => None,
        }
    }
}

/// The JSON body sent to a webhook of the given format.
pub fn payload(format: WebhookFormat, notice: &Notice) -> Value {
    match format {
        WebhookFormat::Generic => generic_payload(notice),
        WebhookFormat::Slack => slack_payload(notice),
        WebhookFormat::Teams => teams_payload(notice),
    }
}

fn generic_payload(n: &Notice) -> Value {
    json!({
        "event": n.event(),
        "tenant": n.tenant(),
        "summary": n.summary(),
        "details": serde_json::to_value(n).unwrap_or(Value::Null),
        "sent_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Cuts `s` to at most `max` characters, marking the cut with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn mrkdwn(text: String) -> Value {
    // Slack refuses section texts over 3000 characters.
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}})
}

fn slack_payload(n: &Notice) -> Value {
    let summary = n.summary();
    let mut head = format!("*{}*", slack_escape(&summary));
    if let Some(run) = n.run_id() {
        head.push_str(&format!("\nRun `{}`", slack_escape(run)));
    }
    let mut blocks = vec![mrkdwn(head)];
    match n {
        Notice::RunDowngraded { reasons, .. } => {
            let lines: Vec<String> = reasons
                .iter()
                .map(|r| format!("• {}", slack_escape(&clip(r, 300))))
                .collect();
            if !lines.is_empty() {
                blocks.push(mrkdwn(lines.join("\n")));
            }
        }
        Notice::RulesError { message } => {
            blocks.push(mrkdwn(format!(
                "```{}```",
                slack_escape(&clip(message, 2800))
            )));
        }
        _ => {}
    }
    let actions = n.actions();
    if !actions.is_empty() {
        let lines: Vec<String> = actions
            .iter()
            .take(MAX_LISTED_ACTIONS)
            .map(|a| {
                format!(
                    "• `{}` {} {} — {}",
                    a.id,
                    slack_escape(&a.kind),
                    slack_escape(&a.upn),
                    slack_escape(&clip(&a.reason, 120))
                )
            })
            .collect();
        blocks.push(mrkdwn(lines.join("\n")));
        if actions.len() > MAX_LISTED_ACTIONS {
            blocks.push(mrkdwn(format!(
                "and {} more",
                actions.len() - MAX_LISTED_ACTIONS
            )));
        }
    }
    json!({"text": summary, "blocks": blocks})
}

fn text_block(text: impl Into<String>) -> Value {
    json!({"type": "TextBlock", "text": text.into(), "wrap": true})
}

fn teams_payload(n: &Notice) -> Value {
    let title = match n.kind() {
        NoticeKind::ApprovalPending => "Approval needed",
        NoticeKind::RunDowngraded => "Run held for approval",
        NoticeKind::ActionFailed => "Actions failed",
        NoticeKind::RulesError => "Rule set error",
    };
    let color = match n.kind() {
        NoticeKind::ApprovalPending | NoticeKind::RunDowngraded => "Warning",
        NoticeKind::ActionFailed | NoticeKind::RulesError => "Attention",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "text": format!("entra-remediator: {title}"),
               "weight": "Bolder", "size": "Medium", "color": color, "wrap": true}),
        text_block(n.summary()),
    ];
    let mut facts = Vec::new();
    if let Some(t) = n.tenant() {
        facts.push(json!({"title": "Tenant", "value": t}));
    }
    if let Some(r) = n.run_id() {
        facts.push(json!({"title": "Run", "value": r}));
    }
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    match n {
        Notice::RunDowngraded { reasons, .. } => {
            for r in reasons {
                body.push(text_block(format!("- {}", clip(r, 300))));
            }
        }
        Notice::RulesError { message } => {
            body.push(json!({"type": "TextBlock", "text": clip(message, 2800),
                             "wrap": true, "fontType": "Monospace"}));
        }
        _ => {}
    }
    let actions = n.actions();
    if !actions.is_empty() {
        let facts: Vec<Value> = actions
            .iter()
            .take(MAX_LISTED_ACTIONS)
            .map(|a| {
                json!({"title": format!("#{} {}", a.id, a.kind),
                       "value": format!("{} — {}", a.upn, clip(&a.reason, 120))})
            })
            .collect();
        body.push(json!({"type": "FactSet", "facts": facts, "separator": true}));
        if actions.len() > MAX_LISTED_ACTIONS {
            body.push(text_block(format!(
                "and {} more",
                actions.len() - MAX_LISTED_ACTIONS
            )));
        }
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "msteams": {"width": "Full"},
            },
        }],
    })
}

/// A delivery outcome callback: (webhook name, delivered).
pub type ResultHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// State shared by the notifier and its delivery tasks.
struct Shared {
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

impl Shared {
    fn finish(&self, webhook: &str, ok: bool) {
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

    fn done_one(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.idle.notify_waiters();
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
}

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
    shared: Arc<Shared>,
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
            .field("failed", &self.failed())
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
            shared: Arc::new(Shared {
                http,
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                pending: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                on_result: RwLock::new(None),
                first_delay: RwLock::new(DEFAULT_FIRST_DELAY),
                max_delay: RwLock::new(DEFAULT_MAX_DELAY),
            }),
        })
    }

    /// Changes the retry backoff (first delay and cap; defaults 0.5 s and 30 s), for tests.
    pub fn set_retry_delays(&self, first: Duration, cap: Duration) {
        if let Ok(mut g) = self.shared.first_delay.write() {
            *g = first;
        }
        if let Ok(mut g) = self.shared.max_delay.write() {
            *g = cap.max(first);
        }
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
                self.shared.finish(&hook.name, false);
                continue;
            }
            let body = payload(hook.format, &n);
            self.shared.pending.fetch_add(1, Ordering::SeqCst);
            match hook.tx.try_send(body) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(webhook = %hook.name, event = n.event(),
                        capacity = QUEUE_CAPACITY, "webhook queue is full; notice dropped");
                    self.shared.finish(&hook.name, false);
                    self.shared.done_one();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!(webhook = %hook.name, event = n.event(),
                        "webhook delivery task has stopped; notice dropped");
                    self.shared.finish(&hook.name, false);
                    self.shared.done_one();
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
            let shared = Arc::clone(&self.shared);
            let name = hook.name.clone();
            let url = hook.url.clone();
            let attempts = hook.max_attempts;
            rt.spawn(worker(shared, name, url, attempts, rx));
        }
        true
    }

    /// Waits (at most `timeout`) until queued deliveries are finished; for shutdown and tests.
    pub async fn flush(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let left = self.shared.pending.load(Ordering::SeqCst);
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

    /// Notices delivered (2xx) so far, over all webhooks.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::SeqCst)
    }

    /// Notices given up on or dropped so far, over all webhooks.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Called after each delivery attempt outcome (webhook name, ok): lets the daemon feed its metrics.
    ///
    /// It is called once per notice and webhook with the final outcome: delivered,
    /// given up after retries, refused, or dropped because the queue was full.
    pub fn on_result(&self, f: ResultHook) {
        match self.shared.on_result.write() {
            Ok(mut g) => *g = Some(f),
            Err(e) => *e.into_inner() = Some(f),
        }
    }
}

/// Sends one webhook's queued notices in order until the notifier is dropped.
async fn worker(
    shared: Arc<Shared>,
    name: String,
    url: reqwest::Url,
    max_attempts: u32,
    mut rx: mpsc::Receiver<Value>,
) {
    while let Some(body) = rx.recv().await {
        let ok = deliver(&shared, &name, &url, max_attempts, &body).await;
        shared.finish(&name, ok);
        shared.done_one();
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
    shared: &Shared,
    name: &str,
    url: &reqwest::Url,
    max_attempts: u32,
    body: &Value,
) -> bool {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (why, after) = match shared.http.post(url.clone()).json(body).send().await {
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
        let (_, cap) = shared.delays();
        let wait = after.map_or_else(|| shared.backoff(attempt), |a| a.min(cap));
        tracing::debug!(webhook = %name, attempt, error = %why,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "webhook delivery failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(n: i64) -> Vec<NoticeAction> {
        (1..=n)
            .map(|i| NoticeAction {
                id: i,
                kind: "disable_user".into(),
                upn: format!("u{i}@contoso.com"),
                reason: "stale".into(),
            })
            .collect()
    }

    #[test]
    fn summaries_count_actions() {
        let n = Notice::ApprovalPending {
            tenant: "contoso".into(),
            run_id: "r1".into(),
            actions: actions(3),
        };
        assert_eq!(n.summary(), "3 actions wait for approval in tenant contoso");
        let n = Notice::ApprovalPending {
            tenant: "contoso".into(),
            run_id: "r1".into(),
            actions: actions(1),
        };
        assert_eq!(n.summary(), "1 action waits for approval in tenant contoso");
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let n = Notifier::new(&NotifyConfig::default()).unwrap();
        for _ in 0..50 {
            let d = n.shared.backoff(1);
            assert!(d >= Duration::from_millis(250) && d <= Duration::from_millis(500));
            let d = n.shared.backoff(3);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
            let d = n.shared.backoff(30);
            assert!(d >= Duration::from_secs(15) && d <= Duration::from_secs(30));
        }
    }

    #[test]
    fn clip_marks_the_cut() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
