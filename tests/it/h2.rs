//! Issue 12, items 2, 4 and 7: MFA that scales (group mode by default, users
//! mode bounded by the policy size limit), undo of PIM role removals restoring
//! the same kind of assignment, and crash settling in committed chunks with
//! batched live reads (removals batched too).

use fake_entra::{FakeTenant, Group, PimSchedule, RecordedRequest, RoleAssignment, User};
use serde_json::{Value, json};

use crate::common::*;

const CLIENT: &str = "00000000-0000-0000-0000-00000000c11e";
const SECRET: &str = "test-secret-value-0123456789";

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

#[allow(dead_code)]
fn fake_group(n: u32, name: &str) -> Group {
    Group {
        id: guid(n),
        display_name: name.into(),
        dynamic: false,
        mail_enabled: false,
        security_enabled: true,
        on_premises_sync_enabled: false,
        is_assignable_to_role: false,
    }
}

async fn env(graph_extra: &str) -> Env {
    let fake = FakeTenant::start(TENANT).await;
    fake.register_app_secret(CLIENT, SECRET);
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables(
        "[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 100000\ncircuit_breaker_factor = 100000.0\n[protected]\nupns = [\"bg@t.com\"]\n",
    );
    ws.write("secret", SECRET);
    ws.set_graph(&graph_table(
        &fake.base_url(),
        CLIENT,
        "secret",
        graph_extra,
    ));
    Env { fake, ws }
}

impl Env {
    async fn cli(&self, args: &[&str]) -> Output {
        let dir = self.ws.path().to_path_buf();
        let cfg = self.ws.config_path();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mut full = vec!["--config".to_string(), cfg.to_str().unwrap().to_string()];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            run_bin(&dir, &refs)
        })
        .await
        .unwrap()
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
        self.graph_requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
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
