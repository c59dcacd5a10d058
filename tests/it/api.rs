//! The daemon's HTTP API through real HTTP: auth, health, metrics, approvals with
//! the same rules as the CLI, run triggers, JSON errors, limits and concurrency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{Duration, Utc};
use entra_remediator::access::{Role, Roles};
use entra_remediator::api::{self, ApiState, DaemonRequest};
use entra_remediator::config::Config;
use entra_remediator::domain::Reason;
use entra_remediator::metrics::{Metrics, RunOutcome};
use entra_remediator::store::{self, Filter, NewAction, NewRun, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{guid, run_bin};

/// The operator token "ci": reads and requests runs, approves nothing.
const TOKEN: &str = "api-test-token-7f3a9c";

/// The secret of the approver token named `who`.
fn secret(who: &str) -> String {
    format!("api-test-token-{who}-51d0")
}

/// The API's tokens: "ci" (operator), "viewer", and the approver tokens alice,
/// bob, carol (in approvals.approvers) and mallory (not in it).
fn tokens() -> Vec<api::NamedToken> {
    let mut set = vec![
        api::NamedToken::new("ci", TOKEN, Roles::of(&[Role::Operator])),
        api::NamedToken::new("viewer", &secret("viewer"), Roles::of(&[Role::Viewer])),
    ];
    for who in ["alice", "bob", "carol", "mallory"] {
        set.push(api::NamedToken::new(
            who,
            &secret(who),
            Roles::of(&[Role::Approver]),
        ));
    }
    set
}

const CONFIG: &str = r#"
[store]
url = "sqlite://h.db"
[approvals]
approvers = ["token:alice", "token:bob", "token:carol"]
four_eyes = ["disable_user"]
[[tenant]]
name = "test"
tenant_id = "11111111-2222-3333-4444-555555555555"
source = { dir = "scans" }
"#;

/// The seeded run's pending actions.
struct Seeded {
    run_id: String,
    revoke: i64,
    mfa: i64,
    removal: i64,
    disable: i64,
}

/// A served API over a fresh store with one run of four pending actions.
struct Harness {
    dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    rx: mpsc::Receiver<DaemonRequest>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    seeded: Seeded,
}

fn action(n: u32, kind: &str, targets: &[&str]) -> NewAction {
    let upn = format!("user{n}@contoso.example");
    NewAction {
        identity_id: guid(n),
        identity_upn: upn.clone(),
        identity_name: format!("User {n}"),
        kind: kind.parse().unwrap(),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        reasons: vec![Reason {
            rule: "stale-admins".into(),
            finding: "F-1".into(),
            reason: format!("{upn} has not signed in for 120 days"),
        }],
        mode: "approval".parse().unwrap(),
        state: "pending".parse().unwrap(),
        state_reason: None,
        expires_at: Some(Utc::now() + Duration::hours(1)),
    }
}

async fn seed(store: &dyn Store) -> Seeded {
    let run_id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    let run = NewRun {
        id: run_id.clone(),
        tenant: "test".into(),
        scan_source: "scans/s.json".into(),
        scan_sha256: "ab".repeat(32),
        scanned_at: now,
        rule_set_hash: "cd".repeat(32),
        mode: "approval".parse().unwrap(),
        downgrades: vec![],
        identities: 4,
        findings: 1,
        started_at: now,
        actor: "system".into(),
        kind: "scan".into(),
    };
    let actions = [
        action(1, "revoke_sessions", &[]),
        action(2, "enforce_mfa", &[]),
        action(3, "remove_role_assignment", &["assignment-3"]),
        action(4, "disable_user", &[]),
    ];
    let ids = store.record_run(&run, &actions, &[]).await.unwrap();
    Seeded {
        run_id,
        revoke: ids[0],
        mfa: ids[1],
        removal: ids[2],
        disable: ids[3],
    }
}

impl Harness {
    async fn start() -> Harness {
        Self::with(64 * 1024, 16).await
    }

    async fn with(max_body: usize, queue: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("config.toml");
        std::fs::write(&cfg_path, CONFIG).unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        let url = format!("sqlite://{}", dir.path().join("h.db").display());
        assert_eq!(cfg.store.url, url);
        let store: Arc<dyn Store> = Arc::from(store::open(&url).await.unwrap());
        let seeded = seed(store.as_ref()).await;
        let (tx, rx) = mpsc::channel(queue);
        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let state = ApiState {
            store: store.clone(),
            config: Arc::new(RwLock::new(Arc::new(cfg))),
            tokens: api::Tokens::new(tokens()),
            metrics: metrics.clone(),
            ready: ready.clone(),
            requests: tx,
        };
        let router = api::router(state, max_body);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Harness {
            dir,
            base,
            http: reqwest::Client::new(),
            store,
            rx,
            ready,
            metrics,
            seeded,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        parse(r).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_with(TOKEN, path, body).await
    }

    /// Posts with the approver token named `who`.
    async fn post_as(&self, who: &str, path: &str, body: Value) -> (u16, Value) {
        self.post_with(&secret(who), path, body).await
    }

    async fn post_with(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        parse(r).await
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        parse(r).await
    }

    async fn state_of(&self, id: i64) -> String {
        self.store
            .action(id)
            .await
            .unwrap()
            .unwrap()
            .state
            .to_string()
    }

    async fn event_count(&self) -> usize {
        self.store.events(&Filter::default()).await.unwrap().len()
    }

    /// Every request the daemon received so far.
    fn drain(&mut self) -> Vec<DaemonRequest> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            out.push(r);
        }
        out
    }
}

async fn parse(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response {status} is not JSON ({e}): {text:?}"));
    (status, v)
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

fn message(v: &Value) -> &str {
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

fn execute(tenant: &str) -> DaemonRequest {
    DaemonRequest::Execute {
        tenant: tenant.into(),
    }
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(parse(r).await, (200, json!({"status": "ok"})));
    // A wrong token does not matter on the probes.
    let r = h
        .http
        .get(h.url("/healthz"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let (status, body) = parse(h.http.get(h.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(code(&body), "not_ready");
    h.ready.store(true, Ordering::SeqCst);
    let (status, body) = parse(h.http.get(h.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));
}

#[tokio::test]
async fn every_other_route_refuses_a_missing_or_wrong_token_with_401() {
    let h = Harness::start().await;
    let before = h.event_count().await;
    let approve = format!("/v1/actions/{}/approve", h.seeded.revoke);
    for path in [
        "/metrics",
        "/v1/approvals",
        "/v1/actions/1",
        "/v1/no-such-route",
    ] {
        for auth in [None, Some("Bearer wrong-token"), Some("Basic YWxpY2U6eA==")] {
            let mut req = h.http.get(h.url(path));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path} with {auth:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let text = r.text().await.unwrap();
            assert!(!text.contains(TOKEN));
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(code(&v), "unauthorized");
        }
    }
    // A token that is a prefix of a real one is still wrong.
    let alice = secret("alice");
    let r = h
        .http
        .post(h.url(&approve))
        .bearer_auth(&alice[..alice.len() - 1])
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(h.state_of(h.seeded.revoke).await, "pending");
    assert_eq!(h.event_count().await, before);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_every_metric_name() {
    let h = Harness::start().await;
    h.metrics.run_finished("test", RunOutcome::Ok, Utc::now());
    h.metrics.actions("disable_user", "done", 2);
    h.metrics.graph_call(204);
    h.metrics
        .throttle_wait(std::time::Duration::from_millis(250));
    h.metrics.rule_errors(1);
    h.metrics.webhook("ops \"slack\"", true);
    let r = h
        .http
        .get(h.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    for name in [
        "runs_total",
        "actions_total",
        "graph_requests_total",
        "graph_throttle_wait_seconds_total",
        "rule_errors_total",
        "webhook_deliveries_total",
        "last_successful_run_timestamp_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE entra_remediator_{name} ")),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("entra_remediator_runs_total{tenant=\"test\",outcome=\"ok\"} 1"));
    assert!(text.contains("entra_remediator_graph_throttle_wait_seconds_total 0.25"));
    assert!(text.contains("webhook=\"ops \\\"slack\\\"\",result=\"success\"} 1"));
}

#[tokio::test]
async fn approvals_lists_pending_actions_with_the_same_fields_as_the_cli() {
    let h = Harness::start().await;
    let (status, body) = h.get("/v1/approvals").await;
    assert_eq!(status, 200);
    let listed = body["actions"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 4);
    let removal = listed.iter().find(|a| a["id"] == h.seeded.removal).unwrap();
    assert_eq!(removal["action"], "remove_role_assignment");
    assert_eq!(removal["targets"], "assignment-3");
    assert_eq!(removal["rules"], "stale-admins");
    assert_eq!(removal["state"], "pending");
    assert_eq!(removal["reasons"][0]["finding"], "F-1");
    assert!(removal["expires_at"].is_string());

    // Exactly what `approvals list --format json` prints.
    let cfg = h.dir.path().join("config.toml");
    let out = run_bin(
        h.dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "approvals",
            "list",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json_lines(), listed);

    let run = &h.seeded.run_id;
    let (_, body) = h.get(&format!("/v1/approvals?tenant=test&run={run}")).await;
    assert_eq!(body["actions"].as_array().unwrap().len(), 4);
    let (_, body) = h.get("/v1/approvals?tenant=other").await;
    assert_eq!(body["actions"], json!([]));
    let (_, body) = h.get(&format!("/v1/approvals?run={}", guid(9))).await;
    assert_eq!(body["actions"], json!([]));

    let (status, body) = h.get("/v1/approvals?tenat=test").await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "invalid_query");
    assert!(message(&body).contains("tenat"), "{body}");
    // The token was only an input: it never comes back.
    assert!(!body.to_string().contains(TOKEN));
}

#[tokio::test]
async fn show_returns_one_action_with_its_approvals_and_history() {
    let h = Harness::start().await;
    let id = h.seeded.revoke;
    let (status, _) = h
        .post_as(
            "alice",
            &format!("/v1/actions/{id}/approve"),
            json!({"comment": "ok by me"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = h.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    assert_eq!(body["action"], "revoke_sessions");
    assert_eq!(body["state"], "approved");
    assert_eq!(body["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(body["approvals"][0]["approver"], "token:alice");
    assert_eq!(body["approvals"][0]["comment"], "ok by me");
    let history = body["history"].as_array().unwrap();
    assert!(history.iter().all(|e| e["action_id"] == id));
    assert_eq!(history.last().unwrap()["state"], "approved");

    let (status, body) = h.get("/v1/actions/999999").await;
    assert_eq!(status, 404);
    assert_eq!(code(&body), "not_found");
    assert_eq!(message(&body), "action 999999 does not exist");

    let (status, body) = h.get("/v1/actions/abc").await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "invalid_id");
}

#[tokio::test]
async fn approving_an_action_approves_it_once_and_asks_the_daemon_to_execute_it() {
    let mut h = Harness::start().await;
    let id = h.seeded.revoke;
    let (status, body) = h
        .post_as("alice", &format!("/v1/actions/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id);
    assert_eq!(body["state"], "approved");
    assert_eq!(body["state_reason"], "approve by token:alice");
    assert_eq!(h.drain(), vec![execute("test")]);

    // A second approval is refused and changes nothing.
    let events = h.event_count().await;
    let (status, body) = h
        .post_as("bob", &format!("/v1/actions/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "not_pending");
    assert!(message(&body).contains("approved, not pending"), "{body}");
    assert_eq!(h.store.approvals(id).await.unwrap().len(), 1);
    assert_eq!(h.event_count().await, events);
    assert_eq!(h.drain(), vec![]);
}

#[tokio::test]
async fn rejecting_an_action_rejects_it_and_requests_no_execution() {
    let mut h = Harness::start().await;
    let id = h.seeded.mfa;
    let (status, body) = h
        .post_as(
            "bob",
            &format!("/v1/actions/{id}/reject"),
            json!({"comment": "false positive"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected");
    let approvals = h.store.approvals(id).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].decision, "reject");
    assert_eq!(approvals[0].comment.as_deref(), Some("false positive"));
    assert_eq!(h.drain(), vec![]);

    let (status, body) = h
        .post_as("bob", &format!("/v1/actions/{id}/reject"), json!({}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "not_pending");
    let (status, _) = h
        .post_as("carol", &format!("/v1/actions/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(h.state_of(id).await, "rejected");
}

#[tokio::test]
async fn refused_decisions_answer_404_403_or_400_and_change_nothing() {
    let mut h = Harness::start().await;
    let id = h.seeded.revoke;
    let events = h.event_count().await;
    let approve = format!("/v1/actions/{id}/approve");

    let (status, body) = h
        .post_as("alice", "/v1/actions/424242/approve", json!({}))
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    assert_eq!(message(&body), "action 424242 does not exist");

    let (status, body) = h.post_as("mallory", &approve, json!({})).await;
    assert_eq!((status, code(&body)), (403, "not_an_approver"));
    assert!(message(&body).contains("\"token:mallory\" is not in approvals.approvers"));
    let (status, _) = h
        .post_as("mallory", &format!("/v1/actions/{id}/reject"), json!({}))
        .await;
    assert_eq!(status, 403);

    // A typed name is refused whatever it says, even the caller's own.
    for body in [
        json!({"by": "alice"}),
        json!({"by": "token:alice", "comment": "me"}),
        json!({"by": ""}),
        json!({"by": null}),
        json!({"by": 5}),
    ] {
        let (status, resp) = h.post_as("alice", &approve, body).await;
        assert_eq!((status, code(&resp)), (400, "by_not_accepted"));
        assert_eq!(
            message(&resp),
            "the API records the calling token's name; remove \"by\""
        );
    }
    // Tokens without the approver role may not decide, with or without a body.
    for token in [TOKEN.to_string(), secret("viewer")] {
        for path in [&approve, &format!("/v1/actions/{id}/reject")] {
            let (status, resp) = h.post_with(&token, path, json!({})).await;
            assert_eq!((status, code(&resp)), (403, "forbidden"));
            assert!(message(&resp).contains("needs the approver role"), "{resp}");
        }
    }
    let (status, body) = h.post_raw(&approve, "application/json", "").await;
    assert_eq!((status, code(&body)), (403, "forbidden"));

    let (status, body) = h.post_as("alice", &approve, json!({"comit": "typo"})).await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    assert!(message(&body).contains("comit"), "{body}");

    assert_eq!(h.state_of(id).await, "pending");
    assert!(h.store.approvals(id).await.unwrap().is_empty());
    assert_eq!(h.event_count().await, events);
    assert_eq!(h.drain(), vec![]);
}

#[tokio::test]
async fn a_four_eyes_action_needs_two_different_approvers() {
    let mut h = Harness::start().await;
    let id = h.seeded.disable;
    let approve = format!("/v1/actions/{id}/approve");
    let (status, body) = h.post_as("alice", &approve, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "pending");
    assert_eq!(h.drain(), vec![]);

    let (status, body) = h.post_as("alice", &approve, json!({})).await;
    assert_eq!((status, code(&body)), (409, "already_approved"));

    let (status, body) = h.post_as("bob", &approve, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "approved");
    assert_eq!(h.drain(), vec![execute("test")]);
    let approvals = h.store.approvals(id).await.unwrap();
    let names: Vec<&str> = approvals.iter().map(|a| a.approver.as_str()).collect();
    assert_eq!(names, vec!["token:alice", "token:bob"]);
    // History records each token's name as the actor, from the API.
    let events = h
        .store
        .events(&Filter {
            action_id: Some(id),
            ..Filter::default()
        })
        .await
        .unwrap();
    let decided: Vec<(&str, Option<&str>)> = events
        .iter()
        .filter(|e| e.actor.starts_with("token:"))
        .map(|e| (e.actor.as_str(), e.state.as_deref()))
        .collect();
    assert_eq!(
        decided,
        vec![
            ("token:alice", Some("pending")),
            ("token:bob", Some("approved"))
        ],
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.actor.starts_with("token:"))
            .all(|e| e.detail.contains("\"interface\":\"api\"")),
        "{events:?}"
    );
}

#[tokio::test]
async fn bulk_run_approval_skips_single_identity_actions_and_lists_them() {
    let mut h = Harness::start().await;
    let s = &h.seeded;
    let (revoke, mfa, removal, disable) = (s.revoke, s.mfa, s.removal, s.disable);
    let path = format!("/v1/runs/{}/approve", s.run_id);

    let (status, body) = h.post_as("mallory", &path, json!({})).await;
    assert_eq!((status, code(&body)), (403, "not_an_approver"));

    let (status, body) = h
        .post_as("alice", &path, json!({"comment": "weekly review"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let decided: Vec<(i64, String)> = body["decided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_i64().unwrap(),
                a["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        vec![
            (revoke, "approved".into()),
            (mfa, "approved".into()),
            // Four eyes: the first of two approvals.
            (disable, "pending".into()),
        ]
    );
    let skipped = body["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["id"], removal);
    assert_eq!(skipped[0]["action"], "remove_role_assignment");
    assert_eq!(h.state_of(removal).await, "pending");
    assert!(h.store.approvals(removal).await.unwrap().is_empty());
    // One execution request per tenant, not per action.
    assert_eq!(h.drain(), vec![execute("test")]);

    // The same person again: the four-eyes action refuses, so nothing changes.
    let events = h.event_count().await;
    let (status, body) = h.post_as("alice", &path, json!({})).await;
    assert_eq!((status, code(&body)), (409, "already_approved"));
    assert_eq!(h.event_count().await, events);

    let (status, body) = h.post_as("bob", &path, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["decided"][0]["id"], disable);
    assert_eq!(body["decided"][0]["state"], "approved");

    // Only the removal is left, and it cannot go in bulk.
    let (status, body) = h.post_as("carol", &path, json!({})).await;
    assert_eq!((status, code(&body)), (409, "nothing_to_decide"));
    assert!(message(&body).contains("single-identity"));

    let (status, body) = h
        .post_as(
            "alice",
            &format!("/v1/runs/{}/approve", guid(77)),
            json!({}),
        )
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn triggering_a_run_queues_it_for_the_daemon() {
    let mut h = Harness::start().await;
    let (status, body) = h
        .post("/v1/runs", json!({"tenant": "test", "force": true}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["accepted"], true);
    assert_eq!(
        h.drain(),
        vec![DaemonRequest::Run {
            tenant: Some("test".into()),
            force: true,
            by: "token:ci".into()
        }]
    );

    let (status, _) = h.post_raw("/v1/runs", "application/json", "").await;
    assert_eq!(status, 202);
    let (status, body) = h.post("/v1/runs", json!({"by": "alice"})).await;
    assert_eq!((status, code(&body)), (400, "by_not_accepted"));
    // An approver-only token may not ask for runs; a viewer neither.
    let (status, body) = h.post_as("alice", "/v1/runs", json!({})).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    assert!(
        message(&body).contains("token:alice may not request runs"),
        "{body}"
    );
    let (status, _) = h.post_as("viewer", "/v1/runs", json!({})).await;
    assert_eq!(status, 403);
    assert_eq!(
        h.drain(),
        vec![DaemonRequest::Run {
            tenant: None,
            force: false,
            by: "token:ci".into()
        }]
    );

    let (status, body) = h.post("/v1/runs", json!({"tenant": "nope"})).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    assert!(message(&body).contains("\"nope\""));
    let (status, body) = h.post("/v1/runs", json!({"force": "yes"})).await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    assert!(message(&body).contains("force"), "{body}");
    assert_eq!(h.drain(), vec![]);
}

#[tokio::test]
async fn a_full_request_queue_refuses_runs_but_not_approvals() {
    let h = Harness::with(64 * 1024, 1).await;
    let (status, _) = h.post("/v1/runs", json!({})).await;
    assert_eq!(status, 202);
    let r = h
        .http
        .post(h.url("/v1/runs"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    // The approval itself succeeded; the periodic executor will pick it up.
    let (status, body) = h
        .post_as(
            "alice",
            &format!("/v1/actions/{}/approve", h.seeded.revoke),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "approved");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json_404_and_405() {
    let h = Harness::start().await;
    let (status, body) = h.get("/v1/nothing-here").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    assert_eq!(message(&body), "no route for GET /v1/nothing-here");

    let (status, body) = h.get("/v1/runs").await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
    let r = h
        .http
        .delete(h.url("/v1/actions/1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET"), "{allow}");
    let (status, body) = parse(r).await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
    let (status, _) = h.post("/v1/approvals", json!({})).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413_and_change_nothing() {
    let h = Harness::with(1024, 16).await;
    let id = h.seeded.revoke;
    let comment = "x".repeat(4096);
    let (status, body) = h
        .post_as(
            "alice",
            &format!("/v1/actions/{id}/approve"),
            json!({"comment": comment}),
        )
        .await;
    assert_eq!((status, code(&body)), (413, "body_too_large"));
    assert!(message(&body).contains("1024 bytes"));
    assert_eq!(h.state_of(id).await, "pending");
    // Just under the limit is fine.
    let (status, _) = h
        .post_as(
            "alice",
            &format!("/v1/actions/{id}/approve"),
            json!({"comment": "y".repeat(900)}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_json_is_refused_with_400_naming_the_problem() {
    let h = Harness::start().await;
    let path = format!("/v1/actions/{}/approve", h.seeded.revoke);
    let (status, body) = h
        .post_raw(&path, "application/json", r#"{"comment": "x","#)
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    assert!(message(&body).contains("EOF"), "{body}");

    let (status, body) = h
        .post_raw(&path, "application/json", r#"{"comment": 5}"#)
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    assert!(
        message(&body).starts_with("invalid JSON body: comment: invalid type"),
        "{body}"
    );

    let (status, body) = h
        .post_raw(&path, "application/json", r#"{"comment": "x"} trailing"#)
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));

    let (status, body) = h.post_raw(&path, "text/plain", r#"{"comment": "x"}"#).await;
    assert_eq!((status, code(&body)), (415, "unsupported_media_type"));

    assert_eq!(h.state_of(h.seeded.revoke).await, "pending");
}

/// Sends `n` approvals of one action at once, approvers taken in turn from `by`.
async fn concurrent_approvals(h: &Harness, id: i64, n: usize, by: &[&str]) -> Vec<(u16, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, url, barrier) = (
            h.http.clone(),
            h.url(&format!("/v1/actions/{id}/approve")),
            barrier.clone(),
        );
        let who = by[i % by.len()].to_string();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = http
                .post(url)
                .bearer_auth(secret(&who))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            parse(r).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_approvals_of_one_action_succeed_once_and_execute_once() {
    let mut h = Harness::start().await;
    let id = h.seeded.revoke;
    let results = concurrent_approvals(&h, id, 20, &["alice", "bob", "carol"]).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let conflicts: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok, 1, "{results:?}");
    assert_eq!(conflicts.len(), 19, "{results:?}");
    assert!(conflicts.iter().all(|b| code(b) == "not_pending"));
    assert_eq!(h.store.approvals(id).await.unwrap().len(), 1);
    assert_eq!(h.state_of(id).await, "approved");
    let approved_events = h
        .store
        .events(&Filter {
            action_id: Some(id),
            state: Some("approved".into()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(approved_events.len(), 1);
    assert_eq!(h.drain(), vec![execute("test")]);
    assert!(h.store.verify().await.unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_four_eyes_approvals_record_exactly_two_different_approvers() {
    let mut h = Harness::start().await;
    let id = h.seeded.disable;
    let results = concurrent_approvals(&h, id, 20, &["alice", "bob"]).await;
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok.len(), 2, "{results:?}");
    let mut states: Vec<&str> = ok.iter().map(|b| b["state"].as_str().unwrap()).collect();
    states.sort();
    assert_eq!(states, vec!["approved", "pending"]);
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 409).count(),
        18,
        "{results:?}"
    );
    let mut approvers: Vec<String> = h
        .store
        .approvals(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.approver)
        .collect();
    approvers.sort();
    assert_eq!(approvers, vec!["token:alice", "token:bob"]);
    assert_eq!(h.state_of(id).await, "approved");
    assert_eq!(h.drain(), vec![execute("test")]);
}

/// One HTTP/1.1 request over a Unix socket; returns the status line and body.
async fn unix_request(path: &std::path::Path, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test]
async fn the_api_serves_on_a_unix_socket_and_removes_it_on_shutdown() {
    let h = Harness::start().await;
    let sock = h.dir.path().join("api.sock");
    // A stale socket from a stopped process is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());

    let state = ApiState {
        store: h.store.clone(),
        config: Arc::new(RwLock::new(Arc::new(
            Config::load(&h.dir.path().join("config.toml")).unwrap(),
        ))),
        tokens: api::Tokens::new(tokens()),
        metrics: h.metrics.clone(),
        ready: h.ready.clone(),
        requests: mpsc::channel(1).0,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listen = format!("unix:{}", sock.display());
    let server = tokio::spawn(async move {
        api::serve(&listen, api::router(state, 1024), async move {
            let _ = stopped.await;
        })
        .await
    });
    for _ in 0..100 {
        if tokio::net::UnixStream::connect(&sock).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let (status, body) = unix_request(
        &sock,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, r#"{"status":"ok"}"#);
    let (status, _) = unix_request(
        &sock,
        "GET /v1/approvals HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    let (status, body) = unix_request(
        &sock,
        &format!(
            "GET /v1/approvals HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["actions"].as_array().unwrap().len(), 4);

    // A second server on the same live socket is refused.
    let dup = api::serve(
        &format!("unix:{}", sock.display()),
        axum::Router::new(),
        async {},
    )
    .await
    .unwrap_err();
    assert_eq!(dup.kind(), std::io::ErrorKind::AddrInUse);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!sock.exists());
}

#[tokio::test]
async fn serve_refuses_to_replace_a_file_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = api::serve(
        &format!("unix:{}", file.display()),
        axum::Router::new(),
        async {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overdue_approval_is_never_read_as_pending() {
    let h = Harness::start().await;
    let now = Utc::now();
    let run = NewRun {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: "test".into(),
        scan_source: "scans/s2.json".into(),
        scan_sha256: "ef".repeat(32),
        scanned_at: now,
        rule_set_hash: "cd".repeat(32),
        mode: "approval".parse().unwrap(),
        downgrades: vec![],
        identities: 2,
        findings: 1,
        started_at: now,
        actor: "system".into(),
        kind: "scan".into(),
    };
    let overdue = |n| NewAction {
        expires_at: Some(now - Duration::seconds(1)),
        ..action(n, "disable_user", &[])
    };
    let ids = h
        .store
        .record_run(&run, &[overdue(7), overdue(8)], &[])
        .await
        .unwrap();
    // Listing expires what is overdue (the daemon's timer may not have run yet).
    let (s, v) = h.get("/v1/approvals").await;
    assert_eq!(s, 200);
    let listed: Vec<i64> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert!(
        !listed.contains(&ids[0]) && !listed.contains(&ids[1]),
        "{listed:?}"
    );
    assert!(listed.contains(&h.seeded.disable), "{listed:?}");
    assert_eq!(h.state_of(ids[0]).await, "expired");
    // So does showing one.
    let h2 = Harness::start().await;
    let ids = h2.store.record_run(&run, &[overdue(9)], &[]).await.unwrap();
    let (s, v) = h2.get(&format!("/v1/actions/{}", ids[0])).await;
    assert_eq!(s, 200);
    assert_eq!(v["state"], "expired", "{v}");
}
