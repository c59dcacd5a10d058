//! The users of an execution pass are read by id, up to 15 per
//! `GET /users?$filter=id in (...)` inside the pass's `$batch`, never one GET
//! per user, against the fake tenant: gone users fail, protection still refuses
//! from the live read, a throttled or failed read is retried without anything
//! written twice, and `User.Read.All` is all the read needs.

use std::collections::BTreeSet;

use fake_entra::{FakeTenant, Fault, RecordedRequest, User};
use serde_json::Value;

use crate::common::*;

struct Env {
    fake: FakeTenant,
    ws: Workspace,
}

fn user(n: u32) -> User {
    User {
        id: guid(n),
        user_principal_name: format!("u{n}@t.com"),
        display_name: format!("u{n}"),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

/// Enforce mode against a fake tenant; `protected` is TOML for `[protected]`.
async fn env(protected: &str, graph_extra: &str) -> Env {
    let (fake, ws) = enforce_setup(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 5000\n[protected]\n{protected}\n"
    ), graph_extra).await;
    Env { fake, ws }
}

impl Env {
    async fn cli(&self, args: &[&str]) -> Output {
        self.ws.cli_async(args).await
    }

    /// Users 1..=n in the tenant and in a fresh scan, each proposed `expr`.
    fn users_and_scan(&self, n: u32, expr: &str) {
        for k in 1..=n {
            self.fake.add_user(user(k));
        }
        self.ws.add_rule("r.rhai", &rule("r", "F1", expr));
        let all: Vec<u32> = (1..=n).collect();
        self.ws.add_scan(
            "s.json",
            &scan(
                &now_rfc3339(),
                all.iter()
                    .map(|&k| ident(k, &format!("u{k}@t.com")))
                    .collect(),
                vec![finding("F1", "high", &all)],
            ),
        );
    }

    /// The reads of users by id the fake received (batch items or direct).
    fn by_ids(&self) -> Vec<RecordedRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(is_users_read)
            .collect()
    }

    /// Per-user reads (`GET /users/{id}...`), which the executor no longer sends.
    fn user_gets(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/v1.0/users/"))
            .filter(|r| !r.path.ends_with("/transitiveMemberOf"))
            .count()
    }

    fn writes(&self) -> Vec<RecordedRequest> {
        self.fake.requests().into_iter().filter(is_write).collect()
    }

    /// Each action's (identity id, state, reason).
    fn states(&self) -> Vec<(String, String, String)> {
        self.ws
            .actions()
            .iter()
            .map(|a| {
                let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
                (s("identity_id"), s("state"), s("state_reason"))
            })
            .collect()
    }

    /// The calls recorded with each action's outcome, by action id.
    fn outcome_calls(&self) -> Vec<(i64, Vec<Value>)> {
        self.ws
            .events()
            .into_iter()
            .filter(|e| e["kind"] == "execution_outcome")
            .map(|e| {
                let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
                let calls = d["calls"].as_array().cloned().unwrap_or_default();
                (e["action_id"].as_i64().unwrap(), calls)
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_reads_its_users_fifteen_per_filter_and_gone_users_fail() {
    let e = env("", "").await;
    e.users_and_scan(1_201, "disable_user(\"x\")");
    // Deleted after the scan, before execution.
    e.fake.delete_user(&guid(7));
    e.fake.delete_user(&guid(1_100));
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 1, "two actions failed: {}", out.all());

    let reads = e.by_ids();
    assert_eq!(reads.len(), 81, "ceil(1201 / 15) reads");
    assert!(reads.iter().all(|r| r.in_batch));
    let mut sizes: Vec<usize> = reads.iter().map(|r| users_read_ids(r).len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes[0], 1);
    assert!(sizes[1..].iter().all(|&n| n == 15), "{sizes:?}");
    let every: BTreeSet<String> = reads.iter().flat_map(users_read_ids).collect();
    assert_eq!(every, (1..=1_201).map(guid).collect::<BTreeSet<_>>());
    for r in &reads {
        let q = r.query.as_deref().unwrap_or("");
        assert!(q.contains("accountEnabled"), "{q}");
        assert_eq!(r.status, 200);
    }
    assert_eq!(e.user_gets(), 0, "no per-user GET");

    let states = e.states();
    assert_eq!(states.len(), 1_201);
    for (id, state, reason) in &states {
        if *id == guid(7) || *id == guid(1_100) {
            assert_eq!(state, "failed", "{id}: {reason}");
            assert!(
                reason.contains("no longer exists in the tenant"),
                "{reason}"
            );
        } else {
            assert_eq!(state, "done", "{id}: {reason}");
        }
    }
    let writes = e.writes();
    assert_eq!(writes.len(), 1_199);
    assert!(writes.iter().all(|w| w.method == "PATCH"));
    assert!(
        !writes
            .iter()
            .any(|w| w.path.ends_with(&guid(7)) || w.path.ends_with(&guid(1_100)))
    );
    // History keeps the read each decision was based on, without its body.
    let calls = e.outcome_calls();
    assert_eq!(calls.len(), 1_201);
    for (id, calls) in &calls {
        let read = &calls[0];
        assert!(
            read["request"]
                .as_str()
                .unwrap()
                .starts_with("GET /users?$filter=id%20in%20("),
            "{id}: {read}"
        );
        assert_eq!(read["status"], 200, "{id}: {read}");
        assert!(read.get("body").is_none(), "{id}: {read}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn protection_is_checked_against_the_users_read_by_id() {
    let mut e = env(
        "upns = [\"bg@t.com\"]\ngroups = [\"Break Glass Accounts\"]",
        "",
    )
    .await;
    e.users_and_scan(4, "disable_user(\"x\")");
    // Since the scan: 1 was renamed to a protected UPN, 2 joined a protected group.
    let mut renamed = user(1);
    renamed.user_principal_name = "bg@t.com".into();
    e.fake.add_user(renamed);
    e.fake.add_group(fake_group(50, "Break Glass Accounts"));
    e.fake.add_member(&guid(50), &guid(2));
    e.ws.set_top("mode = \"approval\"");
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    // 3 became protected by id after the plan, before it was approved.
    e.ws.set_tables(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 5000\n[protected]\nupns = [\"bg@t.com\"]\ngroups = [\"Break Glass Accounts\"]\nids = [\"{}\"]\n",
        guid(3)
    ));
    let out = e
        .cli(&["approvals", "approve", "1", "2", "3", "4", "--by", "alice"])
        .await;
    assert_eq!(out.code, 0, "{}", out.all());
    e.fake.clear_requests();
    let out = e.cli(&["execute"]).await;
    assert_eq!(out.code, 0, "{}", out.all());

    assert_eq!(e.by_ids().len(), 1);
    assert_eq!(e.user_gets(), 0);
    let writes = e.writes();
    assert_eq!(
        writes
            .iter()
            .map(|w| format!("{} {}", w.method, w.path))
            .collect::<Vec<_>>(),
        vec![format!("PATCH /v1.0/users/{}", guid(4))]
    );
    for (id, state, reason) in e.states() {
        let want = if id == guid(1) {
            "bg@t.com is a protected identity (protected.upns) in the live tenant"
        } else if id == guid(2) {
            "is a member of protected group \"Break Glass Accounts\" (protected.groups) in the live tenant"
        } else if id == guid(3) {
            "u3@t.com is a protected identity (protected.ids) in the live tenant"
        } else {
            assert_eq!(state, "done", "{reason}");
            continue;
        };
        assert_eq!(state, "refused", "{id}: {reason}");
        assert!(reason.contains(want), "{id}: {reason}");
    }
    assert!(e.fake.user(&guid(1)).unwrap().account_enabled);
    assert!(e.fake.user(&guid(2)).unwrap().account_enabled);
    assert!(e.fake.user(&guid(3)).unwrap().account_enabled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_read_of_users_is_retried_and_nothing_is_written_twice() {
    let e = env("", "").await;
    e.users_and_scan(15, "[disable_user(\"x\"), revoke_sessions(\"x\")]");
    e.fake.inject(Fault::Throttle {
        matching: "GET /v1.0/users".into(),
        count: 2,
        retry_after: Some(0.0),
    });
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let statuses: Vec<u16> = e.by_ids().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 200]);
    assert!(e.states().iter().all(|s| s.1 == "done"), "{:?}", e.states());
    let writes = e.writes();
    assert_eq!(writes.len(), 30);
    let distinct: BTreeSet<String> = writes
        .iter()
        .map(|w| format!("{} {}", w.method, w.path))
        .collect();
    assert_eq!(distinct.len(), 30, "each write sent once");
    for n in 1..=15 {
        assert_eq!(e.fake.revocations(&guid(n)), 1);
        assert!(!e.fake.user(&guid(n)).unwrap().account_enabled);
    }
    // Each action's read shows all three attempts.
    for (id, calls) in e.outcome_calls() {
        let attempts = calls[0]["attempts"].as_array().unwrap();
        let got: Vec<&Value> = attempts.iter().map(|a| &a["status"]).collect();
        assert_eq!(got, vec![429, 429, 200], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_of_users_that_keeps_failing_leaves_its_users_retryable_with_nothing_sent() {
    let e = env("", "max_attempts = 2\naction_retry_secs = 0").await;
    e.users_and_scan(3, "disable_user(\"x\")");
    e.fake.inject(Fault::ServerError {
        matching: "GET /v1.0/users".into(),
        count: 100,
        status: 503,
    });
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(e.by_ids().len(), 2, "bounded attempts");
    assert!(e.writes().is_empty(), "{:?}", e.writes());
    for (id, state, reason) in e.states() {
        assert_eq!(state, "ready", "{id}: {reason}");
        assert!(reason.contains("(retryable)"), "{reason}");
    }
    // Once Graph answers, a later pass does them (each once).
    e.fake.clear_faults();
    let out = e.cli(&["execute"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(e.states().iter().all(|s| s.1 == "done"), "{:?}", e.states());
    assert_eq!(e.writes().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_read_all_is_enough_to_read_the_users_and_without_it_nothing_is_sent() {
    let e = env("", "").await;
    e.users_and_scan(2, "disable_user(\"x\")");
    // No user permission: the read is refused and nothing is written.
    e.fake
        .set_permissions(Some(vec!["User.EnableDisableAccount.All".into()]));
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(e.writes().is_empty(), "{:?}", e.writes());
    for (id, state, reason) in e.states() {
        assert_eq!(state, "failed", "{id}: {reason}");
        assert!(reason.contains("User.Read.All"), "{reason}");
        assert!(reason.contains("forbidden"), "{reason}");
    }
    // Least privilege: with User.Read.All (and the write's own permission),
    // a fresh tenant's users are read and written for.
    let e = env("", "").await;
    e.users_and_scan(2, "disable_user(\"x\")");
    e.fake.set_permissions(Some(vec![
        "User.Read.All".into(),
        "User.EnableDisableAccount.All".into(),
    ]));
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let reads = e.by_ids();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].status, 200);
    assert!(e.states().iter().all(|s| s.1 == "done"), "{:?}", e.states());
    for n in 1..=2 {
        assert!(!e.fake.user(&guid(n)).unwrap().account_enabled);
    }
}
