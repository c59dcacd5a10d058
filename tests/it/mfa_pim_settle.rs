//! Issue 12, items 2, 4 and 7: MFA that scales (group mode by default, users
//! mode bounded by the policy size limit), undo of PIM role removals restoring
//! the same kind of assignment, and crash settling in committed chunks with
//! batched live reads (removals batched too).

use fake_entra::{FakeTenant, PimSchedule, RecordedRequest, RoleAssignment, User};
use serde_json::{Value, json};

use crate::common::*;

struct Env {
    fake: FakeTenant,
    ws: Workspace,
}

fn fake_user(n: u32) -> User {
    User {
        id: guid(n),
        user_principal_name: format!("u{n}@t.com"),
        display_name: format!("u{n}"),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

async fn env(graph_extra: &str) -> Env {
    let (fake, ws) = enforce_setup("[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 100000\ncircuit_breaker_factor = 100000.0\n[protected]\nupns = [\"bg@t.com\"]\n", graph_extra).await;
    Env { fake, ws }
}

impl Env {
    async fn cli(&self, args: &[&str]) -> Output {
        self.ws.cli_async(args).await
    }

    /// A fresh scan of users `range`, one finding F1 over all of them.
    fn scan_users(&self, range: std::ops::RangeInclusive<u32>) {
        self.scan(range.map(|n| ident(n, &format!("u{n}@t.com"))).collect());
    }

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

    /// Graph requests (batch items included, envelopes and tokens not).
    fn graph_requests(&self) -> Vec<RecordedRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| !r.path.ends_with("/$batch") && !r.path.contains("/oauth2/"))
            .collect()
    }

    fn writes(&self) -> Vec<RecordedRequest> {
        self.graph_requests().into_iter().filter(is_write).collect()
    }

    /// Action states by state name.
    fn state_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for a in self.ws.actions() {
            *m.entry(a["state"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        m
    }
}

// ------------------------------------------------------------------ item 2

#[tokio::test(flavor = "multi_thread")]
async fn mfa_for_2000_users_goes_through_a_created_group_and_every_action_ends_done() {
    let e = env("").await;
    for n in 1..=2000 {
        e.fake.add_user(fake_user(n));
    }
    e.ws.add_rule("r.rhai", &rule("r", "F1", "enforce_mfa(\"no MFA\")"));
    e.scan_users(1..=2000);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let counts = e.state_counts();
    assert_eq!(counts.get("done"), Some(&2000), "{counts:?}");
    assert_eq!(counts.len(), 1, "{counts:?}");
    // No write failed; no Conditional Access write was too large.
    let failed: Vec<String> = e
        .writes()
        .iter()
        .filter(|r| r.status >= 400)
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(e.fake.ca_oversized_refusals(), 0);
    // One security group, created by us, holds them all; the one policy
    // includes that group and lists no user.
    assert_eq!(e.fake.created_groups(), 1);
    let group = e
        .fake
        .groups()
        .into_iter()
        .find(|g| g.display_name == "entra-remediator: require MFA (members)")
        .expect("the MFA group");
    assert!(group.security_enabled && !group.mail_enabled);
    assert_eq!(e.fake.members(&group.id).len(), 2000);
    let pols = e.fake.ca_policies();
    assert_eq!(pols.len(), 1);
    assert_eq!(
        pols[0]["conditions"]["users"]["includeGroups"],
        json!([group.id])
    );
    assert!(
        pols[0]["conditions"]["users"]["includeUsers"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{}",
        pols[0]
    );
    // Users were added with members/$ref, inside $batch.
    let adds: Vec<RecordedRequest> = e
        .writes()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/members/$ref"))
        .collect();
    assert_eq!(adds.len(), 2000);
    assert!(adds.iter().all(|r| r.in_batch));
    let events = e.ws.events();
    let created: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["kind"] == "mfa_group_created")
        .collect();
    assert_eq!(created.len(), 1);
    assert!(created[0]["detail"].as_str().unwrap().contains(&group.id));

    // The next run keeps using the stored group: no second group, no policy write.
    for n in 2001..=2003 {
        e.fake.add_user(fake_user(n));
    }
    e.fake.clear_requests();
    e.scan_users(1995..=2003);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.fake.created_groups(), 1);
    assert_eq!(e.fake.ca_policies().len(), 1);
    assert_eq!(e.fake.members(&group.id).len(), 2003);
    assert!(
        e.writes().iter().all(|r| r.path.ends_with("/members/$ref")),
        "{:?}",
        e.writes().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_users_mode_policy_is_kept_and_stops_before_the_size_limit() {
    // A deployment from before group mode: its store holds a users-mode policy.
    let mut e = env("[tenant.graph.mfa]\nmode = \"users\"\n").await;
    for n in 1..=400 {
        e.fake.add_user(fake_user(n));
    }
    e.ws.add_rule("r.rhai", &rule("r", "F1", "enforce_mfa(\"no MFA\")"));
    e.scan_users(1..=3);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.fake.ca_policies().len(), 1);
    let id = e.fake.ca_policies()[0]["id"].as_str().unwrap().to_string();

    // The setting is removed (the new default): the stored policy keeps being used.
    e.ws.set_graph(&graph_table(&e.fake.base_url(), CLIENT, "secret", ""));
    e.scan_users(1..=400);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        e.fake.created_groups(),
        0,
        "no group in a users-mode tenant"
    );
    let pols = e.fake.ca_policies();
    assert_eq!(pols.len(), 1);
    assert_eq!(pols[0]["id"], json!(id));
    // Never an oversized write: Graph (the fake) refused nothing.
    assert_eq!(e.fake.ca_oversized_refusals(), 0);
    for w in e.writes() {
        let size = serde_json::to_string(w.body.as_ref().unwrap_or(&Value::Null))
            .unwrap()
            .len();
        assert!(size <= FakeTenant::CA_POLICY_MAX_BYTES, "{} bytes", size);
    }
    let listed = pols[0]["conditions"]["users"]["includeUsers"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        listed > 100 && listed < 400,
        "{listed} users listed {:?} {}",
        e.state_counts(),
        out.all()
    );
    let size = serde_json::to_string(&pols[0]).unwrap().len();
    assert!(size <= 8 * 1024 + 200, "{size}");
    // The users that did not fit are refused with the reason, not failed.
    let actions = e.ws.actions();
    let refused: Vec<&Value> = actions.iter().filter(|a| a["state"] == "refused").collect();
    let done = actions
        .iter()
        .filter(|a| matches!(a["state"].as_str(), Some("done" | "already_done")))
        .count();
    assert_eq!(
        done,
        listed + 3,
        "the first three were done in the first run"
    );
    assert_eq!(refused.len() + done, 403);
    assert!(!refused.is_empty());
    for a in &refused {
        let why = a["state_reason"].as_str().unwrap();
        assert!(
            why.contains("is full") && why.contains("mode = \"group\""),
            "{why}"
        );
    }
    assert!(actions.iter().all(|a| a["state"] != "failed"));

    // A forced re-run sends nothing for them: still refused, never an oversized write.
    e.fake.clear_requests();
    let out = e.cli(&["run", "--once", "--force"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(e.fake.ca_oversized_refusals(), 0);
    assert!(
        e.writes().is_empty(),
        "{:?}",
        e.writes().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

#[test]
fn users_mode_with_a_group_id_is_a_config_error_that_names_the_place() {
    let mut ws = Workspace::new();
    ws.set_graph(&format!(
        "{UNREACHABLE_GRAPH}[tenant.graph.mfa]\nmode = \"users\"\ngroup_id = \"{}\"\n",
        guid(50)
    ));
    let out = ws.cli(&["config", "check"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("mfa.mode"), "{}", out.stderr);
    assert!(out.stderr.contains("config.toml"), "{}", out.stderr);
    // Each mode alone is fine.
    ws.set_graph(&format!(
        "{UNREACHABLE_GRAPH}[tenant.graph.mfa]\nmode = \"users\"\n"
    ));
    let out = ws.cli(&["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.all());
    ws.set_graph(&format!(
        "{UNREACHABLE_GRAPH}[tenant.graph.mfa]\nmode = \"group\"\n"
    ));
    let out = ws.cli(&["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.all());
    ws.set_graph(&format!(
        "{UNREACHABLE_GRAPH}[tenant.graph.mfa]\nmode = \"policy\"\n"
    ));
    let out = ws.cli(&["config", "check"]);
    assert_ne!(out.code, 0, "an unknown mode is refused: {}", out.all());
}

// ------------------------------------------------------------------ item 4

const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

fn with_role(mut v: Value, assignment: &str) -> Value {
    v["roles"] = json!([{"assignment_id": assignment, "role_definition_id": USER_ADMIN, "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "active"}]);
    v
}

fn pim(start: &str, end: Option<&str>, kind: &str) -> PimSchedule {
    PimSchedule {
        start: start.into(),
        end: end.map(str::to_string),
        assignment_type: kind.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_pim_role_removal_restores_the_same_kind_scope_and_expiry_or_refuses() {
    let e = env("").await;
    let in_30_days = (chrono::Utc::now() + chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let started = "2026-01-01T00:00:00Z";
    // u1 direct; u2 PIM assigned until in 30 days; u3 PIM assigned, no expiry;
    // u4 PIM assigned, expired (still listed); u5 the user's own PIM activation.
    for n in 1..=5 {
        e.fake.add_user(fake_user(n));
        e.fake.add_role_assignment(RoleAssignment {
            id: format!("ra{n}"),
            principal_id: guid(n),
            role_definition_id: USER_ADMIN.into(),
            directory_scope_id: if n == 2 {
                "/administrativeUnits/au1".into()
            } else {
                "/".into()
            },
            pim_managed: false,
        });
    }
    e.fake
        .set_pim_schedule("ra2", pim(started, Some(&in_30_days), "Assigned"));
    e.fake
        .set_pim_schedule("ra3", pim(started, None, "Assigned"));
    e.fake.set_pim_schedule(
        "ra4",
        pim(started, Some("2026-02-01T00:00:00Z"), "Assigned"),
    );
    e.fake
        .set_pim_schedule("ra5", pim(started, Some(&in_30_days), "Activated"));
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "remove_role_assignment(identity.active_role_assignments(), \"standing\")",
        ),
    );
    let mut ids = Vec::new();
    for n in 1..=5 {
        let mut i = with_role(ident(n, &format!("u{n}@t.com")), &format!("ra{n}"));
        if n == 2 {
            i["roles"][0]["directory_scope_id"] = json!("/administrativeUnits/au1");
        }
        ids.push(i);
    }
    e.scan(ids);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(e.fake.role_assignments().is_empty());
    let actions = e.ws.actions();
    assert!(actions.iter().all(|a| a["state"] == "done"), "{actions:?}");
    let id_of = |n: u32| {
        actions
            .iter()
            .find(|a| a["identity_id"] == json!(guid(n)))
            .unwrap()["id"]
            .as_i64()
            .unwrap()
            .to_string()
    };
    e.fake.clear_requests();
    for n in 1..=5 {
        let out = e.cli(&["undo", &id_of(n), "--by", "alice"]).await;
        assert!(out.code == 0 || n >= 4, "{n}: {}", out.all());
    }
    let undo_state = |n: u32| {
        let orig = id_of(n);
        e.ws.actions()
            .into_iter()
            .find(|a| {
                a["kind"] == "undo" && a["targets"].to_string().contains(&format!("\"{orig}\""))
            })
            .map(|a| {
                (
                    a["state"].as_str().unwrap().to_string(),
                    a["state_reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap()
    };
    let ra = e.fake.role_assignments();
    let of = |n: u32| ra.iter().find(|a| a.principal_id == guid(n)).cloned();
    // Direct: re-created directly.
    assert_eq!(undo_state(1).0, "done");
    let a1 = of(1).expect("u1 restored");
    assert!(!a1.pim_managed);
    assert_eq!(e.fake.pim_schedule(&a1.id), None);
    // PIM with an expiry: through PIM, same scope, same end.
    assert_eq!(undo_state(2).0, "done");
    let a2 = of(2).expect("u2 restored");
    assert!(
        a2.pim_managed,
        "restored through PIM, not as a direct permanent assignment"
    );
    assert_eq!(a2.directory_scope_id, "/administrativeUnits/au1");
    let s2 = e.fake.pim_schedule(&a2.id).unwrap();
    assert_eq!(
        (s2.end.as_deref(), s2.assignment_type.as_str()),
        (Some(in_30_days.as_str()), "Assigned")
    );
    // PIM without expiry: through PIM, still without expiry.
    assert_eq!(undo_state(3).0, "done");
    let a3 = of(3).expect("u3 restored");
    assert!(a3.pim_managed);
    assert_eq!(e.fake.pim_schedule(&a3.id).unwrap().end, None);
    // Expired, and an activation: refused, with the reason, nothing written.
    let (s4, why4) = undo_state(4);
    assert_eq!(s4, "refused");
    assert!(why4.contains("expired at 2026-02-01T00:00:00Z"), "{why4}");
    assert!(of(4).is_none());
    let (s5, why5) = undo_state(5);
    assert_eq!(s5, "refused");
    assert!(why5.contains("activation"), "{why5}");
    assert!(of(5).is_none());
    let writes = e.writes();
    let schedule_requests: Vec<&RecordedRequest> = writes
        .iter()
        .filter(|r| r.path.ends_with("/roleAssignmentScheduleRequests"))
        .collect();
    assert_eq!(schedule_requests.len(), 2);
    for r in &schedule_requests {
        let b = r.body.as_ref().unwrap();
        assert_eq!(b["action"], "adminAssign");
        assert!(b["scheduleInfo"]["startDateTime"].is_string());
    }
    assert_eq!(
        writes
            .iter()
            .filter(|r| r
                .path
                .ends_with("/roleManagement/directory/roleAssignments"))
            .count(),
        1,
        "only the direct one is re-created directly"
    );
}

// ------------------------------------------------------------------ item 7

use fake_entra::Fault;
use std::time::Duration;

/// Graph requests of `method` whose path starts with `prefix`, as (total, sent
/// on their own rather than inside a `$batch`).
fn count(reqs: &[RecordedRequest], method: &str, prefix: &str) -> (usize, usize) {
    let m: Vec<&RecordedRequest> = reqs
        .iter()
        .filter(|r| r.method == method && r.path.starts_with(prefix))
        .collect();
    (m.len(), m.iter().filter(|r| !r.in_batch).count())
}

#[tokio::test(flavor = "multi_thread")]
async fn role_and_group_removals_read_live_state_in_batches_and_each_group_once() {
    let e = env("").await;
    let g = guid(70);
    e.fake.add_group(fake_group(70, "Finance Admins"));
    let mut identities = Vec::new();
    for n in 1..=40 {
        e.fake.add_user(fake_user(n));
        e.fake.add_member(&g, &guid(n));
        identities.push(with_group(
            ident(n, &format!("u{n}@t.com")),
            70,
            "Finance Admins",
            false,
            false,
        ));
    }
    for n in 41..=70 {
        e.fake.add_user(fake_user(n));
        e.fake.add_role_assignment(RoleAssignment {
            id: format!("ra{n}"),
            principal_id: guid(n),
            role_definition_id: USER_ADMIN.into(),
            directory_scope_id: "/".into(),
            pim_managed: false,
        });
        identities.push(with_role(
            ident(n, &format!("u{n}@t.com")),
            &format!("ra{n}"),
        ));
    }
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "if identity.member_of(\"Finance Admins\") { remove_group_membership(identity.group_ids(\"Finance Admins\"), \"x\") } else { remove_role_assignment(identity.active_role_assignments(), \"x\") }",
        ),
    );
    e.scan(identities);
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let counts = e.state_counts();
    assert_eq!(counts.get("done"), Some(&70), "{counts:?}");
    assert!(e.fake.members(&g).is_empty());
    assert!(e.fake.role_assignments().is_empty());
    let reqs = e.graph_requests();
    // One member-list read for the 40 actions of the group (it was one per action).
    assert_eq!(
        count(&reqs, "GET", &format!("/v1.0/groups/{g}/members")).0,
        1
    );
    // Every other read and every write went inside $batch.
    for (m, p) in [
        ("GET", "/v1.0/roleManagement/"),
        ("GET", &format!("/v1.0/groups/{g}")[..]),
        ("DELETE", "/v1.0/roleManagement/"),
        ("DELETE", "/v1.0/groups/"),
    ] {
        let (total, alone) = count(&reqs, m, p);
        let lists = if m == "GET" && p.starts_with("/v1.0/groups/") {
            1
        } else {
            0
        };
        assert!(total > 0, "{m} {p}");
        assert_eq!(
            alone, lists,
            "{m} {p}: {alone} of {total} sent on their own"
        );
    }
    // 70 removals: the envelopes, one member list, and nothing per action.
    let envelopes = e
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/$batch"))
        .count();
    let alone = reqs.iter().filter(|r| !r.in_batch).count();
    assert!(
        envelopes + alone <= 20,
        "{envelopes} batches and {alone} requests on their own"
    );
}

/// Starts the binary without waiting.
fn spawn(e: &Env, args: &[&str]) -> std::process::Child {
    let cfg = e.ws.config_path();
    let mut full = vec!["--config", cfg.to_str().unwrap()];
    full.extend_from_slice(args);
    std::process::Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
        .args(&full)
        .current_dir(e.ws.path())
        .env_remove("ENTRA_REMEDIATOR_CONFIG")
        .env("USER", "tester")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Events of this kind that name an action.
fn action_events(e: &Env, kind: &str) -> Vec<Value> {
    // Polled while the first run may not have created the store yet: `history`
    // never creates one, it says so and exits 1.
    let out = e.ws.cli(&["history", "--format", "json"]);
    if out.code != 0 && out.stderr.contains("does not exist") {
        return Vec::new();
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json_lines()
        .into_iter()
        .filter(|ev| ev["kind"] == kind && !ev["action_id"].is_null())
        .collect()
}

/// Waits (polling history, no deadline on the outcome) until `done` holds or
/// the child exits; kills the child if it is still running. True when killed.
async fn kill_when(e: &Env, child: &mut std::process::Child, done: impl Fn(&Env) -> bool) -> bool {
    for _ in 0..6000 {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if done(e) {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("neither the condition nor the exit came");
}

#[tokio::test(flavor = "multi_thread")]
async fn settling_after_a_crash_reads_one_policy_once_for_all_its_mfa_actions() {
    let e = env("[tenant.graph.mfa]\nmode = \"users\"\n").await;
    e.fake.set_ca_read_throttling(false);
    for n in 1..=51 {
        e.fake.add_user(fake_user(n));
    }
    e.ws.add_rule("r.rhai", &rule("r", "F1", "enforce_mfa(\"no MFA\")"));
    e.scan_users(1..=1);
    assert_eq!(e.cli(&["run", "--once"]).await.code, 0);
    let policy = e.fake.ca_policies()[0]["id"].as_str().unwrap().to_string();
    // The next 50 are stopped while their policy update is in flight.
    e.fake.inject(Fault::Latency {
        matching: "PATCH /v1.0/identity/conditionalAccess".into(),
        delay: Duration::from_secs(60),
    });
    e.scan_users(2..=51);
    let mut child = spawn(&e, &["run", "--once"]);
    let killed = kill_when(&e, &mut child, |e| {
        action_events(e, "graph_write_intent").len() >= 51
    })
    .await;
    assert!(killed, "the run was stopped with its intents recorded");
    assert_eq!(e.state_counts().get("executing"), Some(&50));
    e.fake.clear_faults();
    e.fake.clear_requests();
    let out = e.cli(&["execute"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let counts = e.state_counts();
    assert_eq!(counts.get("done"), Some(&51), "{counts:?}");
    // Settling read the policy once for the 50 actions (it read it once per
    // action, one a second); executing them again reads it, patches it and
    // reads it back.
    let reads = count(
        &e.graph_requests(),
        "GET",
        &format!("/v1.0/identity/conditionalAccess/policies/{policy}"),
    )
    .0;
    assert!(reads <= 3, "{reads} reads of the policy");
    assert_eq!(action_events(&e, "reconciled").len(), 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_settling_keeps_the_chunks_already_settled() {
    let e = env("batch_size = 20\nmax_concurrency = 20\n").await;
    let g = guid(70);
    e.fake.add_group(fake_group(70, "Finance Admins"));
    let n_users = 250;
    let mut identities = Vec::new();
    for n in 1..=n_users {
        e.fake.add_user(fake_user(n));
        e.fake.add_member(&g, &guid(n));
        identities.push(with_group(
            ident(n, &format!("u{n}@t.com")),
            70,
            "Finance Admins",
            false,
            false,
        ));
    }
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "remove_group_membership(identity.group_ids(\"Finance Admins\"), \"x\")",
        ),
    );
    e.scan(identities);
    // Stopped while the first removals are in flight: every action is left
    // executing (the chunks in flight with their intents, the rest claimed).
    e.fake.inject(Fault::Latency {
        matching: "DELETE /v1.0/groups/".into(),
        delay: Duration::from_secs(60),
    });
    let mut child = spawn(&e, &["run", "--once"]);
    let total = n_users as usize;
    assert!(
        kill_when(&e, &mut child, |e| !action_events(e, "graph_write_intent")
            .is_empty())
        .await
    );
    assert_eq!(e.state_counts().get("executing"), Some(&total));
    // Settling is slowed down (each member-list read takes a while), and
    // stopped again once its first chunk is committed.
    e.fake.clear_faults();
    e.fake.inject(Fault::Latency {
        matching: format!("GET /v1.0/groups/{g}/members"),
        delay: Duration::from_secs(3),
    });
    e.fake.clear_requests();
    let mut child = spawn(&e, &["execute"]);
    let killed = kill_when(&e, &mut child, |e| {
        !action_events(e, "reconciled").is_empty()
    })
    .await;
    assert!(
        killed,
        "settling commits chunk by chunk, not everything at the end"
    );
    let kept = action_events(&e, "reconciled");
    assert!(
        !kept.is_empty() && kept.len() < total,
        "{} settled",
        kept.len()
    );
    assert_eq!(kept.len() % 100, 0, "whole chunks: {}", kept.len());
    let settled: std::collections::BTreeSet<i64> = kept
        .iter()
        .map(|ev| ev["action_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        e.state_counts().get("executing"),
        Some(&(total - kept.len()))
    );
    // One member-list read per chunk, not one per action.
    assert!(
        count(
            &e.graph_requests(),
            "GET",
            &format!("/v1.0/groups/{g}/members")
        )
        .0 <= 2
    );

    // The restart settles only what is left: each action is settled exactly once.
    e.fake.clear_faults();
    let out = e.cli(&["execute"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let all = action_events(&e, "reconciled");
    assert_eq!(all.len(), total);
    let ids: std::collections::BTreeSet<i64> = all
        .iter()
        .map(|ev| ev["action_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), total, "no action settled twice");
    assert!(settled.is_subset(&ids));
    let counts = e.state_counts();
    assert_eq!(counts.get("done"), Some(&total), "{counts:?}");
    assert!(e.fake.members(&g).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn removals_decided_together_never_take_away_the_last_live_global_admin() {
    let e = env("").await;
    // Live, u1 and u2 are the only Global Administrators; the scan also names
    // u3, so planning lets both removals through.
    for n in 1..=3 {
        e.fake.add_user(fake_user(n));
    }
    for n in 1..=2 {
        e.fake.add_role_assignment(RoleAssignment {
            id: format!("ga{n}"),
            principal_id: guid(n),
            role_definition_id: GA.into(),
            directory_scope_id: "/".into(),
            pim_managed: false,
        });
    }
    e.ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "if identity.upn != \"u3@t.com\" { remove_role_assignment(identity.active_role_assignments(), \"x\") }",
        ),
    );
    e.scan(
        (1..=3)
            .map(|n| with_ga(ident(n, &format!("u{n}@t.com")), &format!("ga{n}")))
            .collect(),
    );
    let out = e.cli(&["run", "--once"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let counts = e.state_counts();
    assert_eq!(
        (counts.get("done"), counts.get("refused")),
        (Some(&1), Some(&1)),
        "{counts:?} {}",
        out.all()
    );
    assert_eq!(
        e.fake.role_assignments().len(),
        1,
        "one Global Administrator is left"
    );
    let refused =
        e.ws.actions()
            .into_iter()
            .find(|a| a["state"] == "refused")
            .unwrap();
    assert!(
        refused["state_reason"]
            .as_str()
            .unwrap()
            .contains("last active Global Administrator"),
        "{refused}"
    );
}
