//! Issue 12, items 14, 19 and parts of 7 and 21: approvals in the keyed history
//! chain, checkpoints against a rewrite of the whole store, read-only commands
//! that never create a store, history look-ups by action through the index,
//! case-insensitive `--identity`, `--since DATE`, and an unreachable PostgreSQL
//! store named (without its password) after a short timeout.
//!
//! Store tests run on SQLite and, when `ENTRA_REMEDIATOR_TEST_POSTGRES_URL` is
//! set, on a fresh PostgreSQL schema too (skipped otherwise, or failing with
//! `ENTRA_REMEDIATOR_REQUIRE_POSTGRES=1`, as in `store.rs`).

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use entra_remediator::approval::{ApprovalPolicy, Decision};
use entra_remediator::domain::ActionKind;
use entra_remediator::domain::Reason;
use entra_remediator::service::approvals::{DecisionRequest, decide};
use entra_remediator::store::{
    Checkpoint, EventRow, Filter, GENESIS, NewAction, NewRun, OpenOptions, Store,
    check_checkpoints, event_hash, open_with,
};
use sqlx::Connection;

use crate::common::*;

// ---------------------------------------------------------------- backends

/// A fresh, empty database for one test: a SQLite file or a PostgreSQL schema.
struct Fresh {
    url: String,
    dir: tempfile::TempDir,
    /// (admin URL, schema) for PostgreSQL.
    pg: Option<(String, String)>,
}

impl Fresh {
    fn sqlite() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("history.db").display());
        Fresh { url, dir, pg: None }
    }

    async fn postgres() -> Option<Fresh> {
        let admin = match std::env::var("ENTRA_REMEDIATOR_TEST_POSTGRES_URL") {
            Ok(u) if !u.trim().is_empty() => u,
            _ => {
                assert_ne!(
                    std::env::var("ENTRA_REMEDIATOR_REQUIRE_POSTGRES").as_deref(),
                    Ok("1"),
                    "ENTRA_REMEDIATOR_REQUIRE_POSTGRES=1 but ENTRA_REMEDIATOR_TEST_POSTGRES_URL is not set"
                );
                eprintln!(
                    "PostgreSQL store tests SKIPPED: set ENTRA_REMEDIATOR_TEST_POSTGRES_URL to run them"
                );
                return None;
            }
        };
        let schema = format!("er_h4_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-csearch_path%3D{schema}");
        Some(Fresh {
            url,
            dir: tempfile::tempdir().unwrap(),
            pg: Some((admin, schema)),
        })
    }

    /// Both backends (PostgreSQL only when configured).
    async fn all() -> Vec<Fresh> {
        let mut v = vec![Fresh::sqlite()];
        v.extend(Fresh::postgres().await);
        v
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("history.key")
    }

    /// Options with this test's key file.
    fn keyed(&self) -> OpenOptions {
        let mut o = OpenOptions::new(&self.url);
        o.key = Some(entra_remediator::store::KeySource::File(self.key_file()));
        o
    }

    /// Runs SQL behind the store's back, with the append-only triggers out of the way.
    async fn tamper(&self, sql: &str) {
        let script = match &self.pg {
            Some(_) => format!(
                "ALTER TABLE events DISABLE TRIGGER USER; ALTER TABLE approvals DISABLE TRIGGER USER; \
                 ALTER TABLE actions DISABLE TRIGGER USER; ALTER TABLE runs DISABLE TRIGGER USER; {sql}; \
                 ALTER TABLE events ENABLE TRIGGER USER; ALTER TABLE approvals ENABLE TRIGGER USER; \
                 ALTER TABLE actions ENABLE TRIGGER USER; ALTER TABLE runs ENABLE TRIGGER USER"
            ),
            None => format!(
                "DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete; \
                 DROP TRIGGER IF EXISTS approvals_no_delete; DROP TRIGGER IF EXISTS actions_no_delete; \
                 DROP TRIGGER IF EXISTS runs_no_delete; {sql}"
            ),
        };
        let sql = sqlx::AssertSqlSafe(script);
        match &self.pg {
            Some(_) => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            None => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    async fn cleanup(&self) {
        if let Some((admin, schema)) = &self.pg
            && let Ok(mut c) = sqlx::PgConnection::connect(admin).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut c)
            .await;
        }
    }

    fn name(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }
}

fn run(id: &str) -> NewRun {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    NewRun {
        id: id.into(),
        tenant: "t".into(),
        scan_source: format!("scans/{id}.json"),
        scan_sha256: format!("sha-{id}"),
        scanned_at: at,
        rule_set_hash: "rules".into(),
        mode: "approval".parse().unwrap(),
        downgrades: vec![],
        identities: 3,
        findings: 1,
        started_at: at,
        actor: "system".into(),
        kind: "scan".into(),
    }
}

fn pending_disable(n: u32) -> NewAction {
    NewAction {
        identity_id: format!("id-{n}"),
        identity_upn: format!("u{n}@contoso.com"),
        identity_name: format!("User {n}"),
        kind: ActionKind::DisableUser.into(),
        targets: vec![],
        reasons: vec![Reason {
            rule: "r".into(),
            finding: "F".into(),
            reason: "stale".into(),
        }],
        mode: "approval".parse().unwrap(),
        state: "pending".parse().unwrap(),
        state_reason: None,
        expires_at: None,
    }
}

fn four_eyes() -> ApprovalPolicy {
    ApprovalPolicy {
        approvers: vec![],
        four_eyes: vec![ActionKind::DisableUser],
        ..Default::default()
    }
}

fn approve(id: i64, by: &str) -> DecisionRequest {
    DecisionRequest {
        ids: vec![id],
        decision: Decision::Approve,
        by: by.into(),
        comment: Some("ok".into()),
        bulk: false,
        origin: Default::default(),
        now: Utc::now(),
    }
}

/// Recomputes every event's hash with plain SHA-256, as anyone with write
/// access to the store could: the chain is consistent again, but unkeyed.
async fn recompute_unkeyed(f: &Fresh, s: &dyn Store) {
    let events = s.events(&Filter::default()).await.unwrap();
    let mut prev = GENESIS.to_string();
    let mut sql = String::new();
    for e in &events {
        let h = event_hash(e.seq, &e.at, &e.content(), &prev);
        sql.push_str(&format!(
            "UPDATE events SET prev_hash = '{prev}', hash = '{h}' WHERE seq = {};",
            e.seq
        ));
        prev = h;
    }
    f.tamper(sql.trim_end_matches(';')).await;
}

// ---------------------------------------------------------------- item 14

/// A forged approval row (the old attack: insert a second approval, no trigger
/// stops an INSERT) is not in the chain: `verify` reports it, and four eyes
/// does not count it, so one real approver leaves the action pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_approval_is_reported_and_not_counted() {
    for f in Fresh::all().await {
        let s = open_with(&f.keyed()).await.unwrap();
        let ids = s
            .record_run(&run("r1"), &[pending_disable(1), pending_disable(2)], &[])
            .await
            .unwrap();
        // A real first approval of action 2 is in the chain and counts.
        let rows = decide(&*s, &approve(ids[1], "alice"), &four_eyes())
            .await
            .unwrap();
        assert_eq!(rows[0].state, "pending", "{}", f.name());
        let ok = s.verify().await.unwrap();
        assert!(ok.problems.is_empty(), "{}: {:?}", f.name(), ok.problems);
        assert_eq!(ok.approvals, 1);
        assert!(ok.keyed_from.is_some());

        // Forge "mallory"'s approval of action 1 behind the store's back.
        f.tamper(&format!(
            "INSERT INTO approvals (action_id, approver, decision, comment, at) \
             VALUES ({}, 'mallory', 'approve', 'ok', '2026-03-01T10:00:00.000Z')",
            ids[0]
        ))
        .await;
        let report = s.verify().await.unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("mallory") && p.contains("not in the hash chain")),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        // Alice alone does not satisfy four eyes: the forged row does not count.
        let rows = decide(&*s, &approve(ids[0], "alice"), &four_eyes())
            .await
            .unwrap();
        assert_eq!(rows[0].state, "pending", "{}", f.name());
        // A real second approver does.
        let rows = decide(&*s, &approve(ids[0], "bob"), &four_eyes())
            .await
            .unwrap();
        assert_eq!(rows[0].state, "approved", "{}", f.name());

        // A forged row that copies a real one (naming its event) is a duplicate.
        let seq: i64 = s.approvals(ids[1]).await.unwrap()[0].event_seq.unwrap();
        f.tamper(&format!(
            "INSERT INTO approvals (action_id, approver, decision, comment, at, event_seq) \
             SELECT action_id, approver, decision, comment, at, event_seq FROM approvals WHERE event_seq = {seq}"
        ))
        .await;
        let report = s.verify().await.unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains("duplicated")),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        f.cleanup().await;
    }
}

/// An edit followed by recomputing the whole chain with plain SHA-256 verifies
/// without a key, and is caught with it; dropping the `history_keyed` event too
/// is caught as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recomputed_unkeyed_chain_is_detected_with_the_key() {
    for f in Fresh::all().await {
        let s = open_with(&f.keyed()).await.unwrap();
        s.record_run(&run("r1"), &[pending_disable(1)], &[])
            .await
            .unwrap();
        assert!(s.verify().await.unwrap().problems.is_empty());
        let mode: Vec<EventRow> = s.events(&Filter::default()).await.unwrap();
        assert_eq!(mode[0].kind, "history_keyed", "{}", f.name());

        f.tamper("UPDATE events SET detail = 'nothing to see' WHERE kind = 'action_recorded'")
            .await;
        recompute_unkeyed(&f, &*s).await;
        let report = s.verify().await.unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("does not match its HMAC")),
            "{}: {:?}",
            f.name(),
            report.problems
        );

        // The attacker also deletes the `history_keyed` event and recomputes.
        f.tamper(
            "DELETE FROM events WHERE kind = 'history_keyed'; UPDATE events SET seq = seq - 1",
        )
        .await;
        recompute_unkeyed(&f, &*s).await;
        // Without a key this would now look intact...
        let unkeyed = open_with(&OpenOptions::new(&f.url).read_only())
            .await
            .unwrap();
        assert!(unkeyed.verify().await.unwrap().problems.is_empty());
        // ...with the key it is not.
        let keyed = open_with(&f.keyed().read_only()).await.unwrap();
        let report = keyed.verify().await.unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("no event is keyed")),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        f.cleanup().await;
    }
}

/// A rewrite of the whole store (with the key, so the chain itself verifies) is
/// found by comparing with a checkpoint written before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_store_rewrite_is_detected_against_a_checkpoint() {
    for f in Fresh::all().await {
        let cp_file = f.dir.path().join("checkpoints.jsonl");
        let mut opts = f.keyed();
        opts.checkpoint_every = 2;
        opts.checkpoint_file = Some(cp_file.clone());
        let s = open_with(&opts).await.unwrap();
        s.record_run(&run("r1"), &[pending_disable(1), pending_disable(2)], &[])
            .await
            .unwrap();
        let checkpoints = Checkpoint::read_file(&cp_file).unwrap();
        assert!(!checkpoints.is_empty(), "{}", f.name());
        let report = s.verify().await.unwrap();
        assert!(report.problems.is_empty());
        assert!(
            check_checkpoints(&*s, &report, &checkpoints)
                .await
                .unwrap()
                .is_empty()
        );

        // Rewrite everything, then write a different history with the same key.
        f.tamper(
            "DELETE FROM approvals; DELETE FROM events; DELETE FROM actions; DELETE FROM runs",
        )
        .await;
        let s = open_with(&f.keyed()).await.unwrap();
        s.record_run(
            &run("other"),
            &[pending_disable(7), pending_disable(8)],
            &[],
        )
        .await
        .unwrap();
        let report = s.verify().await.unwrap();
        assert!(
            report.problems.is_empty(),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        let problems = check_checkpoints(&*s, &report, &checkpoints).await.unwrap();
        assert!(
            problems.iter().any(|p| p.contains("(rewritten)")),
            "{}: {problems:?}",
            f.name()
        );
        f.cleanup().await;
    }
}

/// An existing, unkeyed store keeps verifying once a key is configured: the
/// first writer with the key appends the `history_keyed` event after the old
/// events, and an approval recorded before still counts towards four eyes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_unkeyed_store_keeps_verifying_when_keying_starts() {
    for f in Fresh::all().await {
        let s = open_with(&OpenOptions::new(&f.url)).await.unwrap();
        let ids = s
            .record_run(&run("r1"), &[pending_disable(1)], &[])
            .await
            .unwrap();
        decide(&*s, &approve(ids[0], "alice"), &four_eyes())
            .await
            .unwrap();
        let before = s.events(&Filter::default()).await.unwrap().len() as i64;
        let report = s.verify().await.unwrap();
        assert!(
            report.problems.is_empty(),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        assert_eq!(report.keyed_from, None);
        drop(s);

        assert!(!f.key_file().exists());
        let s = open_with(&f.keyed()).await.unwrap();
        assert!(f.key_file().exists(), "{}", f.name());
        let report = s.verify().await.unwrap();
        assert!(
            report.problems.is_empty(),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        assert_eq!(report.keyed_from, Some(before + 1), "{}", f.name());
        let rows = decide(&*s, &approve(ids[0], "bob"), &four_eyes())
            .await
            .unwrap();
        assert_eq!(rows[0].state, "approved", "{}", f.name());
        let report = s.verify().await.unwrap();
        assert!(
            report.problems.is_empty(),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        assert_eq!(report.approvals, 2);
        // Editing an unkeyed event before the key started is still found: the
        // keyed `history_keyed` event chains to it.
        f.tamper("UPDATE events SET actor = 'mallory' WHERE seq = 1")
            .await;
        recompute_unkeyed_prefix(&f, &*s, before).await;
        let report = s.verify().await.unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains(&format!("event {}: prev_hash", before + 1))),
            "{}: {:?}",
            f.name(),
            report.problems
        );
        f.cleanup().await;
    }
}

/// Recomputes the unkeyed events up to `last` with plain SHA-256.
async fn recompute_unkeyed_prefix(f: &Fresh, s: &dyn Store, last: i64) {
    let events = s.events(&Filter::default()).await.unwrap();
    let mut prev = GENESIS.to_string();
    let mut sql = String::new();
    for e in events.iter().filter(|e| e.seq <= last) {
        let h = event_hash(e.seq, &e.at, &e.content(), &prev);
        sql.push_str(&format!(
            "UPDATE events SET prev_hash = '{prev}', hash = '{h}' WHERE seq = {};",
            e.seq
        ));
        prev = h;
    }
    f.tamper(sql.trim_end_matches(';')).await;
}

/// A keyed store refuses a writer without the key (its events would break the
/// chain) and one with another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_store_refuses_writers_without_its_key() {
    let f = Fresh::sqlite();
    open_with(&f.keyed()).await.unwrap();
    let err = open_with(&OpenOptions::new(&f.url)).await.err().unwrap();
    assert!(
        err.to_string().contains("is keyed from event 1 on"),
        "{err}"
    );
    std::fs::write(
        f.key_file(),
        "another key that is long enough to be used here",
    )
    .unwrap();
    let err = open_with(&f.keyed()).await.err().unwrap();
    assert!(err.to_string().contains("with key id"), "{err}");
}

/// Through the binary: a key file is created (0600) by `run`, `audit verify`
/// says the chain is keyed, and a checkpoint kept apart finds a store that was
/// deleted and written again.
#[test]
fn audit_verify_compares_with_a_checkpoint_file() {
    let mut ws = Workspace::new();
    ws.set_tables(
        "history_key_file = \"history.key\"\ncheckpoint_file = \"checkpoints.jsonl\"\ncheckpoint_every = 1\n",
    );
    // (the workspace writes these lines right after `[store] url`)
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s1.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u1@contoso.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let key = ws.path().join("history.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let saved = ws.path().join("saved-checkpoints.jsonl");
    std::fs::copy(ws.path().join("checkpoints.jsonl"), &saved).unwrap();
    let out = ws.cli(&["audit", "verify", "--checkpoint", saved.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("history intact"), "{}", out.stdout);
    assert!(
        out.stderr.contains("keyed (HMAC-SHA-256) from event 1 on"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("compared with "), "{}", out.stderr);

    // Replace the whole store by another history written with the same key.
    for f in ["history.db", "history.db-wal", "history.db-shm"] {
        let _ = std::fs::remove_file(ws.path().join(f));
    }
    std::fs::remove_file(ws.path().join("scans/s1.json")).unwrap();
    ws.add_scan(
        "s2.json",
        &scan(
            &now_rfc3339(),
            vec![ident(2, "u2@contoso.com")],
            vec![finding("F1", "high", &[2])],
        ),
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = ws.cli(&["audit", "verify", "--checkpoint", saved.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("(rewritten)"), "{}", out.stdout);
}

// ---------------------------------------------------------------- item 19

/// `history`, `audit verify` and `approvals list/show` on a misspelt store path
/// fail naming it, and create nothing.
#[test]
fn read_only_commands_never_create_a_store() {
    let ws = Workspace::new();
    let cfg = std::fs::read_to_string(ws.config_path())
        .unwrap()
        .replace("sqlite://history.db", "sqlite://histroy/history.db");
    std::fs::write(ws.config_path(), cfg).unwrap();
    let before = listing(ws.path());
    for args in [
        &["history"][..],
        &["audit", "verify"],
        &["approvals", "list"],
        &["approvals", "show", "1"],
    ] {
        let out = ws.cli(args);
        assert_ne!(out.code, 0, "{args:?}: {}", out.all());
        assert!(
            out.stderr.contains("histroy/history.db does not exist"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("intact"), "{args:?}: {}", out.stdout);
    }
    assert_eq!(listing(ws.path()), before);

    // An existing file that holds no history is refused untouched too.
    std::fs::create_dir(ws.path().join("histroy")).unwrap();
    std::fs::write(ws.path().join("histroy/history.db"), "").unwrap();
    let out = ws.cli(&["audit", "verify"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("not an entra-remediator store"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::metadata(ws.path().join("histroy/history.db"))
            .unwrap()
            .len(),
        0
    );
}

/// Every file under `dir`, for comparing before and after.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- item 7 (store part)

/// Looking up one action's events uses the `events_action` index instead of
/// scanning every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_action_use_the_index() {
    let f = Fresh::sqlite();
    let s = open_with(&OpenOptions::new(&f.url)).await.unwrap();
    s.record_run(&run("r1"), &[pending_disable(1), pending_disable(2)], &[])
        .await
        .unwrap();
    let filter = Filter {
        action_id: Some(2),
        ..Filter::default()
    };
    let sql = entra_remediator::store::sqlite_events_sql(&filter);
    let mut c = sqlx::SqliteConnection::connect(&f.url).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(Some(2_i64))
            .fetch_all(&mut c)
            .await
            .unwrap();
    let details: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("SEARCH e USING INDEX events_action")),
        "{details:?}"
    );
    assert!(!details.contains(&"SCAN e"), "{details:?}");
    // And it still finds exactly that action's events.
    let events = s.events(&filter).await.unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.action_id == Some(2)));
}

// ---------------------------------------------------------------- item 21 (parts)

/// `history --identity` matches object ids in any case (both backends), and
/// `--since`/`--until` take a plain date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_filter_ignores_case_in_object_ids() {
    for f in Fresh::all().await {
        let s = open_with(&OpenOptions::new(&f.url)).await.unwrap();
        let mut a = pending_disable(1);
        a.identity_id = "0000000a-bbbb-cccc-dddd-eeeeeeeeeeee".into();
        s.record_run(&run("r1"), &[a], &[]).await.unwrap();
        let filter = Filter {
            identity: Some("0000000A-BBBB-CCCC-DDDD-EEEEEEEEEEEE".into()),
            ..Filter::default()
        };
        assert_eq!(s.events(&filter).await.unwrap().len(), 1, "{}", f.name());
        assert_eq!(s.actions(&filter).await.unwrap().len(), 1, "{}", f.name());
        f.cleanup().await;
    }
}

#[test]
fn history_takes_upper_case_ids_and_plain_dates() {
    let ws = Workspace::new();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s1.json",
        &scan(
            &now_rfc3339(),
            vec![ident(10, "u10@contoso.com")],
            vec![finding("F1", "high", &[10])],
        ),
    );
    let out = ws.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let upper = guid(10).to_uppercase();
    assert_ne!(upper, guid(10));
    let out = ws.cli(&["history", "--identity", &upper, "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let events = out.json_lines();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["identity_id"] == guid(10).as_str()));

    let today = Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap().to_string();
    let today = today.to_string();
    let out = ws.cli(&[
        "history", "--since", &today, "--until", &tomorrow, "--format", "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.json_lines().is_empty());
    let out = ws.cli(&["history", "--since", &tomorrow, "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.json_lines().is_empty());
    let out = ws.cli(&["history", "--since", "2026-13-01"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("nor a date like 2026-11-20"),
        "{}",
        out.stderr
    );
}

/// A PostgreSQL server that accepts but never answers: the command gives up
/// after `connect_timeout` and names the store without its password.
#[test]
fn unreachable_postgres_is_named_without_its_password() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ws = Workspace::new();
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "url = \"sqlite://history.db\"",
        &format!(
            "url = \"postgres://remediator:s3cret-pw@127.0.0.1:{port}/history\"\nconnect_timeout = \"1s\""
        ),
    );
    std::fs::write(ws.config_path(), cfg).unwrap();
    for args in [&["history"][..], &["audit", "verify"]] {
        let out = ws.cli(args);
        assert_ne!(out.code, 0, "{}", out.all());
        assert!(
            out.stderr.contains(&format!(
                "cannot open history store postgres://remediator@127.0.0.1:{port}/history"
            )),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("connect_timeout"), "{}", out.stderr);
        assert!(!out.all().contains("s3cret-pw"), "{}", out.all());
    }
    drop(silent);
}

/// The key from a systemd credential (`$CREDENTIALS_DIRECTORY/NAME`): writers
/// need it; `audit verify` without it says the keyed part cannot be checked.
#[test]
fn history_key_from_a_systemd_credential() {
    let mut ws = Workspace::new();
    ws.set_tables("history_key_credential = \"history-key\"\n");
    let creds = ws.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(
        creds.join("history-key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    ws.add_scan(
        "s1.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "u1@contoso.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let cli = |args: &[&str], with_creds: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_entra-remediator"));
        c.arg("--config")
            .arg(ws.config_path())
            .args(args)
            .current_dir(ws.path())
            .env_remove("ENTRA_REMEDIATOR_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY");
        if with_creds {
            c.env("CREDENTIALS_DIRECTORY", &creds);
        }
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = cli(&["run", "--once"], false);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("\"history-key\" is set but CREDENTIALS_DIRECTORY is not"),
        "{err}"
    );
    let (code, _, err) = cli(&["run", "--once"], true);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&["audit", "verify"], true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("keyed (HMAC-SHA-256) from event 1 on"),
        "{err}"
    );
    let (code, out, _) = cli(&["audit", "verify"], false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("keyed from event 1 on but no key is configured"),
        "{out}"
    );
    // `history` needs no key.
    let (code, _, err) = cli(&["history"], false);
    assert_eq!(code, 0, "{err}");
}

/// A read-only command that meets a store another process is creating right now
/// (the file exists, its header not yet written) waits for the creator's lock
/// instead of calling it "not an SQLite database".
#[test]
fn a_read_only_command_waits_for_a_store_being_created() {
    // A real store, made elsewhere, to appear once "creation" is over.
    let made = Workspace::new();
    made.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"x\")"));
    made.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            vec![ident(1, "a@t.com")],
            vec![finding("F1", "high", &[1])],
        ),
    );
    let out = made.cli(&["run", "--once"]);
    assert_eq!(out.code, 0, "{}", out.all());

    let ws = Workspace::new();
    let db = ws.db_path();
    let lock = std::fs::File::create(db.with_extension("migrate.lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(&db, "").unwrap();
    let cfg = ws.config_path();
    let dir = ws.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        run_bin(
            &dir,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "history",
                "--format",
                "json",
            ],
        )
    });
    // The creator finishes (the file gets its content) and lets go of the lock.
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::copy(made.db_path(), &db).unwrap();
    let wal = made.path().join("history.db-wal");
    if wal.exists() {
        std::fs::copy(&wal, ws.path().join("history.db-wal")).unwrap();
    }
    lock.unlock().unwrap();
    let out = reader.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.json_lines().iter().any(|e| e["kind"] == "run_recorded"),
        "{}",
        out.stdout
    );
}
