//! Batches in flight adapt to the tenant: one count for the whole client
//! (concurrent `batch` calls share it), growing past the 4 it starts with when
//! Graph serves a batch's items one after another and nothing is throttled; the
//! executor pipelines its chunks (the next chunk's intents committed and sent
//! while the previous one is answered) and still sends nothing twice when
//! throttled.

use std::collections::HashMap;
use std::time::Duration;

use fake_entra::{FakeTenant, Fault, RecordedRequest, User};
use serde_json::Value;

use crate::common::*;

fn add_users(fake: &FakeTenant, n: u32) -> Vec<Value> {
    (1..=n)
        .map(|k| {
            let upn = format!("u{k}@t.com");
            fake.add_user(User {
                id: guid(k),
                user_principal_name: upn.clone(),
                display_name: upn.clone(),
                user_type: "Member".into(),
                account_enabled: true,
            });
            ident(k, &upn)
        })
        .collect()
}

/// An enforce workspace at the default Graph settings (plus `graph_extra`)
/// whose `n` users each get disable_user and revoke_sessions.
async fn two_writes_each(n: u32, graph_extra: &str) -> (FakeTenant, Workspace) {
    let (fake, ws) = enforce_setup(
        "[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 10000\n",
        graph_extra,
    )
    .await;
    let identities = add_users(&fake, n);
    let ids: Vec<u32> = (1..=n).collect();
    ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "[disable_user(\"stale\"), revoke_sessions(\"stale\")]",
        ),
    );
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            identities,
            vec![finding("F1", "high", &ids)],
        ),
    );
    (fake, ws)
}

/// `$batch` items that are writes and succeeded, by "METHOD path".
fn successful_writes(reqs: &[RecordedRequest]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in reqs
        .iter()
        .filter(|r| r.in_batch && r.method != "GET" && (200..300).contains(&r.status))
    {
        *out.entry(format!("{} {}", r.method, r.path)).or_insert(0) += 1;
    }
    out
}

/// Every user disabled and revoked exactly once, every action done.
async fn each_write_once(fake: &FakeTenant, ws: &Workspace, n: u32) {
    let writes = successful_writes(&fake.requests());
    assert_eq!(writes.len(), 2 * n as usize, "{writes:?}");
    assert!(
        writes.values().all(|&c| c == 1),
        "a write sent twice: {writes:?}"
    );
    for k in 1..=n {
        assert!(!fake.user(&guid(k)).unwrap().account_enabled, "user {k}");
        assert_eq!(fake.revocations(&guid(k)), 1, "user {k}");
    }
    let ws_actions = ws.actions();
    assert_eq!(ws_actions.len(), 2 * n as usize);
    assert!(
        ws_actions.iter().all(|a| a["state"] == "done"),
        "{ws_actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_batch_calls_share_one_window() {
    use entra_remediator::graph::{GraphClient, GraphRequest};

    // max_concurrency = 4: the window starts at 4 and cannot grow.
    let (fake, ws) = enforce_setup("", "max_concurrency = 4\n").await;
    add_users(&fake, 100);
    fake.inject(Fault::Latency {
        matching: "GET /v1.0/users/".into(),
        delay: Duration::from_millis(10),
    });
    let cfg = entra_remediator::config::Config::load(&ws.config_path()).unwrap();
    let tenant = &cfg.tenants[0];
    let graph = GraphClient::new(&tenant.tenant_id, tenant.graph.as_ref().unwrap()).unwrap();
    let reads = |from: u32| -> Vec<GraphRequest> {
        (from..from + 50)
            .flat_map(|k| {
                [
                    GraphRequest::get(format!("/users/{}?$select=id", guid(k))),
                    GraphRequest::get(format!("/users/{}?$select=id,displayName", guid(k))),
                ]
            })
            .collect()
    };
    fake.take_peak_batches_in_flight();
    // Two calls of 5 envelopes each, at once: 10 envelopes wanted, 4 allowed.
    let (a, b) = tokio::join!(graph.batch(reads(1)), graph.batch(reads(51)));
    let peak = fake.take_peak_batches_in_flight();
    assert_eq!(peak, 4, "envelopes in flight over both calls");
    for (answers, from) in [(a, 1), (b, 51)] {
        assert_eq!(answers.len(), 100);
        for (i, ans) in answers.iter().enumerate() {
            let r = ans.as_ref().unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body["id"], guid(from + i as u32 / 2), "answer {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_defaults_more_than_four_batches_fly_when_items_are_served_one_after_another() {
    // Items served one after another (the fake's default), 10 ms each: a full
    // envelope takes 200 ms; nothing is throttled.
    let n = 150;
    let (fake, ws) = two_writes_each(n, "").await;
    fake.inject(Fault::Latency {
        matching: String::new(),
        delay: Duration::from_millis(10),
    });
    fake.take_peak_batches_in_flight();
    let out = ws.cli_async(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let peak = fake.take_peak_batches_in_flight();
    assert!(peak > 4, "at most {peak} envelopes were in flight at once");
    assert!(
        fake.requests().iter().all(|r| r.status != 429),
        "nothing was throttled"
    );
    each_write_once(&fake, &ws, n).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_pipelined_chunks_send_nothing_twice_and_commit_each_intent_before_its_write() {
    // 750 items (250 reads, 500 writes) against 100 items per rolling second;
    // at most 4 batches in flight, so that the writes make at least four
    // chunks (about 100 writes each: a second's worth at the learned pace)
    // whatever the machine's load does to latency.
    let n = 250;
    let (fake, ws) = two_writes_each(n, "max_concurrency = 4\n").await;
    fake.inject(Fault::Latency {
        matching: String::new(),
        delay: Duration::from_millis(5),
    });
    fake.inject(Fault::RateLimit { per_second: 100 });
    let out = ws.cli_async(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let reqs = fake.requests();
    assert!(
        reqs.iter().any(|r| r.in_batch && r.status == 429),
        "the tenant throttled"
    );
    each_write_once(&fake, &ws, n).await;

    // History is in commit order: each action's intent before its outcome.
    // Pipelined, the intents of chunks 2 and 3 are committed before the
    // outcomes of chunk 1, and chunk 4's right after them (I1 I2 I3 O1 I4 O2
    // ...), so more intents precede the first outcome than there are outcomes
    // before the next intent; one chunk at a time, both are chunk 1 (I1 O1 I2).
    let events = ws.events();
    let mut seen_intent = HashMap::new();
    for ev in &events {
        let id = ev["action_id"].as_i64().unwrap_or(0);
        match ev["kind"].as_str().unwrap_or("") {
            "graph_write_intent" => {
                seen_intent.insert(id, true);
            }
            "execution_outcome" => assert!(
                seen_intent.contains_key(&id),
                "action {id}: outcome without an intent before it"
            ),
            _ => {}
        }
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .filter(|k| *k == "graph_write_intent" || *k == "execution_outcome")
        .collect();
    let first_outcome = kinds
        .iter()
        .position(|k| *k == "execution_outcome")
        .unwrap();
    let first_chunk = kinds[first_outcome..]
        .iter()
        .take_while(|k| **k == "execution_outcome")
        .count();
    assert!(
        first_outcome > first_chunk,
        "{first_outcome} intents before the first outcome, {first_chunk} outcomes before the next intent: not pipelined"
    );
}
