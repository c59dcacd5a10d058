//! Enforce mode against a fake Entra tenant: the exact requests, idempotent
//! re-runs, live refusals, error mapping, throttling, batching, the Conditional
//! Access life cycle, undo, token renewal, certificate auth and crash recovery.

use std::time::Duration;

use fake_entra::{FakeTenant, Fault, RecordedRequest, RoleAssignment, User};
use serde_json::{Value, json};

use crate::common::*;

/// A fake tenant and a workspace in enforce mode pointing at it.
struct Env {
    fake: FakeTenant,
    ws: Workspace,
}

fn fake_user(n: u32, upn: &str, guest: bool) -> User {
    User {
        id: guid(n),
        user_principal_name: upn.into(),
        display_name: upn.into(),
        user_type: if guest { "Guest" } else { "Member" }.into(),
        account_enabled: true,
    }
}

async fn env(graph_extra: &str) -> Env {
    let (fake, ws) = enforce_setup("[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 1000\n[protected]\nupns = [\"bg@t.com\"]\n", graph_extra).await;
    Env { fake, ws }
}

impl Env {
    async fn cli(&self, args: &[&str]) -> Output {
        self.ws.cli_async(args).await
    }

    /// Writes a fresh scan with these identities, one finding F1 over all of them.
    fn scan(&self, identities: Vec<Value>) {
        let ids: Vec<u32> = identities
            .iter()
            .map(|i| u32::from_str_radix(&i["id"].as_str().unwrap()[24..], 16).unwrap())
            .collect();
        let _ = std::fs::remove_dir_all(self.ws.path().join("scans"));
        std::fs::create_dir_all(self.ws.path().join("scans")).unwrap();
        self.ws.add_scan(
            "s.json",
            &scan(
                &now_rfc3339(),
                identities,
                vec![finding("F1", "high", &ids)],
            ),
        );
    }

    fn writes(&self) -> Vec<RecordedRequest> {
        self.fake.requests().into_iter().filter(is_write).collect()
    }

    fn states(&self) -> Vec<(String, String)> {
        self.ws
            .actions()
            .iter()
            .map(|a| {
                (
                    a["identity_upn"].as_str().unwrap().to_string(),
                    a["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn paths(reqs: &[RecordedRequest]) -> Vec<String> {
    reqs.iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_user_patches_account_enabled_once_and_a_rerun_writes_nothing() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.add_user(fake_user(2, "b@t.com", false));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    e.scan(vec![ident(1, "a@t.com"), ident(2, "b@t.com")]);

    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!e.fake.user(&guid(1)).unwrap().account_enabled);
    assert!(!e.fake.user(&guid(2)).unwrap().account_enabled);
    let writes = e.writes();
    let mut sent = paths(&writes);
    sent.sort();
    assert_eq!(
        sent,
        vec![
            format!("PATCH /v1.0/users/{}", guid(1)),
            format!("PATCH /v1.0/users/{}", guid(2))
        ]
    );
    for w in &writes {
        assert_eq!(w.body, Some(json!({"accountEnabled": false})));
        assert!(w.in_batch, "writes go through $batch");
    }
    assert_eq!(
        e.states(),
        vec![
            ("a@t.com".into(), "done".into()),
            ("b@t.com".into(), "done".into())
        ]
    );
    // Every write's intent is in history before its outcome.
    let events = e.ws.events();
    for id in [1, 2] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|ev| ev["action_id"] == id)
            .map(|ev| ev["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec![
                "action_recorded",
                "state_changed",
                "graph_write_intent",
                "execution_outcome"
            ],
            "action {id}"
        );
    }
    let outcome = events
        .iter()
        .find(|ev| ev["kind"] == "execution_outcome")
        .unwrap();
    assert!(
        outcome["detail"].as_str().unwrap().contains("request_id"),
        "{outcome}"
    );

    // Re-running the same scan and executing again sends no write.
    e.fake.clear_requests();
    assert_eq!(e.cli(&["execute"]).await.code, 0);
    let out = e.cli(&["run", "--once", "--force"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(e.writes().is_empty(), "{:?}", paths(&e.writes()));
    let states = e.states();
    assert_eq!(states[2].1, "already_done");
    assert_eq!(states[3].1, "already_done");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_sessions_is_sent_for_members_and_refused_for_live_guests() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "m@t.com", false));
    // The scan says Member, the live tenant says Guest.
    e.fake.add_user(fake_user(2, "g@t.com", true));
    e.ws.add_rule(
        "r.rhai",
        &rule("r", "F1", "revoke_sessions(\"token theft\")"),
    );
    e.scan(vec![ident(1, "m@t.com"), ident(2, "g@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.fake.revocations(&guid(1)), 1);
    assert_eq!(e.fake.revocations(&guid(2)), 0);
    assert_eq!(
        paths(&e.writes()),
        vec![format!("POST /v1.0/users/{}/revokeSignInSessions", guid(1))]
    );
    let states = e.states();
    assert_eq!(states[0].1, "done");
    assert_eq!(states[1].1, "refused");
    let refused = &e.ws.actions()[1];
    assert!(
        refused["state_reason"]
            .as_str()
            .unwrap()
            .contains("guest in the live tenant")
    );
}

fn policies_with_user(fake: &FakeTenant, uid: &str) -> Vec<Value> {
    fake.ca_policies()
        .into_iter()
        .filter(|p| {
            p["conditions"]["users"]["includeUsers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == uid))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mfa_policy_is_created_appended_and_recreated_when_deleted() {
    let e = env("[tenant.graph.mfa]\nmode = \"users\"\n").await;
    for (n, upn) in [
        (1, "a@t.com"),
        (2, "b@t.com"),
        (3, "c@t.com"),
        (9, "bg@t.com"),
    ] {
        e.fake.add_user(fake_user(n, upn, false));
    }
    e.ws.add_rule("r.rhai", &rule("r", "F1", "enforce_mfa(\"no MFA\")"));

    e.scan(vec![ident(1, "a@t.com")]);
    assert_eq!(e.cli(&["run", "--once"]).await.code, 0);
    let pols = e.fake.ca_policies();
    assert_eq!(pols.len(), 1);
    let p = &pols[0];
    assert_eq!(p["state"], "enabled");
    assert_eq!(p["grantControls"]["builtInControls"], json!(["mfa"]));
    assert_eq!(
        p["conditions"]["applications"]["includeApplications"],
        json!(["All"])
    );
    assert_eq!(p["conditions"]["users"]["includeUsers"], json!([guid(1)]));
    assert_eq!(
        p["conditions"]["users"]["excludeUsers"],
        json!([guid(9)]),
        "break-glass excluded"
    );
    let id = p["id"].as_str().unwrap().to_string();
    assert!(e.ws.events().iter().any(
        |ev| ev["kind"] == "ca_policy_created" && ev["detail"].as_str().unwrap().contains(&id)
    ));

    // The next user is appended by PATCH and verified; the first stays.
    e.fake.clear_requests();
    e.scan(vec![ident(2, "b@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let pols = e.fake.ca_policies();
    assert_eq!(pols.len(), 1, "no second policy");
    assert_eq!(
        pols[0]["conditions"]["users"]["includeUsers"],
        json!([guid(1), guid(2)])
    );
    let writes = e.writes();
    assert_eq!(
        paths(&writes),
        vec![format!(
            "PATCH /v1.0/identity/conditionalAccess/policies/{id}"
        )]
    );

    // Deleted out of band: re-created with the next user, and history says so.
    e.fake.delete_ca_policy_out_of_band(&id);
    e.scan(vec![ident(3, "c@t.com")]);
    assert_eq!(e.cli(&["run", "--once"]).await.code, 0);
    let pols = e.fake.ca_policies();
    assert_eq!(pols.len(), 1);
    assert_ne!(pols[0]["id"], json!(id));
    assert_eq!(
        pols[0]["conditions"]["users"]["includeUsers"],
        json!([guid(3)])
    );
    assert!(
        e.ws.events()
            .iter()
            .any(|ev| ev["kind"] == "ca_policy_recreated")
    );
    assert!(e.states().iter().all(|s| s.1 == "done"), "{:?}", e.states());
}

#[tokio::test(flavor = "multi_thread")]
async fn report_only_and_group_mode_policies() {
    let e = env(&format!(
        "[tenant.graph.mfa]\nstate = \"report-only\"\ngroup_id = \"{}\"\n",
        guid(50)
    ))
    .await;
    e.fake.add_group(fake_group(50, "MFA required"));
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.add_user(fake_user(2, "b@t.com", false));
    e.fake.add_member(&guid(50), &guid(2));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "enforce_mfa(\"no MFA\")"));
    e.scan(vec![ident(1, "a@t.com"), ident(2, "b@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let pols = e.fake.ca_policies();
    assert_eq!(pols.len(), 1);
    assert_eq!(pols[0]["state"], "enabledForReportingButNotEnforced");
    assert_eq!(
        pols[0]["conditions"]["users"]["includeGroups"],
        json!([guid(50)])
    );
    let mut members = e.fake.members(&guid(50));
    members.sort();
    assert_eq!(members, vec![guid(1), guid(2)]);
    let adds: Vec<RecordedRequest> = e
        .writes()
        .into_iter()
        .filter(|r| r.path.contains("/members/"))
        .collect();
    assert_eq!(
        paths(&adds),
        vec![format!("POST /v1.0/groups/{}/members/$ref", guid(50))]
    );
    assert_eq!(
        adds[0].body,
        Some(
            json!({"@odata.id": format!("{}/v1.0/directoryObjects/{}", e.fake.base_url(), guid(1))})
        )
    );
    assert_eq!(
        e.states(),
        vec![
            ("a@t.com".into(), "done".into()),
            ("b@t.com".into(), "already_done".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn phishing_resistant_mfa_uses_the_strength_and_only_for_live_global_admins() {
    let e = env("[tenant.graph.phishing_resistant_mfa]\nmode = \"users\"\n").await;
    e.fake.add_user(fake_user(1, "ga@t.com", false));
    e.fake.add_user(fake_user(2, "was-ga@t.com", false));
    e.fake.add_role_assignment(RoleAssignment {
        id: "ga-1".into(),
        principal_id: guid(1),
        role_definition_id: GA.into(),
        directory_scope_id: "/".into(),
        pim_managed: false,
    });
    e.ws.add_rule(
        "r.rhai",
        &rule("r", "F1", "enforce_phishing_resistant_mfa(\"admin\")"),
    );
    // The scan says both are GA; live, only the first is.
    e.scan(vec![
        with_ga(ident(1, "ga@t.com"), "ga-1"),
        with_ga(ident(2, "was-ga@t.com"), "ga-2"),
    ]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let pols = e.fake.ca_policies();
    assert_eq!(pols.len(), 1);
    assert_eq!(pols[0]["grantControls"]["builtInControls"], json!([]));
    assert_eq!(
        pols[0]["grantControls"]["authenticationStrength"]["id"],
        "00000000-0000-0000-0000-000000000004"
    );
    assert_eq!(
        pols[0]["conditions"]["users"]["includeUsers"],
        json!([guid(1)])
    );
    assert_eq!(e.states()[1].1, "refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn role_removal_deletes_direct_uses_pim_for_managed_and_refuses_group_and_last_admin() {
    let e = env("").await;
    for (n, upn) in [
        (1, "direct@t.com"),
        (2, "pim@t.com"),
        (3, "viagroup@t.com"),
        (4, "lastga@t.com"),
    ] {
        e.fake.add_user(fake_user(n, upn, false));
    }
    e.fake.add_group(fake_group(60, "Helpdesk Admins"));
    let ua = "fe930be7-5e62-47db-91af-98c3a49a38b1";
    let ra = |id: &str, p: String, d: &str, pim| RoleAssignment {
        id: id.into(),
        principal_id: p,
        role_definition_id: d.into(),
        directory_scope_id: "/".into(),
        pim_managed: pim,
    };
    e.fake.add_role_assignment(ra("d1", guid(1), ua, false));
    e.fake.add_role_assignment(ra("p1", guid(2), ua, true));
    e.fake.add_role_assignment(ra("g1", guid(60), ua, false));
    e.fake.add_role_assignment(ra("ga4", guid(4), GA, false));
    let role = |assignment: &str, def: &str, name: &str| json!([{"assignment_id": assignment, "role_definition_id": def, "role_name": name, "directory_scope_id": "/", "assignment_type": "active"}]);
    let mut i1 = ident(1, "direct@t.com");
    i1["roles"] = role("d1", ua, "User Administrator");
    let mut i2 = ident(2, "pim@t.com");
    i2["roles"] = role("p1", ua, "User Administrator");
    let mut i3 = ident(3, "viagroup@t.com");
    i3["roles"] = role("g1", ua, "User Administrator");
    let mut i4 = ident(4, "lastga@t.com");
    i4["roles"] = role("ga4", GA, "Global Administrator");
    // The scan shows a second GA, so planning lets it through; live, it is the last.
    let other_ga = with_ga(ident(5, "ghost@t.com"), "ga5");
    e.ws.add_rule("r.rhai", &rule("r", "F1", "let a = identity.active_role_assignments(); if a.is_empty() { () } else { remove_role_assignment(a, \"standing\") }"));
    e.scan(vec![i1, i2, i3, i4, other_ga]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let writes = e.writes();
    assert_eq!(
        paths(&writes),
        vec![
            "DELETE /v1.0/roleManagement/directory/roleAssignments/d1".to_string(),
            "POST /v1.0/roleManagement/directory/roleAssignmentScheduleRequests".to_string(),
        ]
    );
    let pim = &writes[1].body.clone().unwrap();
    assert_eq!(pim["action"], "adminRemove");
    assert_eq!(pim["principalId"], guid(2));
    assert_eq!(pim["roleDefinitionId"], ua);
    assert_eq!(pim["directoryScopeId"], "/");
    let left: Vec<String> = e
        .fake
        .role_assignments()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(left, vec!["g1".to_string(), "ga4".to_string()]);
    let actions = e.ws.actions();
    let by_upn = |u: &str| {
        actions
            .iter()
            .find(|a| a["identity_upn"] == u)
            .unwrap()
            .clone()
    };
    assert_eq!(by_upn("direct@t.com")["state"], "done");
    assert_eq!(by_upn("pim@t.com")["state"], "done");
    assert_eq!(by_upn("viagroup@t.com")["state"], "refused");
    assert!(
        by_upn("viagroup@t.com")["state_reason"]
            .as_str()
            .unwrap()
            .contains("Helpdesk Admins")
    );
    assert_eq!(by_upn("lastga@t.com")["state"], "refused");
    assert!(
        by_upn("lastga@t.com")["state_reason"]
            .as_str()
            .unwrap()
            .contains("last active Global Administrator")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn group_removal_uses_ref_refuses_live_dynamic_groups_and_treats_gone_members_as_done() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.add_group(fake_group(70, "Finance Admins"));
    let mut dynamic = fake_group(71, "All Staff");
    dynamic.dynamic = true;
    e.fake.add_group(dynamic);
    e.fake.add_group(fake_group(72, "Old Project"));
    e.fake.add_member(&guid(70), &guid(1));
    e.fake.add_member(&guid(71), &guid(1));
    // Not a member of 72 any more (the scan is out of date).
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "identity.groups.map(|g| remove_group_membership(g.id, \"stale\"))",
        ),
    );
    // The scan thinks 71 is an assigned group.
    let i = with_group(
        with_group(
            with_group(ident(1, "a@t.com"), 70, "Finance Admins", false, false),
            71,
            "All Staff",
            false,
            false,
        ),
        72,
        "Old Project",
        false,
        false,
    );
    e.scan(vec![i]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        paths(&e.writes()),
        vec![format!(
            "DELETE /v1.0/groups/{}/members/{}/$ref",
            guid(70),
            guid(1)
        )]
    );
    assert!(e.fake.members(&guid(70)).is_empty());
    assert_eq!(e.fake.members(&guid(71)), vec![guid(1)]);
    assert!(
        e.fake.user(&guid(1)).is_some(),
        "the user object is never deleted"
    );
    let states: Vec<String> =
        e.ws.actions()
            .iter()
            .map(|a| a["state"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(states, vec!["done", "refused", "already_done"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_after_retry_after_and_server_errors_with_backoff() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.add_user(fake_user(2, "b@t.com", false));
    e.fake.inject(Fault::Throttle {
        matching: format!("PATCH /v1.0/users/{}", guid(1)),
        count: 2,
        retry_after: Some(0.2),
    });
    e.fake.inject(Fault::ServerError {
        matching: format!("PATCH /v1.0/users/{}", guid(2)),
        count: 1,
        status: 503,
    });
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    e.scan(vec![ident(1, "a@t.com"), ident(2, "b@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.states().iter().filter(|s| s.1 == "done").count(), 2);
    let statuses: Vec<u16> = e
        .writes()
        .iter()
        .filter(|r| r.path.ends_with(&guid(1)))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![429, 429, 204]);
    let statuses: Vec<u16> = e
        .writes()
        .iter()
        .filter(|r| r.path.ends_with(&guid(2)))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![503, 204]);
    // History keeps every attempt.
    let outcome =
        e.ws.events()
            .into_iter()
            .find(|ev| ev["kind"] == "execution_outcome" && ev["action_id"] == 1)
            .unwrap();
    let detail: Value = serde_json::from_str(outcome["detail"].as_str().unwrap()).unwrap();
    let attempts = detail["calls"].as_array().unwrap().last().unwrap()["attempts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(attempts, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_mapped_from_status_and_code_and_4xx_is_not_retried() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    // 2 is not in the tenant at all.
    e.fake.inject(Fault::ServerError {
        matching: format!("PATCH /v1.0/users/{}", guid(1)),
        count: 100,
        status: 500,
    });
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    e.scan(vec![ident(1, "a@t.com"), ident(2, "gone@t.com")]);
    let mut ws_cfg = std::fs::read_to_string(e.ws.config_path()).unwrap();
    ws_cfg = ws_cfg.replace(
        "max_retry_secs = 20",
        "max_retry_secs = 20\nmax_attempts = 3",
    );
    std::fs::write(e.ws.config_path(), ws_cfg).unwrap();
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(
        out.code,
        1,
        "a failed action makes the run exit 1: {}",
        out.all()
    );
    let actions = e.ws.actions();
    // Retryable: back to ready for a later run (issue 12, item 6).
    assert_eq!(actions[0]["state"], "ready");
    assert!(
        actions[0]["state_reason"]
            .as_str()
            .unwrap()
            .contains("(retryable)"),
        "{}",
        actions[0]
    );
    assert_eq!(actions[1]["state"], "failed");
    assert!(
        actions[1]["state_reason"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{}",
        actions[1]
    );
    let patches = e.writes().iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 3, "bounded attempts");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_actions_go_through_batches_of_twenty() {
    let e = env("").await;
    let mut ids = Vec::new();
    for n in 1..=45 {
        let upn = format!("u{n}@t.com");
        e.fake.add_user(fake_user(n, &upn, false));
        ids.push(ident(n, &upn));
    }
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "[disable_user(\"stale\"), revoke_sessions(\"stale\")]",
        ),
    );
    e.scan(ids);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.states().iter().filter(|s| s.1 == "done").count(), 90);
    let http: Vec<RecordedRequest> = e
        .fake
        .requests()
        .into_iter()
        .filter(|r| !r.in_batch)
        .collect();
    let batches = http.iter().filter(|r| r.path == "/v1.0/$batch").count();
    // 45 users read 15 at a time (3 items, 1 batch) + 90 writes (5 batches).
    assert_eq!(batches, 6, "{:?}", paths(&http));
    let per_action = http.len() as f64 / 90.0;
    assert!(per_action <= 0.15, "{per_action} HTTP requests per action");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_mid_run_is_renewed_once_on_401() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    e.scan(vec![ident(1, "a@t.com")]);
    // The read is slow; while it is in flight every token is expired, so the
    // write that follows gets 401 and the client renews its token once.
    e.fake.inject(Fault::Latency {
        matching: "GET /v1.0/users".into(),
        delay: Duration::from_millis(800),
    });
    let dir = e.ws.path().to_path_buf();
    let cfg = e.ws.config_path();
    let run = tokio::task::spawn_blocking(move || {
        run_bin(&dir, &["--config", cfg.to_str().unwrap(), "run", "--once"])
    });
    let started = std::time::Instant::now();
    while !e
        .fake
        .requests()
        .iter()
        .any(|r| r.path.contains("/oauth2/"))
    {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    e.fake.expire_all_tokens();
    let out = run.await.unwrap();
    assert_eq!(out.code, 0, "{}", out.all());
    let reqs = e.fake.requests();
    let tokens = reqs
        .iter()
        .filter(|r| r.path.contains("/oauth2/v2.0/token"))
        .count();
    assert_eq!(tokens, 2, "{:?}", paths(&reqs));
    assert!(reqs.iter().any(|r| r.status == 401));
    assert!(!e.fake.user(&guid(1)).unwrap().account_enabled);
    assert_eq!(e.states()[0].1, "done");
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_authentication_signs_a_client_assertion() {
    let fixtures = repo().join("tests/fixtures/certs");
    let cert = std::fs::read_to_string(fixtures.join("app-cert.pem")).unwrap();
    for (alg, key, ok) in [
        ("PS256", "app-key.pem", true),
        ("RS256", "app-key.pem", true),
        ("PS256", "other-key.pem", false),
    ] {
        let fake = FakeTenant::start(TENANT).await;
        fake.register_app_certificate(CLIENT, &cert);
        fake.add_user(fake_user(1, "a@t.com", false));
        let mut ws = Workspace::new();
        ws.set_top("mode = \"enforce\"");
        ws.set_tables("[guardrails]\nmax_actions_percent = 100.0\n");
        ws.set_graph(&format!(
            "[tenant.graph]\nauthority = \"{b}\"\ngraph_url = \"{b}\"\nclient_id = \"{CLIENT}\"\ncertificate_file = \"{c}\"\nprivate_key_file = \"{k}\"\nassertion_algorithm = \"{alg}\"\n",
            b = fake.base_url(),
            c = fixtures.join("app-cert.pem").display(),
            k = fixtures.join(key).display()
        ));
        ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
        ws.add_scan(
            "s.json",
            &scan(
                &now_rfc3339(),
                vec![ident(1, "a@t.com")],
                vec![finding("F1", "high", &[1])],
            ),
        );
        let e = Env { fake, ws };
        let out = e.cli(&["run", "--once"]).await;
        let token = e
            .fake
            .requests()
            .into_iter()
            .find(|r| r.path.contains("/oauth2/"))
            .unwrap();
        let form = token.body.clone().unwrap();
        assert_eq!(
            form["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert!(form.get("client_secret").is_none());
        if ok {
            assert_eq!(out.code, 0, "{alg} {key}: {}", out.all());
            assert!(!e.fake.user(&guid(1)).unwrap().account_enabled);
        } else {
            assert_eq!(out.code, 1, "{}", out.all());
            assert!(
                out.stderr.contains("token request refused"),
                "{}",
                out.stderr
            );
            assert!(e.fake.user(&guid(1)).unwrap().account_enabled);
            assert!(!out.all().contains("PRIVATE KEY"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_reverses_each_reversible_action_and_refuses_revoke() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.add_group(fake_group(70, "Finance Admins"));
    e.fake.add_member(&guid(70), &guid(1));
    let ua = "fe930be7-5e62-47db-91af-98c3a49a38b1";
    e.fake.add_role_assignment(RoleAssignment {
        id: "d1".into(),
        principal_id: guid(1),
        role_definition_id: ua.into(),
        directory_scope_id: "/".into(),
        pim_managed: false,
    });
    e.ws.add_rule(
        "r.rhai",
        &rule("r", "F1", "[disable_user(\"x\"), revoke_sessions(\"x\"), enforce_mfa(\"x\"), remove_role_assignment(\"d1\", \"x\"), remove_group_membership(identity.group_ids(\"Finance Admins\"), \"x\")]"),
    );
    let mut i = with_group(ident(1, "a@t.com"), 70, "Finance Admins", false, false);
    i["roles"] = json!([{"assignment_id": "d1", "role_definition_id": ua, "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "active"}]);
    e.scan(vec![i]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(e.states().iter().all(|s| s.1 == "done"), "{:?}", e.states());
    let actions = e.ws.actions();
    let id_of = |k: &str| {
        actions.iter().find(|a| a["kind"] == k).unwrap()["id"]
            .as_i64()
            .unwrap()
            .to_string()
    };

    let out = e
        .cli(&["undo", &id_of("revoke_sessions"), "--by", "alice"])
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot be undone"), "{}", out.stderr);

    for k in [
        "disable_user",
        "enforce_mfa",
        "remove_role_assignment",
        "remove_group_membership",
    ] {
        let out = e.cli(&["undo", &id_of(k), "--by", "alice"]).await;
        assert_eq!(out.code, 0, "{k}: {}", out.all());
        assert!(out.stderr.contains(": done:"), "{k}: {}", out.all());
    }
    assert!(e.fake.user(&guid(1)).unwrap().account_enabled);
    assert_eq!(e.fake.members(&guid(70)), vec![guid(1)]);
    let ra: Vec<RoleAssignment> = e.fake.role_assignments();
    assert_eq!(ra.len(), 1);
    assert_eq!(
        (
            ra[0].principal_id.as_str(),
            ra[0].role_definition_id.as_str()
        ),
        (guid(1).as_str(), ua)
    );
    assert!(
        policies_with_user(&e.fake, &guid(1)).is_empty(),
        "taken out of the MFA policy"
    );
    // Undo is recorded as an action of its own.
    let undos =
        e.ws.actions()
            .into_iter()
            .filter(|a| a["kind"] == "undo")
            .count();
    assert_eq!(undos, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_waits_for_approval_in_approval_mode() {
    let mut e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(vec![ident(1, "a@t.com")]);
    assert_eq!(e.cli(&["run", "--once"]).await.code, 0);
    e.ws.set_top("mode = \"approval\"");
    let out = e.cli(&["undo", "1", "--by", "alice"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("recorded as action 2: pending"),
        "{}",
        out.stdout
    );
    assert!(
        !e.fake.user(&guid(1)).unwrap().account_enabled,
        "not undone before approval"
    );
    assert_eq!(
        e.cli(&["approvals", "approve", "2", "--by", "bob"])
            .await
            .code,
        0
    );
    assert_eq!(e.cli(&["execute"]).await.code, 0);
    assert!(e.fake.user(&guid(1)).unwrap().account_enabled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_run_executes_nothing_twice_after_restart() {
    let e = env("").await;
    for n in 1..=3 {
        e.fake.add_user(fake_user(n, &format!("u{n}@t.com"), false));
    }
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan((1..=3).map(|n| ident(n, &format!("u{n}@t.com"))).collect());
    // The writes are slow: the process is killed while they are in flight.
    e.fake.inject(Fault::Latency {
        matching: "PATCH".into(),
        delay: Duration::from_millis(1500),
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
        .args([
            "--config",
            e.ws.config_path().to_str().unwrap(),
            "run",
            "--once",
        ])
        .current_dir(e.ws.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !e.fake.requests().iter().any(|r| r.method == "PATCH") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no PATCH was sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    e.fake.clear_faults();
    let applied: Vec<bool> = (1..=3)
        .map(|n| !e.fake.user(&guid(n)).unwrap().account_enabled)
        .collect();
    assert!(
        e.states().iter().all(|s| s.1 == "executing"),
        "{:?}",
        e.states()
    );
    let patches_before = e.writes().iter().filter(|r| r.method == "PATCH").count();

    let out = e.cli(&["execute"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("settled 3 action(s) left in flight"),
        "{}",
        out.stderr
    );
    // Every account is disabled now, and only those the crash left undone got a new PATCH.
    for n in 1..=3 {
        assert!(!e.fake.user(&guid(n)).unwrap().account_enabled);
    }
    let patches_after = e.writes().iter().filter(|r| r.method == "PATCH").count();
    let not_applied = applied.iter().filter(|a| !**a).count();
    assert_eq!(
        patches_after - patches_before,
        not_applied,
        "applied before the crash: {applied:?}"
    );
    assert!(e.states().iter().all(|s| s.1 == "done"), "{:?}", e.states());
    assert!(e.ws.events().iter().any(|ev| ev["kind"] == "reconciled"));
    let out = e.cli(&["audit", "verify"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_enabled_distribution_and_synced_groups_are_refused_live() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    let mut mail_sec = fake_group(80, "Mail-enabled security");
    mail_sec.mail_enabled = true;
    let mut dist = fake_group(81, "Distribution list");
    dist.mail_enabled = true;
    dist.security_enabled = false;
    let mut synced = fake_group(82, "Synced from AD");
    synced.on_premises_sync_enabled = true;
    for g in [mail_sec, dist, synced] {
        let id = g.id.clone();
        e.fake.add_group(g);
        e.fake.add_member(&id, &guid(1));
    }
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "identity.groups.map(|g| remove_group_membership(g.id, \"stale\"))",
        ),
    );
    let mut i = ident(1, "a@t.com");
    for n in [80, 81, 82] {
        i = with_group(i, n, "looks assigned in the scan", false, false);
    }
    e.scan(vec![i]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(e.writes().is_empty(), "{:?}", paths(&e.writes()));
    let reasons: Vec<String> =
        e.ws.actions()
            .iter()
            .map(|a| a["state_reason"].as_str().unwrap().to_string())
            .collect();
    assert!(e.ws.actions().iter().all(|a| a["state"] == "refused"));
    assert!(reasons[0].contains("is mail-enabled"), "{reasons:?}");
    assert!(
        reasons[1].contains("is a distribution group"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("synced from on-premises"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_403_explains_the_missing_role_and_is_not_retried() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "admin@t.com", false));
    e.fake.inject(Fault::ServerError {
        matching: "PATCH".into(),
        count: 5,
        status: 403,
    });
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    e.scan(vec![ident(1, "admin@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    let a = &e.ws.actions()[0];
    assert_eq!(a["state"], "failed");
    let why = a["state_reason"].as_str().unwrap();
    assert!(why.contains("Authorization_RequestDenied"), "{why}");
    assert!(
        why.contains("Privileged Authentication Administrator"),
        "{why}"
    );
    assert!(!why.contains("retryable"), "{why}");
    assert_eq!(e.writes().iter().filter(|r| r.method == "PATCH").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_without_retry_after_backs_off_and_succeeds() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.inject(Fault::Throttle {
        matching: "revokeSignInSessions".into(),
        count: 1,
        retry_after: None,
    });
    e.ws.add_rule("r.rhai", &rule("r", "F1", "revoke_sessions(\"x\")"));
    e.scan(vec![ident(1, "a@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let statuses: Vec<u16> = e.writes().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 200]);
    assert_eq!(e.fake.revocations(&guid(1)), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_run_again_sends_no_write_and_secrets_never_leak() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.add_user(fake_user(2, "ga@t.com", false));
    e.fake.add_user(fake_user(3, "ga2@t.com", false));
    e.fake.add_group(fake_group(70, "Finance Admins"));
    e.fake.add_member(&guid(70), &guid(1));
    let ua = "fe930be7-5e62-47db-91af-98c3a49a38b1";
    let ra = |id: &str, p: u32, d: &str| RoleAssignment {
        id: id.into(),
        principal_id: guid(p),
        role_definition_id: d.into(),
        directory_scope_id: "/".into(),
        pim_managed: false,
    };
    e.fake.add_role_assignment(ra("d1", 1, ua));
    e.fake.add_role_assignment(ra("g2", 2, GA));
    e.fake.add_role_assignment(ra("g3", 3, GA));
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "if identity.is_global_admin() { enforce_phishing_resistant_mfa(\"admin\") } else { [disable_user(\"x\"), enforce_mfa(\"x\"), remove_role_assignment(\"d1\", \"x\"), remove_group_membership(identity.group_ids(\"Finance Admins\"), \"x\")] }",
        ),
    );
    let mut i = with_group(ident(1, "a@t.com"), 70, "Finance Admins", false, false);
    i["roles"] = json!([{"assignment_id": "d1", "role_definition_id": ua, "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "active"}]);
    e.scan(vec![
        i.clone(),
        with_ga(ident(2, "ga@t.com"), "g2"),
        with_ga(ident(3, "ga2@t.com"), "g3"),
    ]);
    let first = e.cli(&["run", "--once"]).await;
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(e.states().iter().all(|s| s.1 == "done"), "{:?}", e.states());
    e.fake.clear_requests();
    // The same scan again (forced): every action is already done, nothing is written.
    let again = e.cli(&["run", "--once", "--force"]).await;
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(e.writes().is_empty(), "{:?}", paths(&e.writes()));
    let states = e.states();
    assert!(
        states[6..].iter().all(|s| s.1 == "already_done"),
        "{states:?}"
    );
    // The client secret is nowhere: not in output, not in history.
    let history = e.ws.cli(&["history", "--format", "json"]);
    for text in [first.all(), again.all(), history.stdout] {
        assert!(!text.contains(SECRET), "the secret leaked");
    }
    let db = std::fs::read(e.ws.db_path()).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(SECRET),
        "the secret is in the database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_close_to_expiry_is_renewed_before_it_is_used() {
    let e = env("").await;
    e.fake.set_token_lifetime(2);
    e.fake.add_user(fake_user(1, "a@t.com", false));
    // The read takes most of the token's life: the write must not go out with a
    // token about to expire, so the client renews it first (and never sees a 401).
    e.fake.inject(Fault::Latency {
        matching: "GET /v1.0/users".into(),
        delay: Duration::from_millis(1700),
    });
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    e.scan(vec![ident(1, "a@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let reqs = e.fake.requests();
    assert_eq!(
        reqs.iter()
            .filter(|r| r.path.contains("/oauth2/v2.0/token"))
            .count(),
        2,
        "{:?}",
        paths(&reqs)
    );
    assert!(reqs.iter().all(|r| r.status != 401), "{:?}", paths(&reqs));
    assert!(!e.fake.user(&guid(1)).unwrap().account_enabled);
}

#[tokio::test(flavor = "multi_thread")]
async fn membership_past_the_first_page_of_a_large_group_is_still_found() {
    let e = env("").await;
    e.fake.add_group(fake_group(90, "Big Group"));
    for n in 1000..2100 {
        e.fake.add_user(fake_user(n, &format!("m{n}@t.com"), false));
        e.fake.add_member(&guid(90), &guid(n));
    }
    // The user is the 1,050th member: on the second page of 999.
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "remove_group_membership(identity.group_ids(\"Big Group\"), \"stale\")",
        ),
    );
    e.scan(vec![with_group(
        ident(2049, "m2049@t.com"),
        90,
        "Big Group",
        false,
        false,
    )]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        paths(&e.writes()),
        vec![format!(
            "DELETE /v1.0/groups/{}/members/{}/$ref",
            guid(90),
            guid(2049)
        )]
    );
    assert_eq!(e.states()[0].1, "done");
    assert_eq!(e.fake.members(&guid(90)).len(), 1099);
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_disable_writes_nothing_when_the_account_is_enabled_again() {
    let e = env("").await;
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    e.scan(vec![ident(1, "a@t.com")]);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!e.fake.user(&guid(1)).unwrap().account_enabled);
    let id = e.ws.actions()[0]["id"].as_i64().unwrap().to_string();
    // Someone re-enables the account by hand before the undo runs.
    e.fake.add_user(fake_user(1, "a@t.com", false));
    e.fake.clear_requests();
    let out = e.cli(&["undo", &id, "--by", "alice"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("already_done"), "{}", out.stderr);
    assert!(
        e.fake.requests().iter().all(|r| r.method != "PATCH"),
        "no second write: {:?}",
        e.fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_graph_client_follows_every_next_link_whatever_the_page_size() {
    use entra_remediator::graph::paging::ListingError;
    use entra_remediator::graph::{GraphClient, GraphRequest};

    let e = env("").await;
    e.fake.add_group(fake_group(90, "Paged"));
    for n in 1000..1020 {
        e.fake.add_user(fake_user(n, &format!("m{n}@t.com"), false));
        e.fake.add_member(&guid(90), &guid(n));
    }
    let cfg = entra_remediator::config::Config::load(&e.ws.config_path()).unwrap();
    let tenant = &cfg.tenants[0];
    let graph = GraphClient::new(&tenant.tenant_id, tenant.graph.as_ref().unwrap()).unwrap();
    let path = format!("/groups/{}/members?$select=id&$top=7", guid(90));

    // 20 members in pages of 7: three requests, each told to the caller.
    let mut seen = Vec::new();
    let record = |r: &GraphRequest, a: &entra_remediator::graph::Answer| {
        seen.push((r.path.clone(), a.as_ref().unwrap().status))
    };
    let items = graph.get_all(path.clone(), 100, record).await.unwrap();
    let mut ids: Vec<&str> = items.iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].0, path);
    assert!(seen[1].0.contains("skiptoken"), "{seen:?}");
    assert!(seen.iter().all(|(_, s)| *s == 200), "{seen:?}");

    // A bound on the pages stops a listing that goes on, after that many requests.
    let mut calls = 0;
    let err = graph
        .get_all(path.clone(), 2, |_: &GraphRequest, _: &_| calls += 1)
        .await
        .unwrap_err();
    assert!(matches!(err, ListingError::TooManyPages), "{err:?}");
    assert_eq!(calls, 2);

    // A page answered with an error ends the listing with that answer.
    let missing = format!("/groups/{}/members?$select=id", guid(91));
    match graph
        .get_all(missing, 100, |_: &GraphRequest, _: &_| {})
        .await
    {
        Err(ListingError::Refused(r)) => assert_eq!(r.status, 404),
        other => panic!("{other:?}"),
    }
}
