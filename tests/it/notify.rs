//! Webhook notifications against a local receiver: payload shapes, event
//! filtering, retries, giving up, and that `notify` never waits for delivery.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use entra_remediator::config::{Config, NoticeKind, NotifyConfig, WebhookConfig, WebhookFormat};
use entra_remediator::notify::notice::{Notice, NoticeAction};
use entra_remediator::notify::{Notifier, QUEUE_CAPACITY};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

const FLUSH: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub(crate) struct Recv {
    /// Bodies received, with their content type.
    bodies: Arc<Mutex<Vec<(Value, String)>>>,
    /// Statuses to answer, in order; 200 once exhausted.
    script: Arc<Mutex<VecDeque<u16>>>,
    hits: Arc<AtomicUsize>,
    /// When set, each request reports its arrival and waits for a permit.
    gate: Option<(mpsc::UnboundedSender<()>, Arc<Semaphore>)>,
}

pub(crate) struct Receiver {
    pub(crate) url: String,
    state: Recv,
}

impl Receiver {
    pub(crate) fn bodies(&self) -> Vec<Value> {
        self.state
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| b.clone())
            .collect()
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn handle(
    State(s): State<Recv>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if let Some((arrived, permits)) = &s.gate {
        let _ = arrived.send(());
        permits.acquire().await.unwrap().forget();
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let status = s.script.lock().unwrap().pop_front().unwrap_or(200);
    if status == 200 {
        s.bodies
            .lock()
            .unwrap()
            .push((serde_json::from_str(&body).unwrap(), ct));
    }
    let mut out = HeaderMap::new();
    if status == 429 {
        out.insert("retry-after", "0".parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), out)
}

pub(crate) async fn start(
    script: &[u16],
    gate: Option<(mpsc::UnboundedSender<()>, Arc<Semaphore>)>,
) -> Receiver {
    let state = Recv {
        bodies: Arc::default(),
        script: Arc::new(Mutex::new(script.iter().copied().collect())),
        hits: Arc::default(),
        gate,
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handle))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/hook"),
        state,
    }
}

fn hook(name: &str, url: &str, format: WebhookFormat) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: Some(url.into()),
        url_file: None,
        format,
        events: vec![],
        max_attempts: 5,
    }
}

fn notifier(hooks: Vec<WebhookConfig>) -> Notifier {
    Notifier::new(&NotifyConfig { webhooks: hooks }).unwrap()
}

fn actions(n: i64) -> Vec<NoticeAction> {
    (1..=n)
        .map(|i| NoticeAction {
            id: i,
            kind: "disable_user".into(),
            upn: format!("user{i}@contoso.com"),
            reason: format!("stale account {i}"),
        })
        .collect()
}

fn pending(n: i64) -> Notice {
    Notice::ApprovalPending {
        tenant: "contoso".into(),
        run_id: "run-1".into(),
        actions: actions(n),
    }
}

fn rules_error() -> Notice {
    Notice::RulesError {
        message: "policies/mfa.rhai:3:7: syntax error".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_payload_carries_event_tenant_summary_details_and_time() {
    let r = start(&[], None).await;
    let n = notifier(vec![hook("ops", &r.url, WebhookFormat::Generic)]);
    n.notify(pending(3));
    n.flush(FLUSH).await;
    assert_eq!((n.delivered(), n.failed()), (1, 0));
    let got = r.state.bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (b, ct) = &got[0];
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(b["event"], "approval_pending");
    assert_eq!(b["tenant"], "contoso");
    assert_eq!(
        b["summary"],
        "3 actions wait for approval in tenant contoso"
    );
    assert_eq!(b["details"]["event"], "approval_pending");
    assert_eq!(b["details"]["run_id"], "run-1");
    assert_eq!(b["details"]["actions"].as_array().unwrap().len(), 3);
    assert_eq!(b["details"]["actions"][0]["upn"], "user1@contoso.com");
    assert_eq!(b["details"]["actions"][0]["id"], 1);
    let sent = b["sent_at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(sent).unwrap();

    n.notify(rules_error());
    n.flush(FLUSH).await;
    let b = &r.bodies()[1];
    assert_eq!(b["event"], "rules_error");
    assert!(b["tenant"].is_null());
    assert_eq!(
        b["details"]["message"],
        "policies/mfa.rhai:3:7: syntax error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_payload_lists_ten_actions_and_counts_the_rest() {
    let r = start(&[], None).await;
    let n = notifier(vec![hook("slack", &r.url, WebhookFormat::Slack)]);
    n.notify(pending(12));
    n.flush(FLUSH).await;
    assert_eq!(n.delivered(), 1);
    let b = &r.bodies()[0];
    assert_eq!(b["text"], "12 actions wait for approval in tenant contoso");
    let blocks = b["blocks"].as_array().unwrap();
    for bl in blocks {
        assert_eq!(bl["type"], "section");
        assert_eq!(bl["text"]["type"], "mrkdwn");
    }
    let all: String = blocks
        .iter()
        .map(|bl| bl["text"]["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("`1` disable_user user1@contoso.com"), "{all}");
    assert!(
        all.contains("`10` disable_user user10@contoso.com"),
        "{all}"
    );
    assert!(!all.contains("user11@"), "{all}");
    assert!(all.contains("and 2 more"), "{all}");
    assert!(all.contains("run-1"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_escapes_control_characters() {
    let r = start(&[], None).await;
    let n = notifier(vec![hook("slack", &r.url, WebhookFormat::Slack)]);
    n.notify(Notice::RunDowngraded {
        tenant: "contoso".into(),
        run_id: "run-2".into(),
        reasons: vec!["150 actions > max_actions_per_run 100 <!channel>".into()],
    });
    n.flush(FLUSH).await;
    let b = &r.bodies()[0];
    let text = b["blocks"][1]["text"]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "• 150 actions &gt; max_actions_per_run 100 &lt;!channel&gt;"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn teams_payload_is_an_adaptive_card_message() {
    let r = start(&[], None).await;
    let n = notifier(vec![hook("teams", &r.url, WebhookFormat::Teams)]);
    n.notify(Notice::ActionFailed {
        tenant: "contoso".into(),
        actions: actions(11),
    });
    n.flush(FLUSH).await;
    assert_eq!(n.delivered(), 1);
    let b = &r.bodies()[0];
    assert_eq!(b["type"], "message");
    let att = &b["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    let body = card["body"].as_array().unwrap();
    assert!(
        body.iter()
            .any(|e| e["text"] == "11 actions failed in tenant contoso")
    );
    let facts: Vec<&Value> = body
        .iter()
        .filter(|e| e["type"] == "FactSet")
        .flat_map(|e| e["facts"].as_array().unwrap())
        .collect();
    assert!(
        facts
            .iter()
            .any(|f| f["title"] == "Tenant" && f["value"] == "contoso")
    );
    assert!(facts.iter().any(|f| {
        f["title"] == "#1 disable_user"
            && f["value"]
                .as_str()
                .unwrap()
                .starts_with("user1@contoso.com")
    }));
    assert!(!facts.iter().any(|f| f["title"] == "#11 disable_user"));
    assert!(body.iter().any(|e| e["text"] == "and 1 more"));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_only_get_the_events_they_asked_for() {
    let all = start(&[], None).await;
    let some = start(&[], None).await;
    let mut only_rules = hook("rules-only", &some.url, WebhookFormat::Generic);
    only_rules.events = vec![NoticeKind::RulesError, NoticeKind::ActionFailed];
    let n = notifier(vec![
        hook("all", &all.url, WebhookFormat::Generic),
        only_rules,
    ]);
    n.notify(pending(1));
    n.notify(Notice::RunDowngraded {
        tenant: "contoso".into(),
        run_id: "run-1".into(),
        reasons: vec!["too many".into()],
    });
    n.notify(rules_error());
    n.flush(FLUSH).await;
    let events = |r: &Receiver| -> Vec<String> {
        r.bodies()
            .iter()
            .map(|b| b["event"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        events(&all),
        ["approval_pending", "run_downgraded", "rules_error"]
    );
    assert_eq!(events(&some), ["rules_error"]);
    assert_eq!((n.delivered(), n.failed()), (4, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_with_backoff_until_delivered() {
    let r = start(&[503, 503], None).await;
    let n = notifier(vec![hook("ops", &r.url, WebhookFormat::Generic)]);
    let results = Arc::new(Mutex::new(Vec::new()));
    let rec = results.clone();
    n.on_result(Arc::new(move |name: &str, ok: bool| {
        rec.lock().unwrap().push((name.to_string(), ok))
    }));
    n.notify(pending(2));
    n.flush(FLUSH).await;
    assert_eq!(r.hits(), 3);
    assert_eq!((n.delivered(), n.failed()), (1, 0));
    assert_eq!(r.bodies().len(), 1);
    assert_eq!(*results.lock().unwrap(), [("ops".to_string(), true)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried() {
    let r = start(&[429], None).await;
    let n = notifier(vec![hook("ops", &r.url, WebhookFormat::Generic)]);
    n.set_retry_delays(Duration::from_millis(10), Duration::from_millis(50));
    n.notify(pending(1));
    n.flush(FLUSH).await;
    assert_eq!(r.hits(), 2);
    assert_eq!((n.delivered(), n.failed()), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_gives_up_after_max_attempts() {
    let r = start(&[503; 10], None).await;
    let mut h = hook("ops", &r.url, WebhookFormat::Generic);
    h.max_attempts = 3;
    let n = notifier(vec![h]);
    n.set_retry_delays(Duration::from_millis(10), Duration::from_millis(50));
    let results = Arc::new(Mutex::new(Vec::new()));
    let rec = results.clone();
    n.on_result(Arc::new(move |name: &str, ok: bool| {
        rec.lock().unwrap().push((name.to_string(), ok))
    }));
    n.notify(pending(1));
    n.flush(FLUSH).await;
    assert_eq!(r.hits(), 3);
    assert_eq!((n.delivered(), n.failed()), (0, 1));
    assert_eq!(*results.lock().unwrap(), [("ops".to_string(), false)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_are_not_retried() {
    let r = start(&[400, 200], None).await;
    let n = notifier(vec![hook("ops", &r.url, WebhookFormat::Generic)]);
    n.set_retry_delays(Duration::from_millis(10), Duration::from_millis(50));
    n.notify(pending(1));
    n.flush(FLUSH).await;
    assert_eq!(r.hits(), 1);
    assert_eq!((n.delivered(), n.failed()), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn transport_errors_are_retried_then_counted() {
    // Nothing listens on the discard port.
    let mut h = hook("down", "http://127.0.0.1:9/hook", WebhookFormat::Generic);
    h.max_attempts = 2;
    let n = notifier(vec![h]);
    n.set_retry_delays(Duration::from_millis(10), Duration::from_millis(50));
    n.notify(rules_error());
    n.flush(FLUSH).await;
    assert_eq!((n.delivered(), n.failed()), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_returns_before_the_receiver_answers() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let r = start(&[], Some((arrived_tx, permits.clone()))).await;
    let n = notifier(vec![hook("slow", &r.url, WebhookFormat::Generic)]);
    n.notify(pending(1));
    // The call has returned; the receiver now holds the request without answering.
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n.delivered(), n.failed()), (0, 0));
    assert!(r.bodies().is_empty());
    permits.add_permits(1);
    n.flush(FLUSH).await;
    assert_eq!((n.delivered(), n.failed()), (1, 0));
    assert_eq!(r.bodies().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_drops_notices_and_counts_them_failed() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let r = start(&[], Some((arrived_tx, permits.clone()))).await;
    let n = notifier(vec![hook("slow", &r.url, WebhookFormat::Generic)]);
    // The first notice is taken off the queue and held by the receiver.
    n.notify(pending(1));
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap()
        .unwrap();
    let extra = 20;
    for _ in 0..QUEUE_CAPACITY + extra {
        n.notify(pending(1));
    }
    assert_eq!(n.failed(), extra as u64);
    assert_eq!(n.delivered(), 0);
    permits.add_permits(QUEUE_CAPACITY + 1);
    n.flush(FLUSH).await;
    assert_eq!(n.delivered(), QUEUE_CAPACITY as u64 + 1);
    assert_eq!(n.failed(), extra as u64);
}

#[test]
fn notify_without_a_runtime_drops_and_counts() {
    let n = notifier(vec![hook(
        "ops",
        "http://127.0.0.1:9/hook",
        WebhookFormat::Generic,
    )]);
    n.notify(pending(1));
    assert_eq!((n.delivered(), n.failed()), (0, 1));
}

fn config_with(dir: &Path, webhook: &str) -> Config {
    let text = format!("[[notify.webhook]]\n{webhook}\n");
    Config::parse(&text, &dir.join("config.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn url_file_is_read_relative_to_the_config() {
    let r = start(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slack.url"), format!("{}\n", r.url)).unwrap();
    let cfg = config_with(
        dir.path(),
        "name = \"slack\"\nurl_file = \"slack.url\"\nformat = \"slack\"",
    );
    let n = Notifier::new(&cfg.notify).unwrap();
    assert_eq!(n.webhooks(), ["slack"]);
    n.notify(pending(1));
    n.flush(FLUSH).await;
    assert_eq!(n.delivered(), 1);
    assert_eq!(
        r.bodies()[0]["text"],
        "1 action waits for approval in tenant contoso"
    );
}

#[test]
fn an_unreadable_url_file_names_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(
        dir.path(),
        "name = \"teams-sec\"\nurl_file = \"missing.url\"",
    );
    let err = Notifier::new(&cfg.notify).unwrap_err();
    assert!(err.contains("teams-sec"), "{err}");
    assert!(err.contains("missing.url"), "{err}");
}

#[test]
fn a_bad_url_in_a_url_file_is_an_error_that_does_not_echo_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hook.url"),
        "hooks.slack.com/T0/B0/s3cretpart\n",
    )
    .unwrap();
    let cfg = config_with(dir.path(), "name = \"slack\"\nurl_file = \"hook.url\"");
    let err = Notifier::new(&cfg.notify).unwrap_err();
    assert!(err.contains("slack"), "{err}");
    assert!(!err.contains("s3cretpart"), "{err}");
    std::fs::write(dir.path().join("hook.url"), "  \n").unwrap();
    let err = Notifier::new(&cfg.notify).unwrap_err();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn debug_output_never_shows_urls() {
    let n = notifier(vec![hook(
        "ops",
        "https://hooks.example.com/s3cretpart",
        WebhookFormat::Slack,
    )]);
    let dbg = format!("{n:?}");
    assert!(dbg.contains("ops"), "{dbg}");
    assert!(!dbg.contains("s3cretpart"), "{dbg}");
}
