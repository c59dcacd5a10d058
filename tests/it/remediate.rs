//! Manual remediation (`service::remediate`, `remediate`, `POST /v1/remediations`)
//! against a real SQLite store and the fake tenant: the same guardrails and
//! mode as rules, requests recorded with who asked and why, refusals naming the
//! field, nobody approving their own request, and the scheduled rule run of
//! the same scan still running afterwards.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use chrono::Utc;
use entra_remediator::access::{Caller, Interface, Role, Roles};
use entra_remediator::api::{self, ApiState};
use entra_remediator::approval::{ApprovalError, ApprovalPolicy, Decision, Origin};
use entra_remediator::config::Config;
use entra_remediator::domain::{ActionKind, ActionState};
use entra_remediator::metrics::Metrics;
use entra_remediator::scan::LoadedScan;
use entra_remediator::service::approvals::{DecideError, DecisionRequest, decide};
use entra_remediator::service::cycle::{RunOptions, TenantOutcome};
use entra_remediator::service::remediate::{self, RemediateError, RemediationRequest, Selection};
use entra_remediator::store::{self, Filter, Store};
use fake_entra::{RoleAssignment, User};
use serde_json::{Value, json};

use crate::common::*;

const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

fn operator(name: &str) -> Caller {
    Caller {
        name: name.into(),
        interface: Interface::Console,
        roles: Roles::of(&[Role::Operator]),
    }
}

fn request(kind: ActionKind, selection: Selection, targets: &[&str]) -> RemediationRequest {
    RemediationRequest {
        tenant: "test".into(),
        kind,
        selection,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        reason: "  suspected compromise, ticket 4711  ".into(),
        caller: operator("alice@t.com"),
        now: Utc::now(),
    }
}

fn names(list: &[&str]) -> Selection {
    Selection::Identities(list.iter().map(|s| s.to_string()).collect())
}

fn role(assignment: &str) -> Value {
    json!({"assignment_id": assignment, "role_definition_id": USER_ADMIN, "role_name": "User Administrator", "directory_scope_id": "/", "assignment_type": "active"})
}

/// A workspace in `mode` with a rule on F1, a scan (a@, b@, the protected
/// bg@, the guest g@, r@ with two roles), the config and the store.
async fn setup(ws: &mut Workspace, mode: &str) -> (Config, Box<dyn Store>, LoadedScan) {
    ws.set_top(&format!("mode = \"{mode}\""));
    ws.set_tables("[guardrails]\nmax_actions_percent = 100.0\nmax_actions_per_run = 1000\n[protected]\nupns = [\"bg@t.com\"]\n");
    ws.add_rule("r.rhai", &rule("r", "F2", "enforce_mfa(\"no MFA\")"));
    let mut r = ident(5, "r@t.com");
    r["roles"] = json!([role("d1"), role("d2")]);
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![
                with_group(ident(1, "a@t.com"), 70, "Finance", false, false),
                ident(2, "b@t.com"),
                ident(3, "bg@t.com"),
                guest(4, "g@t.com"),
                r,
            ],
            vec![
                finding("F1", "high", &[1, 2, 3]),
                finding("F2", "low", &[1]),
            ],
        ),
    );
    let cfg = Config::load(&ws.config_path()).unwrap();
    let store = store::open(&cfg.store.url).await.unwrap();
    let scan = remediate::load_scan(&cfg, "test", None, Utc::now())
        .await
        .unwrap();
    (cfg, store, scan)
}

fn approve(ids: Vec<i64>, by: &str, decision: Decision) -> DecisionRequest {
    DecisionRequest {
        ids,
        decision,
        by: by.into(),
        comment: None,
        bulk: false,
        now: Utc::now(),
        origin: Origin::api(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_request_for_a_finding_is_pending_with_requester_and_reason_and_not_self_approvable()
{
    let mut ws = Workspace::new();
    let (cfg, store, scan) = setup(&mut ws, "approval").await;
    let req = request(
        ActionKind::DisableUser,
        Selection::Finding("F1".into()),
        &[],
    );
    let preview = remediate::preview(&cfg, Some(store.as_ref()), &scan, &req)
        .await
        .unwrap();
    assert_eq!(preview.identities, 3);
    assert!(store.actions(&Filter::default()).await.unwrap().is_empty());
    let done = remediate::submit(&cfg, store.as_ref(), &scan, &req)
        .await
        .unwrap();
    assert_eq!(done.ids.len(), 3);
    let actions = store.actions(&Filter::default()).await.unwrap();
    let state_of = |upn: &str| {
        let a = actions.iter().find(|a| a.identity_upn == upn).unwrap();
        (a.state, a.state_reason.clone().unwrap_or_default())
    };
    assert_eq!(state_of("a@t.com").0, ActionState::Pending);
    assert_eq!(state_of("b@t.com").0, ActionState::Pending);
    let (state, why) = state_of("bg@t.com");
    assert_eq!(state, ActionState::Refused);
    assert!(why.contains("protected"), "{why}");
    let a = &actions[0];
    assert_eq!(a.rules, vec!["manual".to_string()]);
    assert_eq!(a.reasons[0].finding, "F1");
    assert_eq!(
        a.reasons[0].reason,
        "suspected compromise, ticket 4711 [requested by alice@t.com through the console]"
    );
    assert_eq!(
        store.run_actor(&done.run_id).await.unwrap().as_deref(),
        Some("alice@t.com")
    );
    let events = store
        .events(&Filter {
            run: Some(done.run_id.clone()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert!(
        events.iter().all(|e| e.actor == "alice@t.com"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.kind == "run_recorded"));

    // Nobody approves their own request (whatever the case); another person can.
    let policy = ApprovalPolicy::from(&cfg.approvals);
    let (a_id, b_id) = (done.ids[0], done.ids[1]);
    let own = decide(
        store.as_ref(),
        &approve(vec![a_id], "ALICE@t.com", Decision::Approve),
        &policy,
    )
    .await;
    match own {
        Err(DecideError::Approval(ApprovalError::OwnRequest { id, by })) => {
            assert_eq!((id, by.as_str()), (a_id, "alice@t.com"));
        }
        other => panic!("expected OwnRequest, got {other:?}"),
    }
    let approved = decide(
        store.as_ref(),
        &approve(vec![a_id], "bob@t.com", Decision::Approve),
        &policy,
    )
    .await
    .unwrap();
    assert_eq!(approved[0].state, ActionState::Approved);
    // Withdrawing one's own request is allowed.
    let withdrawn = decide(
        store.as_ref(),
        &approve(vec![b_id], "alice@t.com", Decision::Reject),
        &policy,
    )
    .await
    .unwrap();
    assert_eq!(withdrawn[0].state, ActionState::Rejected);

    // The scheduled rule run of the same scan still runs, once.
    let opts = RunOptions {
        tenant: Some("test".into()),
        scan: Default::default(),
        force: false,
        actor: "system".into(),
        now: Utc::now(),
        keep_scans_until_exit: false,
    };
    let out = entra_remediator::service::run::run(&cfg, Some(store.as_ref()), &opts)
        .await
        .unwrap();
    match &out[0] {
        TenantOutcome::Planned { plan, .. } => {
            assert_eq!(plan.actions.len(), 1);
            assert_eq!(plan.actions[0].kind, ActionKind::EnforceMfa);
        }
        other => panic!("the rule run did not run: {other:?}"),
    }
    let again = entra_remediator::service::run::run(&cfg, Some(store.as_ref()), &opts)
        .await
        .unwrap();
    assert!(matches!(again[0], TenantOutcome::AlreadyProcessed { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn guardrails_refuse_and_bad_requests_name_the_field_and_record_nothing() {
    let mut ws = Workspace::new();
    let (cfg, store, scan) = setup(&mut ws, "approval").await;
    let s = store.as_ref();
    // Revoking a guest's sessions is refused with its reason (shown in the preview).
    let p = remediate::preview(
        &cfg,
        Some(s),
        &scan,
        &request(ActionKind::RevokeSessions, names(&["g@t.com"]), &[]),
    )
    .await
    .unwrap();
    match &p.plan.actions[0].decision {
        entra_remediator::plan::Verdict::Refused(why) => assert!(why.contains("guest"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A chosen group, named in any case, is removed as the scan spells it.
    let group = guid(70).to_uppercase();
    let p = remediate::preview(
        &cfg,
        Some(s),
        &scan,
        &request(
            ActionKind::RemoveGroupMembership,
            names(&["a@t.com"]),
            &[&group, &group],
        ),
    )
    .await
    .unwrap();
    assert_eq!(p.plan.actions.len(), 1);
    assert_eq!(p.plan.actions[0].targets, vec![guid(70)]);
    let cases: Vec<(RemediationRequest, &str)> = vec![
        (
            request(ActionKind::DisableUser, names(&["a@t.com"]), &["d1"]),
            "targets: disable_user takes no targets",
        ),
        (
            request(
                ActionKind::RemoveRoleAssignment,
                names(&["r@t.com", "a@t.com"]),
                &["d1"],
            ),
            "identities: remove_role_assignment takes exactly one identity (2 selected)",
        ),
        (
            request(ActionKind::RemoveRoleAssignment, names(&["r@t.com"]), &[]),
            "targets: remove_role_assignment needs at least one target",
        ),
        (
            request(
                ActionKind::RemoveRoleAssignment,
                names(&["r@t.com"]),
                &["d9"],
            ),
            "targets: \"d9\" is not one of the role assignment ids of r@t.com in the scan",
        ),
        (
            request(
                ActionKind::RemoveGroupMembership,
                Selection::Finding("F1".into()),
                &["x"],
            ),
            "finding: remove_group_membership takes exactly one identity",
        ),
        (
            RemediationRequest {
                reason: "   ".into(),
                ..request(ActionKind::DisableUser, names(&["a@t.com"]), &[])
            },
            "reason: a reason is required",
        ),
        (
            RemediationRequest {
                reason: "x".repeat(1001),
                ..request(ActionKind::DisableUser, names(&["a@t.com"]), &[])
            },
            "reason: at most 1000 characters, got 1001",
        ),
        (
            request(ActionKind::DisableUser, names(&["nobody@t.com"]), &[]),
            "identities: \"nobody@t.com\" is not an identity",
        ),
        (
            request(
                ActionKind::DisableUser,
                Selection::Finding("F9".into()),
                &[],
            ),
            "finding: \"F9\" is not a finding in the scan",
        ),
        (
            RemediationRequest {
                caller: Caller {
                    roles: Roles::of(&[Role::Viewer, Role::Approver]),
                    ..operator("vera@t.com")
                },
                ..request(ActionKind::DisableUser, names(&["a@t.com"]), &[])
            },
            "vera@t.com may not request remediations: that needs the operator role",
        ),
    ];
    for (req, want) in cases {
        let err = remediate::submit(&cfg, s, &scan, &req).await.unwrap_err();
        assert!(err.to_string().starts_with(want), "{err} / wanted {want}");
    }
    let forbidden = remediate::preview(
        &cfg,
        None,
        &scan,
        &RemediationRequest {
            caller: Caller {
                roles: Roles::NONE,
                ..operator("x")
            },
            ..request(ActionKind::DisableUser, names(&["a@t.com"]), &[])
        },
    )
    .await;
    assert!(matches!(forbidden, Err(RemediateError::Forbidden(_))));
    assert!(s.actions(&Filter::default()).await.unwrap().is_empty());
    // Duplicates (by id and by UPN) collapse into one action.
    let dup = remediate::submit(
        &cfg,
        s,
        &scan,
        &request(
            ActionKind::DisableUser,
            names(&["a@t.com", &guid(1), "A@T.COM"]),
            &[],
        ),
    )
    .await
    .unwrap();
    assert_eq!(dup.ids.len(), 1);
}

fn fake_user(n: u32, upn: &str) -> User {
    User {
        id: guid(n),
        user_principal_name: upn.into(),
        display_name: upn.into(),
        user_type: "Member".into(),
        account_enabled: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chosen_role_assignment_is_removed_at_the_fake_and_only_that_one() {
    let (fake, mut ws) = enforce_setup("", "").await;
    fake.add_user(fake_user(5, "r@t.com"));
    for id in ["d1", "d2"] {
        fake.add_role_assignment(RoleAssignment {
            id: id.into(),
            principal_id: guid(5),
            role_definition_id: USER_ADMIN.into(),
            directory_scope_id: "/".into(),
            pim_managed: false,
        });
    }
    let (cfg, store, scan) = setup(&mut ws, "enforce").await;
    let done = remediate::submit(
        &cfg,
        store.as_ref(),
        &scan,
        &request(
            ActionKind::RemoveRoleAssignment,
            names(&["r@t.com"]),
            &["d1"],
        ),
    )
    .await
    .unwrap();
    assert_eq!(done.plan.actions[0].state(), ActionState::Ready);
    drop(store);
    let out = ws.cli_async(&["execute", "--tenant", "test"]).await;
    assert_eq!(out.code, 0, "{}", out.all());
    let left: Vec<String> = fake.role_assignments().into_iter().map(|a| a.id).collect();
    assert_eq!(left, vec!["d2".to_string()]);
    let actions = ws.actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["state"], "done");
    assert_eq!(actions[0]["targets"], "d1");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_previews_and_records_only_with_yes() {
    let mut ws = Workspace::new();
    let _ = setup(&mut ws, "approval").await;
    let args = [
        "remediate",
        "--tenant",
        "test",
        "--action",
        "disable-user",
        "--identity",
        "a@t.com",
        "--identity",
        "bg@t.com",
        "--reason",
        "left the company",
        "--by",
        "carol",
        "--format",
        "json",
    ];
    let out = ws.cli(&args);
    assert_eq!(out.code, 0, "{}", out.all());
    let plan = out.json_lines();
    assert_eq!(plan.len(), 2);
    assert_eq!(plan[0]["state"], "pending");
    assert_eq!(plan[1]["state"], "refused");
    assert!(out.stderr.contains("nothing recorded"), "{}", out.stderr);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert!(ws.actions().is_empty());
    let mut yes = args.to_vec();
    yes.push("--yes");
    let out = ws.cli(&yes);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("recorded as run"), "{}", out.stderr);
    let actions = ws.actions();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0]["rules"], "manual");
    let bad = ws.cli(&[
        "remediate",
        "--tenant",
        "test",
        "--action",
        "disable-user",
        "--identity",
        "a@t.com",
        "--target",
        "d1",
        "--reason",
        "x",
        "--by",
        "carol",
    ]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr
            .contains("targets: disable_user takes no targets"),
        "{}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_previews_records_and_refuses_with_json_errors() {
    let mut ws = Workspace::new();
    let (cfg, store, _) = setup(&mut ws, "approval").await;
    let store: Arc<dyn Store> = Arc::from(store);
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let state = ApiState {
        store: store.clone(),
        config: Arc::new(RwLock::new(Arc::new(cfg))),
        tokens: api::Tokens::new(vec![api::NamedToken::new(
            "ops",
            "remediate-token-1234",
            entra_remediator::access::Roles::of(&[entra_remediator::access::Role::Operator]),
        )]),
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(true)),
        requests: tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/remediations", listener.local_addr().unwrap());
    let router = api::router(state, 64 * 1024);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let req = http
            .post(&url)
            .bearer_auth("remediate-token-1234")
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"tenant": "test", "action": "disable_user", "finding": "F1", "reason": "incident 12"});
    let (code, preview) = post(body.clone()).await;
    assert_eq!(code, 200, "{preview}");
    assert_eq!(preview["recorded"], false);
    assert_eq!(preview["mode"], "approval");
    assert_eq!(preview["actions"].as_array().unwrap().len(), 3);
    assert_eq!(preview["actions"][2]["decision"], "refused");
    assert!(store.actions(&Filter::default()).await.unwrap().is_empty());
    let mut confirm = body.clone();
    confirm["confirm"] = json!(true);
    let (code, done) = post(confirm).await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["recorded"], true);
    let ids: Vec<i64> = serde_json::from_value(done["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(done["actions"][0]["state"], "pending");
    assert_eq!(
        store
            .run_actor(done["run_id"].as_str().unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("token:ops"),
        "the requester is the calling token, by name"
    );
    let (code, err) = post(json!({"tenant": "test", "action": "disable_user", "identities": ["a@t.com"], "targets": ["d1"], "reason": "x"})).await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_request");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("targets:"),
        "{err}"
    );
    let (code, err) = post(json!({"tenant": "nope", "action": "disable_user", "identities": ["a@t.com"], "reason": "x"})).await;
    assert_eq!(code, 404, "{err}");
}
