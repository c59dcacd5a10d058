//! Trust fixes (issue 12, items 1, 3, 5, 6) against the fake tenant: protection
//! checked against the live account, idempotent and settleable revokes, each
//! batched request's own ids, and retryable failures retried by later runs.

use entra_remediator::domain::ActionState;
use fake_entra::{FakeTenant, RoleAssignment, User};
use serde_json::{Value, json};

use crate::common::fake_group as group;
use crate::common::*;

struct Env {
    fake: FakeTenant,
    ws: Workspace,
}

fn user(n: u32, upn: &str) -> User {
    User {
        id: guid(n),
        user_principal_name: upn.into(),
        display_name: upn.into(),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

/// Enforce mode against a fake tenant; `protected` and `graph_extra` are TOML.
async fn env(protected: &str, graph_extra: &str) -> Env {
    let (fake, ws) = enforce_setup(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 1000\n[protected]\n{protected}\n"
    ), graph_extra).await;
    Env { fake, ws }
}

impl Env {
    async fn cli(&self, args: &[&str]) -> Output {
        self.ws.cli_async(args).await
    }

    /// A fresh scan of these identities, finding F1 over `affected`.
    fn scan(&self, identities: Vec<Value>, affected: &[u32]) {
        let _ = std::fs::remove_dir_all(self.ws.path().join("scans"));
        std::fs::create_dir_all(self.ws.path().join("scans")).unwrap();
        self.ws.add_scan(
            "s.json",
            &scan(
                &now_rfc3339(),
                identities,
                vec![finding("F1", "high", affected)],
            ),
        );
    }

    /// Graph writes the fake received (batch items and direct calls).
    fn writes(&self) -> Vec<String> {
        self.fake
            .requests()
            .into_iter()
            .filter(is_write)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn action(&self, id: i64) -> Value {
        self.ws
            .actions()
            .into_iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no action {id}"))
    }

    /// The details of this action's events of `kind`, parsed.
    fn details(&self, id: i64, kind: &str) -> Vec<Value> {
        self.ws
            .events()
            .into_iter()
            .filter(|e| e["action_id"] == id && e["kind"] == kind)
            .map(|e| {
                let d = e["detail"].as_str().unwrap();
                serde_json::from_str(d).unwrap_or_else(|_| json!(d))
            })
            .collect()
    }
}

fn ga_role(assignment: &str) -> RoleAssignment {
    RoleAssignment {
        id: assignment.into(),
        principal_id: String::new(),
        role_definition_id: GA.into(),
        directory_scope_id: "/".into(),
        pim_managed: false,
    }
}

/// Item 1: a scan that keeps the break-glass account's object id but renames it
/// and drops its groups plans actions for it; each is refused at execution,
/// because protection is checked against the live account (UPN, and groups read
/// live, nested ones too), and nothing is written to the tenant. Undo too.
#[tokio::test(flavor = "multi_thread")]
async fn protection_is_checked_against_the_live_account_before_every_write() {
    let e = env(
        "upns = [\"bg@t.com\"]\ngroups = [\"Break Glass Accounts\"]",
        "",
    )
    .await;
    // 9: the break-glass account by UPN and group; 8: by a nested group only;
    // 7: another Global Administrator, untouched; 6: an ordinary user.
    for (n, upn) in [
        (9, "bg@t.com"),
        (8, "ops@t.com"),
        (7, "ga@t.com"),
        (6, "u6@t.com"),
    ] {
        e.fake.add_user(user(n, upn));
    }
    e.fake.add_group(group(50, "Break Glass Accounts"));
    e.fake.add_group(group(51, "Emergency Ops"));
    e.fake.add_member(&guid(50), &guid(9));
    e.fake.add_member(&guid(50), &guid(51));
    e.fake.add_member(&guid(51), &guid(8));
    for (n, a) in [(9, "a9"), (8, "a8"), (7, "a7")] {
        e.fake.add_role_assignment(RoleAssignment {
            principal_id: guid(n),
            ..ga_role(a)
        });
    }
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "if identity.id == \"00000000-0000-0000-0000-000000000006\" { disable_user(\"x\") } else { [disable_user(\"x\"), revoke_sessions(\"x\"), enforce_mfa(\"x\"), enforce_phishing_resistant_mfa(\"x\"), remove_role_assignment(identity.active_role_assignments(), \"x\")] }",
        ),
    );
    // The scan keeps the object ids but renames 9 and drops every group.
    e.scan(
        vec![
            with_ga(ident(9, "renamed@t.com"), "a9"),
            with_ga(ident(8, "ops@t.com"), "a8"),
            with_ga(ident(7, "ga@t.com"), "a7"),
            ident(6, "u6@t.com"),
        ],
        &[9, 8, 6],
    );

    let out = e.cli(&["run", "--once"]).await;
    let actions = e.ws.actions();
    assert_eq!(actions.len(), 11, "{}\n{actions:#?}", out.all());
    assert_eq!(
        e.writes(),
        vec![format!("PATCH /v1.0/users/{}", guid(6))],
        "{}",
        out.all()
    );
    let user9 = e.fake.user(&guid(9)).unwrap();
    assert!(user9.account_enabled);
    assert!(e.fake.user(&guid(8)).unwrap().account_enabled);
    assert_eq!(e.fake.revocations(&guid(9)), 0);
    assert_eq!(e.fake.revocations(&guid(8)), 0);
    assert_eq!(e.fake.role_assignments().len(), 3);
    assert!(e.fake.ca_policies().is_empty());
    for a in &actions {
        let id = a["id"].as_i64().unwrap();
        if a["identity_id"] == guid(6) {
            assert_eq!(a["state"], "done", "{a}");
            continue;
        }
        assert_eq!(a["state"], "refused", "{a}");
        let reason = a["state_reason"].as_str().unwrap();
        let want = if a["identity_id"] == guid(9) {
            "bg@t.com is a protected identity (protected.upns) in the live tenant"
        } else {
            "ops@t.com is a member of protected group \"Break Glass Accounts\" (protected.groups) in the live tenant"
        };
        assert!(reason.contains(want), "{reason}");
        // The refusal and the live reads behind it are in history; no intent.
        let outcome = &e.details(id, "execution_outcome")[0];
        assert_eq!(outcome["outcome"], reason);
        assert!(e.details(id, "graph_write_intent").is_empty());
        let calls = outcome["calls"].to_string();
        assert!(calls.contains("transitiveMemberOf"), "{calls}");
    }

    // Undo writes for the account too: 6 is now protected in the live tenant,
    // so re-enabling it is refused and nothing is sent.
    e.fake.add_member(&guid(51), &guid(6));
    e.fake.clear_requests();
    let done = actions
        .iter()
        .find(|a| a["identity_id"] == guid(6))
        .unwrap();
    let out = e
        .cli(&[
            "undo",
            &done["id"].as_i64().unwrap().to_string(),
            "--by",
            "alice",
        ])
        .await;
    assert!(
        out.stderr.contains(": refused:")
            && out.stderr.contains("(protected.groups) in the live tenant"),
        "{}",
        out.all()
    );
    assert!(e.writes().is_empty(), "{:?}", e.writes());
    assert!(!e.fake.user(&guid(6)).unwrap().account_enabled);
}

/// Item 1: an account whose live UPN is not the one the scan named is not
/// written to either, protected or not: the scan does not describe it.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_upn_other_than_the_scans_is_refused() {
    let e = env("upns = [\"bg@t.com\"]", "").await;
    e.fake.add_user(user(1, "new-name@t.com"));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(vec![ident(1, "old-name@t.com")], &[1]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let a = e.action(1);
    assert_eq!(a["state"], "refused");
    assert!(
        a["state_reason"]
            .as_str()
            .unwrap()
            .starts_with("live-mismatch:"),
        "{a}"
    );
    assert!(e.writes().is_empty());
    assert!(e.fake.user(&guid(1)).unwrap().account_enabled);
}

/// Item 3: a revoke is done once `signInSessionsValidFromDateTime` is at or
/// after the scan: a forced re-run of the same scan sends nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_forced_rerun_does_not_revoke_sessions_again() {
    let e = env("", "").await;
    e.fake.add_user(user(1, "a@t.com"));
    e.fake.add_user(user(2, "b@t.com"));
    // Revoked long before the scan: that does not count.
    e.fake
        .set_sessions_valid_from(&guid(2), Some("2020-01-01T00:00:00Z"));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "revoke_sessions(\"x\")"));
    e.scan(vec![ident(1, "a@t.com"), ident(2, "b@t.com")], &[1, 2]);

    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.fake.revocations(&guid(1)), 1);
    assert_eq!(e.fake.revocations(&guid(2)), 1);
    assert!(e.fake.sessions_valid_from(&guid(2)).unwrap().as_str() > "2020-01-01T00:00:00Z");

    e.fake.clear_requests();
    let out = e.cli(&["run", "--once", "--force"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(e.writes().is_empty(), "{:?}", e.writes());
    assert_eq!(e.fake.revocations(&guid(1)), 1);
    assert_eq!(e.fake.revocations(&guid(2)), 1);
    for id in [3, 4] {
        let a = e.action(id);
        assert_eq!(a["state"], "already_done", "{a}");
        assert!(
            a["state_reason"]
                .as_str()
                .unwrap()
                .contains("(signInSessionsValidFromDateTime), not before the scan"),
            "{a}"
        );
    }
    // The user read (by id, both users at once) selects the property.
    let reads: Vec<String> = e
        .fake
        .requests()
        .into_iter()
        .filter(is_users_read)
        .map(|r| r.query.unwrap_or_default())
        .collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(
        reads
            .iter()
            .any(|q| q.contains("signInSessionsValidFromDateTime")),
        "{reads:?}"
    );
}

/// Item 3: revokes interrupted after their intent was recorded are settled from
/// `signInSessionsValidFromDateTime`: one that landed is done (not sent again),
/// one that did not is executed again, instead of both being marked failed.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_revoke_is_settled_from_sign_in_sessions_valid_from() {
    let mut e = env("", "").await;
    e.fake.add_user(user(1, "a@t.com"));
    e.fake.add_user(user(2, "b@t.com"));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "revoke_sessions(\"x\")"));
    e.scan(vec![ident(1, "a@t.com"), ident(2, "b@t.com")], &[1, 2]);
    e.ws.set_top("mode = \"approval\"");
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let out = e
        .cli(&["approvals", "approve", "1", "2", "--by", "alice"])
        .await;
    assert_eq!(out.code, 0, "{}", out.all());
    // A pass that stopped after committing both intents.
    {
        let db = format!("sqlite://{}", e.ws.db_path().display());
        let store = entra_remediator::store::open(&db).await.unwrap();
        let claimed = store
            .claim(
                &[1, 2],
                &[ActionState::Approved],
                ActionState::Executing,
                "test",
                "execution started",
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        let intents = claimed
            .iter()
            .map(|a| entra_remediator::store::NewEvent {
                tenant: Some(a.tenant.clone()),
                run_id: Some(a.run_id.clone()),
                action_id: Some(a.id),
                identity_id: Some(a.identity_id.clone()),
                action_kind: Some(a.kind.to_string()),
                kind: "graph_write_intent".into(),
                actor: "test".into(),
                state: Some("executing".into()),
                detail: json!({"writes": [{"request": format!("POST /users/{}/revokeSignInSessions", a.identity_id)}], "snapshot": null}).to_string(),
                ..Default::default()
            })
            .collect();
        store.append(intents).await.unwrap();
    }
    // The first revoke reached Graph before the stop (Graph keeps whole seconds).
    let landed = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    e.fake.set_sessions_valid_from(&guid(1), Some(&landed));
    e.fake.clear_requests();

    let out = e.cli(&["execute"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let a1 = e.action(1);
    assert_eq!(a1["state"], "done", "{a1}");
    assert!(
        a1["state_reason"]
            .as_str()
            .unwrap()
            .contains(&format!("sessions were revoked at {}", &landed[..19])),
        "{a1}"
    );
    let a2 = e.action(2);
    assert_eq!(a2["state"], "done", "{a2}");
    assert_eq!(
        e.writes(),
        vec![format!("POST /v1.0/users/{}/revokeSignInSessions", guid(2))]
    );
    assert_eq!(e.fake.revocations(&guid(1)), 0);
    assert_eq!(e.fake.revocations(&guid(2)), 1);
    let settled = &e.details(2, "reconciled")[0];
    assert!(
        settled["outcome"]
            .as_str()
            .unwrap()
            .contains("the revoke did not land; it will be executed again"),
        "{settled}"
    );
}

/// Item 5: each `$batch` item carries its own fresh `client-request-id`, and
/// history keeps each item's own `request-id`, not the envelope's.
#[tokio::test(flavor = "multi_thread")]
async fn each_batched_request_has_its_own_ids_in_history() {
    let e = env("", "").await;
    for n in 1..=3 {
        e.fake.add_user(user(n, &format!("u{n}@t.com")));
    }
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(
        (1..=3).map(|n| ident(n, &format!("u{n}@t.com"))).collect(),
        &[1, 2, 3],
    );
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let reqs = e.fake.requests();
    let header = |r: &fake_entra::RecordedRequest| {
        r.headers
            .iter()
            .find(|(k, _)| k == "client-request-id")
            .map(|(_, v)| v.clone())
    };
    let envelopes: Vec<String> = reqs
        .iter()
        .filter(|r| r.path.ends_with("/$batch"))
        .filter_map(header)
        .collect();
    let items: Vec<&fake_entra::RecordedRequest> = reqs.iter().filter(|r| r.in_batch).collect();
    assert_eq!(items.len(), 4, "1 read (both users by id) and 3 writes");
    let mut ids: Vec<String> = items
        .iter()
        .map(|r| {
            header(r).unwrap_or_else(|| panic!("{} {} has no client-request-id", r.method, r.path))
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), items.len(), "every item has a fresh id");
    assert!(ids.iter().all(|i| !envelopes.contains(i)));
    // History: each write's attempt has the item's client-request-id and its own request-id.
    let mut request_ids = Vec::new();
    for id in 1..=3 {
        let outcome = &e.details(id, "execution_outcome")[0];
        let calls = outcome["calls"].as_array().unwrap();
        let write = calls
            .iter()
            .find(|c| c["request"].as_str().unwrap().starts_with("PATCH"))
            .unwrap();
        let attempt = &write["attempts"][0];
        assert_eq!(attempt["batched"], true);
        let crid = attempt["client_request_id"].as_str().unwrap();
        let path = format!("/v1.0/users/{}", guid(id as u32));
        let sent = items
            .iter()
            .find(|r| r.method == "PATCH" && r.path == path)
            .unwrap();
        assert_eq!(header(sent).as_deref(), Some(crid));
        let rid = attempt["request_id"].as_str().unwrap().to_string();
        assert_ne!(
            Some(&rid),
            attempt["batch_request_id"]
                .as_str()
                .map(str::to_string)
                .as_ref()
        );
        request_ids.push(rid);
    }
    request_ids.sort();
    request_ids.dedup();
    assert_eq!(request_ids.len(), 3, "each item's own request-id");
}

/// Item 6: a wrong secret fails execution retryably; once it is fixed, a later
/// `execute` carries the action out, without `--force`.
#[tokio::test(flavor = "multi_thread")]
async fn a_credential_error_is_retried_by_a_later_execute() {
    let e = env("", "action_attempts = 3\naction_retry_secs = 0").await;
    e.fake.add_user(user(1, "a@t.com"));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(vec![ident(1, "a@t.com")], &[1]);
    e.ws.write("secret", "wrong-secret");
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    let a = e.action(1);
    assert_eq!(a["state"], "ready", "{a}");
    let reason = a["state_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("attempt 1 of 3 failed (retryable): ")
            && reason.contains("next attempt not before"),
        "{reason}"
    );
    let outcome = &e.details(1, "execution_outcome")[0];
    assert_eq!(outcome["attempt"], 1);
    assert_eq!(outcome["max_attempts"], 3);
    assert!(outcome["not_before"].is_string());
    assert!(e.fake.user(&guid(1)).unwrap().account_enabled);

    e.ws.write("secret", SECRET);
    let out = e.cli(&["execute"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.action(1)["state"], "done");
    assert!(!e.fake.user(&guid(1)).unwrap().account_enabled);
}

/// Item 6: retries are bounded: after the last attempt the failure is final,
/// and a later `execute` leaves the action alone.
#[tokio::test(flavor = "multi_thread")]
async fn retries_stop_after_the_last_attempt() {
    let e = env("", "action_attempts = 2\naction_retry_secs = 0").await;
    e.fake.add_user(user(1, "a@t.com"));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(vec![ident(1, "a@t.com")], &[1]);
    e.ws.write("secret", "wrong-secret");
    assert_eq!(e.cli(&["run", "--once"]).await.code, 1);
    assert_eq!(e.action(1)["state"], "ready");
    assert_eq!(e.cli(&["execute"]).await.code, 1);
    let a = e.action(1);
    assert_eq!(a["state"], "failed", "{a}");
    assert!(
        a["state_reason"]
            .as_str()
            .unwrap()
            .starts_with("failed for good after attempt 2 of 2: "),
        "{a}"
    );
    e.ws.write("secret", SECRET);
    assert_eq!(e.cli(&["execute"]).await.code, 0);
    assert_eq!(e.action(1)["state"], "failed");
    assert!(e.fake.user(&guid(1)).unwrap().account_enabled);
    assert_eq!(
        e.details(1, "state_changed").len(),
        2,
        "two attempts, no third"
    );
}

/// Item 6: a later run within the backoff does not try again yet.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_waits_for_its_backoff() {
    let e = env("", "action_retry_secs = 3600").await;
    e.fake.add_user(user(1, "a@t.com"));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(vec![ident(1, "a@t.com")], &[1]);
    e.ws.write("secret", "wrong-secret");
    assert_eq!(e.cli(&["run", "--once"]).await.code, 1);
    let reason = e.action(1)["state_reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("attempt 1 of 5 failed"), "{reason}");
    e.ws.write("secret", SECRET);
    e.fake.clear_requests();
    assert_eq!(e.cli(&["execute"]).await.code, 0);
    assert_eq!(e.action(1)["state"], "ready");
    assert!(
        e.fake.requests().is_empty(),
        "nothing is sent before the backoff ends"
    );
    assert_eq!(e.details(1, "state_changed").len(), 1);
}

/// The two store look-ups the executor relies on, on SQLite and (when
/// `ENTRA_REMEDIATOR_TEST_POSTGRES_URL` is set) PostgreSQL: a run's scan time,
/// and each action's retryable failures so far.
#[tokio::test(flavor = "multi_thread")]
async fn store_keeps_scan_times_and_counts_retryable_failures() {
    use entra_remediator::domain::ActionState;
    use entra_remediator::store::{NewAction, NewEvent, NewRun, StateChange};
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![(
        format!("sqlite://{}", dir.path().join("h.db").display()),
        None,
    )];
    if let Ok(admin) = std::env::var("ENTRA_REMEDIATOR_TEST_POSTGRES_URL")
        && !admin.trim().is_empty()
    {
        let schema = format!("er_h1_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut c)
            .await
            .unwrap();
        let sep = if admin.contains('?') { '&' } else { '?' };
        urls.push((
            format!("{admin}{sep}options=-csearch_path%3D{schema}"),
            Some((admin.clone(), schema)),
        ));
    }
    for (url, pg) in urls {
        let store = entra_remediator::store::open(&url).await.unwrap();
        let scanned: chrono::DateTime<chrono::Utc> = "2026-11-20T10:11:12.345Z".parse().unwrap();
        let run = NewRun {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: "test".into(),
            scan_source: "s.json".into(),
            scan_sha256: "00".into(),
            scanned_at: scanned,
            rule_set_hash: "00".into(),
            mode: "enforce".parse().unwrap(),
            downgrades: vec![],
            identities: 2,
            findings: 1,
            started_at: chrono::Utc::now(),
            actor: "test".into(),
            kind: "scan".into(),
        };
        let action = |n: u32| NewAction {
            identity_id: guid(n),
            identity_upn: format!("u{n}@t.com"),
            identity_name: format!("u{n}"),
            kind: "disable_user".parse().unwrap(),
            targets: vec![],
            reasons: vec![],
            mode: "enforce".parse().unwrap(),
            state: "ready".parse().unwrap(),
            state_reason: None,
            expires_at: None,
        };
        let ids = store
            .record_run(&run, &[action(1), action(2)], &[])
            .await
            .unwrap();
        assert_eq!(
            store.run_scanned_at(&run.id).await.unwrap(),
            Some(scanned),
            "{url}"
        );
        assert_eq!(store.run_scanned_at("no-such-run").await.unwrap(), None);
        let outcome = |id: i64, state: &str| StateChange {
            action_id: id,
            state: state.parse().unwrap(),
            reason: None,
            event: NewEvent {
                kind: "execution_outcome".into(),
                actor: "test".into(),
                detail: "{}".into(),
                ..Default::default()
            },
        };
        let before = chrono::Utc::now() - chrono::Duration::seconds(1);
        for _ in 0..2 {
            store
                .claim(
                    &ids,
                    &[ActionState::Ready],
                    ActionState::Executing,
                    "test",
                    "x",
                )
                .await
                .unwrap();
            store
                .transition(vec![outcome(ids[0], "ready"), outcome(ids[1], "failed")])
                .await
                .unwrap();
            store
                .transition(vec![outcome(ids[1], "ready")])
                .await
                .unwrap();
        }
        let counts = store.retry_counts(&ids).await.unwrap();
        let (n, last) = counts[&ids[0]];
        assert_eq!(n, 2, "{url}");
        assert!(last >= before, "{url}");
        // Only outcomes that put an action back to ready count, not failed ones.
        assert_eq!(counts[&ids[1]].0, 2, "{url}");
        assert!(store.retry_counts(&[]).await.unwrap().is_empty());
        assert!(
            store
                .retry_counts(&[ids[1] + 100])
                .await
                .unwrap()
                .is_empty()
        );
        if let Some((admin, schema)) = pg {
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut c)
            .await;
        }
    }
}

/// Item 5: token requests carry their own `client-request-id` too, and a refused
/// one names it in the failure history keeps.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_request_is_traceable_by_its_own_id() {
    let e = env("", "").await;
    e.fake.add_user(user(1, "a@t.com"));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(vec![ident(1, "a@t.com")], &[1]);
    e.ws.write("secret", "wrong-secret");
    assert_eq!(e.cli(&["run", "--once"]).await.code, 1);
    let sent: Vec<String> = e
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/oauth2/"))
        .map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "client-request-id")
                .map(|(_, v)| v.clone())
                .expect("a token request without client-request-id")
        })
        .collect();
    assert!(!sent.is_empty());
    let reason = e.action(1)["state_reason"].as_str().unwrap().to_string();
    assert!(
        sent.iter()
            .any(|id| reason.contains(&format!("(client-request-id {id})"))),
        "{reason} / {sent:?}"
    );
}

/// Item 6: the retry bounds are checked like every other setting.
#[test]
fn retry_settings_out_of_range_are_config_errors() {
    let mut ws = Workspace::new();
    for (extra, key) in [
        ("action_attempts = 0\n", "action_attempts"),
        ("action_retry_secs = 86401\n", "action_retry_secs"),
    ] {
        ws.set_graph(&format!("{UNREACHABLE_GRAPH}{extra}"));
        let out = ws.cli(&["config", "check"]);
        assert_ne!(out.code, 0, "{extra}: {}", out.all());
        assert!(out.stderr.contains(key), "{extra}: {}", out.stderr);
    }
    ws.set_graph(&format!(
        "{UNREACHABLE_GRAPH}action_attempts = 1\naction_retry_secs = 0\n"
    ));
    let out = ws.cli(&["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.all());
}
