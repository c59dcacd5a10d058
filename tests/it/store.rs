//! The store contract: every test is written once against `&dyn Store` and runs
//! on a fresh SQLite file and, when `ENTRA_REMEDIATOR_TEST_POSTGRES_URL` is set,
//! on a fresh PostgreSQL schema. With `ENTRA_REMEDIATOR_REQUIRE_POSTGRES=1` and no
//! URL, the PostgreSQL tests fail instead of being skipped.

use std::io::Write;
use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use entra_remediator::approval::{ApprovalError, ApprovalPolicy, Decision};
use entra_remediator::domain::ActionKind;
use entra_remediator::domain::ActionState;
use entra_remediator::domain::Reason;
use entra_remediator::service::approvals::{DecideError, DecisionRequest, decide};
use entra_remediator::store::{
    EventRow, Filter, GENESIS, NewAction, NewEvent, NewRuleError, NewRun, StateChange, Store,
    StoreError, event_hash, open, ts,
};
use sqlx::Connection;

const PG_URL_VAR: &str = "ENTRA_REMEDIATOR_TEST_POSTGRES_URL";
const PG_REQUIRE_VAR: &str = "ENTRA_REMEDIATOR_REQUIRE_POSTGRES";

// ---------------------------------------------------------------- backends

/// Where a test's store lives, for opening it again and for raw SQL.
enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        /// The URL from the environment (the schema is created and dropped there).
        admin_url: String,
        schema: String,
    },
}

/// A fresh store for one test (other modules' store tests use it too).
pub struct Db {
    pub(crate) store: Box<dyn Store>,
    /// The URL the store was opened with; `open` it again for a second instance.
    url: String,
    backend: Backend,
}

/// The PostgreSQL URL, or `None` (after saying so) when those tests are skipped.
fn postgres_url() -> Option<String> {
    static SKIPPED: Once = Once::new();
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var(PG_REQUIRE_VAR).as_deref() == Ok("1") {
                panic!(
                    "{PG_REQUIRE_VAR}=1 but {PG_URL_VAR} is not set: PostgreSQL store tests cannot run"
                );
            }
            SKIPPED.call_once(|| {
                // Straight to stderr, past the test harness's output capture.
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL store tests SKIPPED: set {PG_URL_VAR} to run them"
                );
            });
            None
        }
    }
}

/// `url` with `search_path` set to `schema` (sqlx reads the `options` parameter).
fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// The text columns of an `actions` row.
#[derive(sqlx::FromRow)]
struct RawAction {
    targets: String,
    reasons: String,
    rules: String,
    mode: String,
    created_at: String,
    expires_at: Option<String>,
}

impl Db {
    pub(crate) async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("history.db").display());
        let store = open(&url).await.unwrap();
        Db {
            store,
            url,
            backend: Backend::Sqlite { _dir: dir },
        }
    }

    pub(crate) async fn postgres() -> Option<Db> {
        let admin_url = postgres_url()?;
        let schema = format!("er_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {PG_URL_VAR}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = with_search_path(&admin_url, &schema);
        let store = open(&url).await.unwrap();
        Some(Db {
            store,
            url,
            backend: Backend::Postgres { admin_url, schema },
        })
    }

    fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Drops the test's PostgreSQL schema (SQLite's temp dir goes by itself).
    async fn cleanup(&self) {
        if let Backend::Postgres { admin_url, schema } = &self.backend
            && let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }

    /// An `actions` row's text columns as the database holds them.
    async fn raw_action(&self, id: i64) -> RawAction {
        let sql = format!(
            "SELECT targets, reasons, rules, mode, created_at, expires_at FROM actions WHERE id = {id}"
        );
        let sql = sqlx::AssertSqlSafe(sql);
        match &self.backend {
            Backend::Sqlite { .. } => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(sql).fetch_one(&mut c).await.unwrap()
            }
            Backend::Postgres { .. } => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    /// Runs SQL straight on the database, behind the store's back; the error
    /// message when the database refuses it.
    async fn exec(&self, sql: &str) -> Result<(), String> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let r = match &self.backend {
            Backend::Sqlite { .. } => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.map(|_| ())
            }
            Backend::Postgres { .. } => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.map(|_| ())
            }
        };
        r.map_err(|e| e.to_string())
    }

    /// Edits history with the append-only triggers out of the way.
    async fn tamper(&self, sql: &str) {
        let script = if self.is_postgres() {
            format!(
                "ALTER TABLE events DISABLE TRIGGER USER; {sql}; ALTER TABLE events ENABLE TRIGGER USER"
            )
        } else {
            format!(
                "DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete; {sql}"
            )
        };
        self.exec(&script).await.unwrap();
    }

    /// Runs one contract test, then cleans up even when it failed.
    pub(crate) async fn run<F>(self, test: F)
    where
        F: for<'a> FnOnce(
                &'a dyn Store,
                &'a Db,
            )
                -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>
            + Send
            + 'static,
    {
        let db = Arc::new(self);
        let d = db.clone();
        let res = tokio::spawn(async move { test(&*d.store, &d).await }).await;
        db.cleanup().await;
        if let Err(e) = res {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Each test once per backend: `store::sqlite::NAME` and `store::postgres::NAME`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::Db::sqlite()
                        .await
                        .run(|s, db| Box::pin(super::$name(s, db)))
                        .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::Db::postgres().await else { return };
                    db.run(|s, db| Box::pin(super::$name(s, db))).await;
                }
            )*
        }
    };
}

contract!(
    record_run_and_filter_actions,
    events_filters,
    hash_chain_verifies_and_catches_edits,
    history_is_append_only,
    decide_approve_and_reject,
    decide_four_eyes,
    decide_is_all_or_nothing,
    expire_due_expires_once,
    claim_moves_each_action_once,
    concurrent_claims_move_each_action_exactly_once,
    transition_append_and_record_event,
    tenant_state_round_trip,
    leases,
    undo_runs_do_not_count,
    a_scan_is_recorded_once_per_tenant,
);

// ---------------------------------------------------------------- builders

/// A fixed start time with sub-millisecond digits the store must drop.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

fn hours(h: i64) -> chrono::Duration {
    chrono::Duration::hours(h)
}

fn new_run(id: &str, tenant: &str, sha: &str, kind: &str, started_at: DateTime<Utc>) -> NewRun {
    NewRun {
        id: id.into(),
        tenant: tenant.into(),
        scan_source: format!("scans/{id}.json"),
        scan_sha256: sha.into(),
        scanned_at: started_at - chrono::Duration::minutes(5),
        rule_set_hash: "rules-hash".into(),
        mode: "approval".parse().unwrap(),
        downgrades: vec![],
        identities: 10,
        findings: 3,
        started_at,
        actor: "system".into(),
        kind: kind.parse().unwrap(),
    }
}

fn new_action(n: u32, upn: &str, kind: ActionKind, state: &str, rules: &[&str]) -> NewAction {
    NewAction {
        identity_id: format!("id-{n}"),
        identity_upn: upn.into(),
        identity_name: format!("User {n}"),
        kind: kind.into(),
        targets: if kind.needs_targets() {
            vec![format!("target-{n}")]
        } else {
            vec![]
        },
        reasons: rules
            .iter()
            .map(|r| Reason {
                rule: r.to_string(),
                finding: format!("F-{r}"),
                reason: format!("because {r}"),
            })
            .collect(),
        mode: "approval".parse().unwrap(),
        state: state.parse().unwrap(),
        state_reason: (state == "refused").then(|| "guardrail: last admin".to_string()),
        expires_at: None,
    }
}

fn pending(n: u32, kind: ActionKind) -> NewAction {
    new_action(n, &format!("u{n}@contoso.com"), kind, "pending", &["r"])
}

/// Records one run of `actions` for tenant `t`; returns the action ids.
async fn record(s: &dyn Store, run: &str, actions: Vec<NewAction>) -> Vec<i64> {
    s.record_run(
        &new_run(run, "t", &format!("sha-{run}"), "scan", t0()),
        &actions,
        &[],
    )
    .await
    .unwrap()
}

async fn all_events(s: &dyn Store) -> Vec<EventRow> {
    s.events(&Filter::default()).await.unwrap()
}

async fn state_of(s: &dyn Store, id: i64) -> String {
    s.action(id).await.unwrap().unwrap().state.to_string()
}

async fn assert_verified(s: &dyn Store) {
    let report = s.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn ids<T>(rows: &[T], id: impl Fn(&T) -> i64) -> Vec<i64> {
    rows.iter().map(id).collect()
}

fn approval_err(r: Result<impl std::fmt::Debug, DecideError>) -> ApprovalError {
    match r {
        Err(DecideError::Approval(e)) => e,
        other => panic!("expected an approval error, got {other:?}"),
    }
}

fn policy() -> ApprovalPolicy {
    ApprovalPolicy::default()
}

fn request(ids: &[i64], decision: Decision, by: &str, now: DateTime<Utc>) -> DecisionRequest {
    DecisionRequest {
        ids: ids.to_vec(),
        decision,
        by: by.into(),
        comment: Some(format!("{} by {by}", decision.as_str())),
        bulk: false,
        now,
        origin: Default::default(),
    }
}

/// Two tenants. Run "a" (tenant t, t0) with a downgrade, a rule error and three
/// actions; run "b" (tenant t2, t0 + 2 h) with one.
async fn two_runs(s: &dyn Store) -> (Vec<i64>, Vec<i64>) {
    let mut run_a = new_run("a", "t", "sha-a", "scan", t0());
    run_a.downgrades = vec!["too many actions: approval".into()];
    let mut a1 = new_action(
        1,
        "u1@contoso.com",
        ActionKind::DisableUser,
        "pending",
        &["r-a", "r_b"],
    );
    a1.expires_at = Some(t0() + hours(24));
    let a2 = new_action(
        2,
        "u2@contoso.com",
        ActionKind::RevokeSessions,
        "ready",
        &["r-ab"],
    );
    let a3 = new_action(
        1,
        "u1@contoso.com",
        ActionKind::RemoveRoleAssignment,
        "refused",
        &["r-a"],
    );
    let errors = vec![NewRuleError {
        rule: "r-broken".into(),
        finding: "F9".into(),
        identity_id: "id-2".into(),
        message: "boom".into(),
    }];
    let a = s.record_run(&run_a, &[a1, a2, a3], &errors).await.unwrap();
    let run_b = new_run("b", "t2", "sha-b", "scan", t0() + hours(2));
    let b1 = new_action(
        3,
        "Ü3@Fabrikam.com",
        ActionKind::DisableUser,
        "ready",
        &["r-a"],
    );
    let b = s.record_run(&run_b, &[b1], &[]).await.unwrap();
    (a, b)
}

// ---------------------------------------------------------------- tests

async fn record_run_and_filter_actions(s: &dyn Store, db: &Db) {
    let (a, b) = two_runs(s).await;
    assert_eq!(a, vec![1, 2, 3]);
    assert_eq!(b, vec![4]);

    let one = s.action(1).await.unwrap().unwrap();
    assert_eq!(one.run_id, "a");
    assert_eq!(one.tenant, "t");
    assert_eq!(one.identity_id, "id-1");
    assert_eq!(one.identity_upn, "u1@contoso.com");
    assert_eq!(one.identity_name, "User 1");
    assert_eq!(one.kind, "disable_user");
    // The columns as the database holds them, read behind the store's back.
    let raw = db.raw_action(1).await;
    assert_eq!(raw.targets, "[]");
    let reasons: Vec<Reason> = serde_json::from_str(&raw.reasons).unwrap();
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[1].rule, "r_b");
    assert_eq!(one.reasons, reasons);
    assert_eq!(raw.rules, ",r-a,r_b,");
    assert_eq!(one.rules, vec!["r-a", "r_b"]);
    assert_eq!(raw.mode, "approval");
    assert_eq!(one.state, "pending");
    assert_eq!(one.state_reason, None);
    // Milliseconds, UTC, `Z`: byte for byte what `ts` writes.
    assert_eq!(raw.created_at, "2026-03-01T10:00:00.123Z");
    assert_eq!(raw.created_at, ts(t0()));
    assert_eq!(ts(one.created_at), ts(t0()));
    assert_eq!(raw.expires_at.as_deref(), Some("2026-03-02T10:00:00.123Z"));
    assert_eq!(one.expires_at.map(ts).as_deref(), raw.expires_at.as_deref());
    let three = s.action(3).await.unwrap().unwrap();
    assert_eq!(db.raw_action(3).await.targets, "[\"target-1\"]");
    assert_eq!(three.targets, vec!["target-1"]);
    assert_eq!(three.state_reason.as_deref(), Some("guardrail: last admin"));
    assert_eq!(three.expires_at, None);
    assert!(s.action(99).await.unwrap().is_none());
    assert!(s.approvals(1).await.unwrap().is_empty());

    let q = |f: Filter| async move { ids(&s.actions(&f).await.unwrap(), |a| a.id) };
    assert_eq!(q(Filter::default()).await, vec![1, 2, 3, 4]);
    let f = |edit: fn(&mut Filter)| {
        let mut f = Filter::default();
        edit(&mut f);
        f
    };
    assert_eq!(q(f(|f| f.tenant = Some("t".into()))).await, vec![1, 2, 3]);
    assert_eq!(q(f(|f| f.tenant = Some("t2".into()))).await, vec![4]);
    assert_eq!(
        q(f(|f| f.tenant = Some("T".into()))).await,
        Vec::<i64>::new()
    );
    assert_eq!(q(f(|f| f.identity = Some("id-1".into()))).await, vec![1, 3]);
    // UPNs match without regard to ASCII case.
    assert_eq!(
        q(f(|f| f.identity = Some("U1@CONTOSO.com".into()))).await,
        vec![1, 3]
    );
    assert_eq!(
        q(f(|f| f.identity = Some("Ü3@fabrikam.COM".into()))).await,
        vec![4]
    );
    // Case is folded for ASCII letters only, on both backends (SQLite's `lower`).
    assert_eq!(
        q(f(|f| f.identity = Some("ü3@fabrikam.com".into()))).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        q(f(|f| f.identity = Some("u1@contoso".into()))).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        q(f(|f| f.action = Some("disable_user".into()))).await,
        vec![1, 4]
    );
    assert_eq!(q(f(|f| f.state = Some("ready".into()))).await, vec![2, 4]);
    assert_eq!(q(f(|f| f.state = Some("refused".into()))).await, vec![3]);
    // Rules match exactly: never a prefix, never a pattern.
    assert_eq!(q(f(|f| f.rule = Some("r-a".into()))).await, vec![1, 3, 4]);
    assert_eq!(q(f(|f| f.rule = Some("r-ab".into()))).await, vec![2]);
    assert_eq!(q(f(|f| f.rule = Some("r_b".into()))).await, vec![1]);
    for no in ["r", "r-", "r_a", "r%", "%", "_", ""] {
        let filter = Filter {
            rule: Some(no.into()),
            ..Filter::default()
        };
        assert_eq!(q(filter).await, Vec::<i64>::new(), "rule {no:?}");
    }
    assert_eq!(q(f(|f| f.run = Some("b".into()))).await, vec![4]);
    assert_eq!(q(f(|f| f.since = Some(t0()))).await, vec![1, 2, 3, 4]);
    assert_eq!(q(f(|f| f.since = Some(t0() + hours(1)))).await, vec![4]);
    assert_eq!(
        q(f(|f| f.until = Some(t0() + hours(1)))).await,
        vec![1, 2, 3]
    );
    // `until` is exclusive, `since` inclusive, both at millisecond precision.
    assert_eq!(
        q(f(|f| f.until = Some(t0() + hours(2)))).await,
        vec![1, 2, 3]
    );
    assert_eq!(q(f(|f| f.since = Some(t0() + hours(2)))).await, vec![4]);
    // The newest `limit`, oldest first.
    assert_eq!(q(f(|f| f.limit = Some(2))).await, vec![3, 4]);
    assert_eq!(q(f(|f| f.limit = Some(10))).await, vec![1, 2, 3, 4]);
    assert_eq!(q(f(|f| f.limit = Some(0))).await, Vec::<i64>::new());
    assert_eq!(q(f(|f| f.limit = Some(-1))).await, vec![1, 2, 3, 4]);
    let combined = Filter {
        tenant: Some("t".into()),
        identity: Some("u1@contoso.com".into()),
        rule: Some("r-a".into()),
        state: Some("pending".into()),
        limit: Some(5),
        ..Filter::default()
    };
    assert_eq!(q(combined).await, vec![1]);
}

async fn events_filters(s: &dyn Store, _db: &Db) {
    two_runs(s).await;
    let events = all_events(s).await;
    let kinds: Vec<(i64, &str)> = events.iter().map(|e| (e.seq, e.kind.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (1, "run_recorded"),
            (2, "run_downgraded"),
            (3, "rule_error"),
            (4, "action_recorded"),
            (5, "action_recorded"),
            (6, "action_recorded"),
            (7, "run_recorded"),
            (8, "action_recorded"),
        ]
    );
    assert!(
        events[..6]
            .iter()
            .all(|e| e.at == "2026-03-01T10:00:00.123Z")
    );
    assert_eq!(events[7].at, "2026-03-01T12:00:00.123Z");
    assert_eq!(events[1].detail, "too many actions: approval");
    assert_eq!(events[2].rule.as_deref(), Some("r-broken"));
    assert_eq!(events[2].identity_id.as_deref(), Some("id-2"));
    assert_eq!(events[3].action_id, Some(1));
    assert_eq!(events[3].action_kind.as_deref(), Some("disable_user"));
    assert_eq!(events[3].state.as_deref(), Some("pending"));
    assert_eq!(events[5].state.as_deref(), Some("refused"));
    let recorded: serde_json::Value = serde_json::from_str(&events[0].detail).unwrap();
    assert_eq!(recorded["actions"], 3);
    assert_eq!(recorded["actionable"], 2);

    let q = |f: Filter| async move { ids(&s.events(&f).await.unwrap(), |e| e.seq) };
    let f = |edit: fn(&mut Filter)| {
        let mut f = Filter::default();
        edit(&mut f);
        f
    };
    assert_eq!(q(f(|f| f.tenant = Some("t2".into()))).await, vec![7, 8]);
    assert_eq!(q(f(|f| f.identity = Some("id-2".into()))).await, vec![3, 5]);
    assert_eq!(
        q(f(|f| f.identity = Some("U1@Contoso.COM".into()))).await,
        vec![4, 6]
    );
    assert_eq!(
        q(f(|f| f.action = Some("disable_user".into()))).await,
        vec![4, 8]
    );
    assert_eq!(q(f(|f| f.state = Some("ready".into()))).await, vec![5, 8]);
    // A rule matches its rule errors and the events of actions it asked for.
    assert_eq!(q(f(|f| f.rule = Some("r-a".into()))).await, vec![4, 6, 8]);
    assert_eq!(q(f(|f| f.rule = Some("r-broken".into()))).await, vec![3]);
    assert_eq!(q(f(|f| f.rule = Some("r_b".into()))).await, vec![4]);
    assert_eq!(
        q(f(|f| f.rule = Some("r%".into()))).await,
        Vec::<i64>::new()
    );
    assert_eq!(q(f(|f| f.rule = Some("r".into()))).await, Vec::<i64>::new());
    assert_eq!(
        q(f(|f| f.run = Some("a".into()))).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(q(f(|f| f.since = Some(t0() + hours(1)))).await, vec![7, 8]);
    assert_eq!(
        q(f(|f| f.until = Some(t0() + hours(1)))).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(q(f(|f| f.limit = Some(3))).await, vec![6, 7, 8]);
    assert_eq!(q(f(|f| f.limit = Some(-1))).await.len(), 8);
    assert_eq!(q(f(|f| f.action_id = Some(2))).await, vec![5]);
    let combined = Filter {
        tenant: Some("t".into()),
        rule: Some("r-a".into()),
        limit: Some(1),
        ..Filter::default()
    };
    assert_eq!(q(combined).await, vec![6]);
}

async fn hash_chain_verifies_and_catches_edits(s: &dyn Store, db: &Db) {
    two_runs(s).await;
    let events = all_events(s).await;
    let mut prev = GENESIS.to_string();
    for e in &events {
        assert_eq!(e.prev_hash, prev, "event {}", e.seq);
        assert_eq!(e.hash, event_hash(e.seq, &e.at, &e.content(), &e.prev_hash));
        prev = e.hash.clone();
    }
    let report = s.verify().await.unwrap();
    assert_eq!(report.events, 8);
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // A state changed behind history's back (the trigger allows state changes).
    db.exec("UPDATE actions SET state = 'approved' WHERE id = 1")
        .await
        .unwrap();
    let report = s.verify().await.unwrap();
    assert_eq!(
        report.problems,
        vec!["action 1: state is approved but history last recorded pending".to_string()]
    );
    db.exec("UPDATE actions SET state = 'pending' WHERE id = 1")
        .await
        .unwrap();
    assert_verified(s).await;

    // An edited event.
    db.tamper("UPDATE events SET detail = 'nothing to see' WHERE seq = 2")
        .await;
    let report = s.verify().await.unwrap();
    assert_eq!(report.events, 8);
    assert_eq!(
        report.problems,
        vec!["event 2: content does not match its hash (edited)".to_string()]
    );
    // A deleted event.
    db.tamper("DELETE FROM events WHERE seq = 5").await;
    let report = s.verify().await.unwrap();
    assert_eq!(report.events, 7);
    assert!(
        report
            .problems
            .contains(&"event 6: expected event 5 here: events are missing".to_string()),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .contains(&"action 2: has no history events".to_string()),
        "{:?}",
        report.problems
    );
}

async fn history_is_append_only(s: &dyn Store, db: &Db) {
    two_runs(s).await;
    decide(
        s,
        &request(&[1], Decision::Approve, "alice", t0()),
        &policy(),
    )
    .await
    .unwrap();
    let refused = [
        (
            "UPDATE events SET detail = 'x' WHERE seq = 1",
            "history is append-only: events cannot be updated",
        ),
        (
            "UPDATE events SET seq = seq",
            "history is append-only: events cannot be updated",
        ),
        (
            "DELETE FROM events WHERE seq = 8",
            "history is append-only: events cannot be deleted",
        ),
        (
            "DELETE FROM events",
            "history is append-only: events cannot be deleted",
        ),
        (
            "UPDATE approvals SET approver = 'mallory'",
            "history is append-only: approvals cannot be updated",
        ),
        (
            "DELETE FROM approvals",
            "history is append-only: approvals cannot be deleted",
        ),
        (
            "UPDATE runs SET actor = 'mallory'",
            "history is append-only: runs cannot be updated",
        ),
        (
            "DELETE FROM runs WHERE id = 'b'",
            "history is append-only: runs cannot be deleted",
        ),
        (
            "DELETE FROM actions WHERE id = 4",
            "history is append-only: actions cannot be deleted",
        ),
        (
            "UPDATE actions SET identity_upn = 'x@contoso.com' WHERE id = 1",
            "history is append-only: only an action's state may change",
        ),
        (
            "UPDATE actions SET targets = '[]', state = 'ready' WHERE id = 3",
            "history is append-only: only an action's state may change",
        ),
        (
            "UPDATE actions SET expires_at = NULL",
            "history is append-only: only an action's state may change",
        ),
    ];
    for (sql, want) in refused {
        let err = db.exec(sql).await.expect_err(&format!("{sql} was allowed"));
        assert!(err.contains(want), "{sql}: {err}");
    }
    if db.is_postgres() {
        for table in ["events", "approvals", "runs", "actions"] {
            let err = db
                .exec(&format!("TRUNCATE {table} CASCADE"))
                .await
                .expect_err("TRUNCATE was allowed");
            assert!(err.contains("history is append-only"), "{table}: {err}");
        }
    }
    // Nothing changed, and only state and its reason may change.
    assert_eq!(all_events(s).await.len(), 9);
    assert_eq!(s.approvals(1).await.unwrap().len(), 1);
    assert_eq!(s.actions(&Filter::default()).await.unwrap().len(), 4);
    assert_eq!(
        s.action(1).await.unwrap().unwrap().identity_upn,
        "u1@contoso.com"
    );
    db.exec("UPDATE actions SET state = state, state_reason = 'x' WHERE id = 2")
        .await
        .unwrap();
    assert_verified(s).await;
}

async fn decide_approve_and_reject(s: &dyn Store, _db: &Db) {
    let ids = record(
        s,
        "r1",
        vec![
            pending(1, ActionKind::DisableUser),
            pending(2, ActionKind::RevokeSessions),
            pending(3, ActionKind::RemoveGroupMembership),
        ],
    )
    .await;
    let now = t0() + hours(1);
    let rows = decide(
        s,
        &request(&[ids[0]], Decision::Approve, "alice", now),
        &policy(),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, ids[0]);
    assert_eq!(rows[0].state, "approved");
    assert_eq!(rows[0].state_reason.as_deref(), Some("approve by alice"));
    let approvals = s.approvals(ids[0]).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].approver, "alice");
    assert_eq!(approvals[0].decision, "approve");
    assert_eq!(approvals[0].comment.as_deref(), Some("approve by alice"));
    assert_eq!(approvals[0].at, ts(now));
    let last = all_events(s).await.pop().unwrap();
    assert_eq!(last.kind, "state_changed");
    assert_eq!(last.actor, "alice");
    assert_eq!(last.state.as_deref(), Some("approved"));
    assert_eq!(last.action_id, Some(ids[0]));
    assert_eq!(last.at, ts(now));

    // The same id twice is one decision.
    let rows = decide(
        s,
        &request(&[ids[1], ids[1]], Decision::Reject, "bob", now),
        &policy(),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "rejected");
    assert_eq!(rows[0].state_reason.as_deref(), Some("reject by bob"));
    assert_eq!(s.approvals(ids[1]).await.unwrap().len(), 1);
    // A single-identity action may be approved on its own.
    let rows = decide(
        s,
        &request(&[ids[2]], Decision::Approve, "carol", now),
        &policy(),
    )
    .await
    .unwrap();
    assert_eq!(rows[0].state, "approved");

    // Decided actions cannot be decided again.
    let err = approval_err(
        decide(
            s,
            &request(&[ids[1]], Decision::Approve, "alice", now),
            &policy(),
        )
        .await,
    );
    assert_eq!(
        err,
        ApprovalError::NotPending {
            id: ids[1],
            state: ActionState::Rejected
        }
    );
    // Who may decide.
    let only_alice = ApprovalPolicy {
        approvers: vec!["alice".into()],
        four_eyes: vec![],
        ..ApprovalPolicy::default()
    };
    let err = approval_err(
        decide(
            s,
            &request(&[ids[0]], Decision::Reject, "mallory", now),
            &only_alice,
        )
        .await,
    );
    assert_eq!(err, ApprovalError::NotAllowed("mallory".into()));
    let err = approval_err(
        decide(
            s,
            &request(&[ids[0]], Decision::Reject, " ", now),
            &policy(),
        )
        .await,
    );
    assert_eq!(err, ApprovalError::NoName);
    let err =
        approval_err(decide(s, &request(&[], Decision::Reject, "alice", now), &policy()).await);
    assert_eq!(err, ApprovalError::Empty);
    assert_verified(s).await;
}

async fn decide_four_eyes(s: &dyn Store, _db: &Db) {
    let ids = record(
        s,
        "r1",
        vec![
            pending(1, ActionKind::DisableUser),
            pending(2, ActionKind::RevokeSessions),
        ],
    )
    .await;
    let four_eyes = ApprovalPolicy {
        approvers: vec![],
        four_eyes: vec![ActionKind::DisableUser],
        ..ApprovalPolicy::default()
    };
    let now = t0() + hours(1);
    let rows = decide(
        s,
        &request(&[ids[0]], Decision::Approve, "alice", now),
        &four_eyes,
    )
    .await
    .unwrap();
    assert_eq!(rows[0].state, "pending");
    let last = all_events(s).await.pop().unwrap();
    assert_eq!(last.kind, "approval_recorded");
    assert_eq!(last.state.as_deref(), Some("pending"));
    assert!(
        last.detail
            .ends_with("a second approver is required (four eyes)")
    );
    let err = approval_err(
        decide(
            s,
            &request(&[ids[0]], Decision::Approve, "alice", now),
            &four_eyes,
        )
        .await,
    );
    assert_eq!(
        err,
        ApprovalError::SameApprover {
            id: ids[0],
            by: "alice".into()
        }
    );
    let rows = decide(
        s,
        &request(&[ids[0]], Decision::Approve, "bob", now),
        &four_eyes,
    )
    .await
    .unwrap();
    assert_eq!(rows[0].state, "approved");
    let approvers: Vec<String> = s
        .approvals(ids[0])
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.approver)
        .collect();
    assert_eq!(approvers, vec!["alice", "bob"]);
    // Actions not named in four_eyes need one approver.
    let rows = decide(
        s,
        &request(&[ids[1]], Decision::Approve, "alice", now),
        &four_eyes,
    )
    .await
    .unwrap();
    assert_eq!(rows[0].state, "approved");
    assert_verified(s).await;
}

async fn decide_is_all_or_nothing(s: &dyn Store, _db: &Db) {
    let mut expiring = pending(4, ActionKind::DisableUser);
    expiring.expires_at = Some(t0() + hours(1));
    let ids = record(
        s,
        "r1",
        vec![
            pending(1, ActionKind::DisableUser),
            new_action(
                2,
                "u2@contoso.com",
                ActionKind::RevokeSessions,
                "ready",
                &["r"],
            ),
            pending(3, ActionKind::RemoveRoleAssignment),
            expiring,
            pending(5, ActionKind::RevokeSessions),
        ],
    )
    .await;
    let now = t0() + hours(2);
    let events_before = all_events(s).await;
    let refusals = [
        (
            request(&[ids[0], ids[1]], Decision::Approve, "alice", now),
            ApprovalError::NotPending {
                id: ids[1],
                state: "ready".parse().unwrap(),
            },
        ),
        (
            request(&[ids[0], 99], Decision::Reject, "alice", now),
            ApprovalError::UnknownId(99),
        ),
        (
            request(&[ids[0], ids[2]], Decision::Approve, "alice", now),
            ApprovalError::NotBulk {
                id: ids[2],
                kind: "remove_role_assignment".into(),
            },
        ),
        (
            DecisionRequest {
                bulk: true,
                ..request(&[ids[2]], Decision::Approve, "alice", now)
            },
            ApprovalError::NotBulk {
                id: ids[2],
                kind: "remove_role_assignment".into(),
            },
        ),
        (
            request(&[ids[4], ids[3]], Decision::Approve, "alice", now),
            ApprovalError::NotPending {
                id: ids[3],
                state: "expired".parse().unwrap(),
            },
        ),
    ];
    for (req, want) in refusals {
        let err = approval_err(decide(s, &req, &policy()).await);
        assert_eq!(err, want);
    }
    // Nothing changed anywhere.
    for id in &ids {
        assert!(s.approvals(*id).await.unwrap().is_empty());
    }
    assert_eq!(state_of(s, ids[0]).await, "pending");
    assert_eq!(state_of(s, ids[4]).await, "pending");
    assert_eq!(all_events(s).await.len(), events_before.len());
    // Rejecting in bulk is allowed for every kind.
    let rows = decide(
        s,
        &DecisionRequest {
            bulk: true,
            ..request(&[ids[0], ids[2], ids[4]], Decision::Reject, "alice", now)
        },
        &policy(),
    )
    .await
    .unwrap();
    assert_eq!(ids_of_rows(&rows), vec![ids[0], ids[2], ids[4]]);
    assert!(rows.iter().all(|r| r.state == "rejected"));
    assert_eq!(all_events(s).await.len(), events_before.len() + 3);
    assert_verified(s).await;
}

fn ids_of_rows(rows: &[entra_remediator::domain::Action]) -> Vec<i64> {
    ids(rows, |a| a.id)
}

async fn expire_due_expires_once(s: &dyn Store, _db: &Db) {
    let at = |n: u32, h: i64| {
        let mut a = pending(n, ActionKind::DisableUser);
        a.expires_at = Some(t0() + hours(h));
        a
    };
    let mut ready = new_action(
        4,
        "u4@contoso.com",
        ActionKind::DisableUser,
        "ready",
        &["r"],
    );
    ready.expires_at = Some(t0() + hours(1));
    let ids = record(
        s,
        "r1",
        vec![
            at(1, 1),
            at(2, 3),
            pending(3, ActionKind::DisableUser),
            ready,
        ],
    )
    .await;
    assert_eq!(s.expire_due(t0()).await.unwrap(), 0);
    let now = t0() + hours(2);
    assert_eq!(s.expire_due(now).await.unwrap(), 1);
    let one = s.action(ids[0]).await.unwrap().unwrap();
    assert_eq!(one.state, "expired");
    assert_eq!(
        one.state_reason.as_deref(),
        Some("approval window passed without a decision")
    );
    let last = all_events(s).await.pop().unwrap();
    assert_eq!(last.kind, "state_changed");
    assert_eq!(last.actor, "system");
    assert_eq!(last.state.as_deref(), Some("expired"));
    assert_eq!(last.at, ts(now));
    assert_eq!(
        last.detail,
        "pending since 2026-03-01T10:00:00.123Z; expired at 2026-03-01T11:00:00.123Z without a decision"
    );
    assert_eq!(s.expire_due(now).await.unwrap(), 0);
    // Due at exactly its expiry.
    assert_eq!(s.expire_due(t0() + hours(3)).await.unwrap(), 1);
    assert_eq!(state_of(s, ids[1]).await, "expired");
    assert_eq!(s.expire_due(t0() + hours(1000)).await.unwrap(), 0);
    assert_eq!(state_of(s, ids[2]).await, "pending");
    assert_eq!(state_of(s, ids[3]).await, "ready");
    assert_verified(s).await;
}

async fn claim_moves_each_action_once(s: &dyn Store, _db: &Db) {
    let ready = |n: u32| {
        new_action(
            n,
            &format!("u{n}@contoso.com"),
            ActionKind::DisableUser,
            "ready",
            &["r"],
        )
    };
    let ids = record(
        s,
        "r1",
        vec![ready(1), ready(2), pending(3, ActionKind::DisableUser), {
            let mut a = ready(4);
            a.state = ActionState::Approved;
            a
        }],
    )
    .await;
    let mut all = ids.clone();
    all.push(99);
    let moved = s
        .claim(
            &all,
            &[ActionState::Ready, ActionState::Approved],
            ActionState::Executing,
            "daemon-1",
            "claimed",
        )
        .await
        .unwrap();
    assert_eq!(ids_of_rows(&moved), vec![ids[0], ids[1], ids[3]]);
    assert!(
        moved
            .iter()
            .all(|a| a.state == "executing" && a.state_reason.is_none())
    );
    assert_eq!(state_of(s, ids[2]).await, "pending");
    let events = all_events(s).await;
    let claimed: Vec<&EventRow> = events
        .iter()
        .filter(|e| e.kind == "state_changed")
        .collect();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|e| e.actor == "daemon-1"
        && e.detail == "claimed"
        && e.state.as_deref() == Some("executing")));
    // Again: nothing left to move.
    let again = s
        .claim(
            &all,
            &[ActionState::Ready, ActionState::Approved],
            ActionState::Executing,
            "daemon-1",
            "claimed",
        )
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(all_events(s).await.len(), events.len());
    assert!(
        s.claim(&[], &[ActionState::Ready], ActionState::Executing, "d", "x")
            .await
            .unwrap()
            .is_empty()
    );
    assert_verified(s).await;
}

async fn concurrent_claims_move_each_action_exactly_once(s: &dyn Store, db: &Db) {
    // A second instance on the same database, as another daemon would be.
    let other = open(&db.url).await.unwrap();
    for round in 0..4 {
        let actions = (0..12)
            .map(|n| {
                new_action(
                    n,
                    &format!("u{n}@contoso.com"),
                    ActionKind::RevokeSessions,
                    "ready",
                    &["r"],
                )
            })
            .collect();
        let ids = record(s, &format!("run-{round}"), actions).await;
        let reversed: Vec<i64> = ids.iter().rev().copied().collect();
        let (one, two, three) = tokio::join!(
            s.claim(
                &ids,
                &[ActionState::Ready],
                ActionState::Executing,
                "daemon-1",
                "claimed"
            ),
            other.claim(
                &reversed,
                &[ActionState::Ready],
                ActionState::Executing,
                "daemon-2",
                "claimed"
            ),
            s.claim(
                &ids,
                &[ActionState::Ready],
                ActionState::Executing,
                "daemon-3",
                "claimed"
            ),
        );
        let (one, two, three) = (one.unwrap(), two.unwrap(), three.unwrap());
        let mut moved: Vec<i64> = ids_of_rows(&one);
        moved.extend(ids_of_rows(&two));
        moved.extend(ids_of_rows(&three));
        moved.sort();
        assert_eq!(
            moved, ids,
            "round {round}: each action moved exactly once in total"
        );
        for id in &ids {
            assert_eq!(state_of(s, *id).await, "executing");
            let f = Filter {
                action_id: Some(*id),
                ..Filter::default()
            };
            let changes = s
                .events(&f)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == "state_changed")
                .count();
            assert_eq!(changes, 1, "action {id}");
        }
    }
    assert_verified(s).await;
    assert_verified(&*other).await;
}

async fn transition_append_and_record_event(s: &dyn Store, _db: &Db) {
    let ids = record(s, "r1", vec![pending(1, ActionKind::DisableUser)]).await;
    let before = all_events(s).await.len() as i64;
    s.transition(vec![StateChange {
        action_id: ids[0],
        state: "failed".parse().unwrap(),
        reason: Some("Graph said no".into()),
        event: NewEvent {
            tenant: Some("t".into()),
            kind: "execution_failed".into(),
            actor: "daemon".into(),
            detail: "403".into(),
            // Both are set from the change.
            action_id: Some(999),
            state: Some("ignored".into()),
            ..NewEvent::default()
        },
    }])
    .await
    .unwrap();
    let a = s.action(ids[0]).await.unwrap().unwrap();
    assert_eq!(a.state, "failed");
    assert_eq!(a.state_reason.as_deref(), Some("Graph said no"));
    let last = all_events(s).await.pop().unwrap();
    assert_eq!(last.seq, before + 1);
    assert_eq!(last.kind, "execution_failed");
    assert_eq!(last.action_id, Some(ids[0]));
    assert_eq!(last.state.as_deref(), Some("failed"));
    s.transition(vec![]).await.unwrap();
    s.append(vec![]).await.unwrap();
    assert_eq!(all_events(s).await.len() as i64, before + 1);

    let event = |kind: &str| NewEvent {
        tenant: Some("t".into()),
        kind: kind.parse().unwrap(),
        actor: "daemon".into(),
        detail: format!("{kind} detail"),
        ..NewEvent::default()
    };
    s.append(vec![event("graph_call"), event("snapshot")])
        .await
        .unwrap();
    s.record_event(event("scan_rejected")).await.unwrap();
    let events = all_events(s).await;
    let tail: Vec<(i64, &str)> = events[events.len() - 3..]
        .iter()
        .map(|e| (e.seq, e.kind.as_str()))
        .collect();
    assert_eq!(
        tail,
        vec![
            (before + 2, "graph_call"),
            (before + 3, "snapshot"),
            (before + 4, "scan_rejected")
        ]
    );
    let n = events.len();
    assert_eq!(events[n - 3].at, events[n - 2].at);
    // Times are the store's format: parseable, UTC, milliseconds.
    for e in &events[n - 3..] {
        assert_eq!(e.at.len(), "2026-03-01T10:00:00.123Z".len(), "{}", e.at);
        assert!(e.at.ends_with('Z'));
        let parsed = DateTime::parse_from_rfc3339(&e.at)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ts(parsed), e.at);
    }
    assert_verified(s).await;
}

async fn tenant_state_round_trip(s: &dyn Store, _db: &Db) {
    assert_eq!(s.tenant_state("t", "mfa_policy").await.unwrap(), None);
    let event = |v: &str| NewEvent {
        tenant: Some("t".into()),
        kind: "tenant_state_set".into(),
        actor: "daemon".into(),
        detail: v.into(),
        ..NewEvent::default()
    };
    s.set_tenant_state("t", "mfa_policy", "p-1", event("p-1"))
        .await
        .unwrap();
    assert_eq!(
        s.tenant_state("t", "mfa_policy").await.unwrap().as_deref(),
        Some("p-1")
    );
    s.set_tenant_state("t", "mfa_policy", "p-2", event("p-2"))
        .await
        .unwrap();
    s.set_tenant_state("t2", "mfa_policy", "q-1", event("q-1"))
        .await
        .unwrap();
    assert_eq!(
        s.tenant_state("t", "mfa_policy").await.unwrap().as_deref(),
        Some("p-2")
    );
    assert_eq!(
        s.tenant_state("t2", "mfa_policy").await.unwrap().as_deref(),
        Some("q-1")
    );
    assert_eq!(s.tenant_state("t", "other").await.unwrap(), None);
    let details: Vec<String> = all_events(s).await.into_iter().map(|e| e.detail).collect();
    assert_eq!(details, vec!["p-1", "p-2", "q-1"]);
    assert_verified(s).await;
}

async fn leases(s: &dyn Store, db: &Db) {
    let other = open(&db.url).await.unwrap();
    let ttl = Duration::from_secs(1);
    let long = Duration::from_secs(60);
    assert!(s.try_lease("tenant:t", "a", ttl).await.unwrap());
    // Renewed by its holder, refused to anyone else (on any instance).
    assert!(s.try_lease("tenant:t", "a", ttl).await.unwrap());
    assert!(!other.try_lease("tenant:t", "b", ttl).await.unwrap());
    assert!(!s.try_lease("tenant:t", "b", long).await.unwrap());
    // Other names are independent.
    assert!(other.try_lease("tenant:u", "b", long).await.unwrap());
    // Only the holder can give it back.
    other.release_lease("tenant:t", "b").await.unwrap();
    assert!(!other.try_lease("tenant:t", "b", ttl).await.unwrap());
    // A holder that stops renewing loses it when it runs out.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(other.try_lease("tenant:t", "b", long).await.unwrap());
    assert!(!s.try_lease("tenant:t", "a", ttl).await.unwrap());
    other.release_lease("tenant:t", "b").await.unwrap();
    assert!(s.try_lease("tenant:t", "a", long).await.unwrap());
    // Two instances racing for a free lease: exactly one wins.
    let (x, y) = tokio::join!(
        s.try_lease("race", "x", long),
        other.try_lease("race", "y", long)
    );
    assert!(x.unwrap() ^ y.unwrap());
    assert!(!other.try_lease("tenant:u", "a", long).await.unwrap());
    // Leases are not history.
    assert!(all_events(s).await.is_empty());
}

/// `record_run_once` records a scan run only when no scan run of the same
/// tenant and scan is recorded (checked in its own transaction): the second of
/// two instances that reach one scan records nothing; `record_run` (a forced
/// run) still records again.
async fn a_scan_is_recorded_once_per_tenant(s: &dyn Store, _db: &Db) {
    let first = s
        .record_run_once(
            &new_run("r1", "t", "sha-a", "scan", t0()),
            &[pending(1, ActionKind::DisableUser)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let before = all_events(s).await.len();
    let again = s
        .record_run_once(
            &new_run("r2", "t", "sha-a", "scan", t0() + hours(1)),
            &[pending(2, ActionKind::DisableUser)],
            &[],
        )
        .await;
    match again {
        Err(StoreError::AlreadyRecorded {
            tenant,
            scan_sha256,
        }) => {
            assert_eq!((tenant.as_str(), scan_sha256.as_str()), ("t", "sha-a"));
        }
        other => panic!("expected AlreadyRecorded, got {other:?}"),
    }
    assert_eq!(all_events(s).await.len(), before, "nothing recorded");
    let actions = s.actions(&Filter::default()).await.unwrap();
    assert_eq!(
        ids(&actions, |a| a.id),
        first,
        "only the first run's action"
    );
    // Another scan of the tenant, and the same scan of another tenant, record.
    s.record_run_once(
        &new_run("r3", "t", "sha-b", "scan", t0() + hours(2)),
        &[],
        &[],
    )
    .await
    .unwrap();
    s.record_run_once(
        &new_run("r4", "u", "sha-a", "scan", t0() + hours(3)),
        &[],
        &[],
    )
    .await
    .unwrap();
    // A forced run records the same scan again.
    s.record_run(
        &new_run("r5", "t", "sha-a", "scan", t0() + hours(4)),
        &[],
        &[],
    )
    .await
    .unwrap();
    assert!(all_events(s).await.len() > before);
    assert_verified(s).await;
}

async fn undo_runs_do_not_count(s: &dyn Store, _db: &Db) {
    assert!(!s.scan_processed("t", "sha-1").await.unwrap());
    assert_eq!(s.previous_action_count("t").await.unwrap(), None);
    assert_eq!(s.last_run_at("t").await.unwrap(), None);

    let actions = vec![
        pending(1, ActionKind::DisableUser),
        new_action(
            2,
            "u2@contoso.com",
            ActionKind::DisableUser,
            "ready",
            &["r"],
        ),
        new_action(
            3,
            "u3@contoso.com",
            ActionKind::DisableUser,
            "refused",
            &["r"],
        ),
        new_action(
            4,
            "u4@contoso.com",
            ActionKind::DisableUser,
            "planned",
            &["r"],
        ),
    ];
    s.record_run(&new_run("s1", "t", "sha-1", "scan", t0()), &actions, &[])
        .await
        .unwrap();
    // An undo run, later and with more actions, counts for none of them.
    let undo: Vec<NewAction> = (5..10)
        .map(|n| pending(n, ActionKind::RevokeSessions))
        .collect();
    s.record_run(
        &new_run("u1", "t", "sha-undo", "undo", t0() + hours(5)),
        &undo,
        &[],
    )
    .await
    .unwrap();
    // Nor does a person's request (kind `manual`), even of a scan; its actor
    // is the requester.
    let manual: Vec<NewAction> = (10..16)
        .map(|n| pending(n, ActionKind::DisableUser))
        .collect();
    let run = NewRun {
        actor: "alice@contoso.com".into(),
        ..new_run("m1", "t", "sha-m", "manual", t0() + hours(6))
    };
    s.record_run(&run, &manual, &[]).await.unwrap();
    assert!(!s.scan_processed("t", "sha-m").await.unwrap());
    assert_eq!(
        s.run_actor("m1").await.unwrap().as_deref(),
        Some("alice@contoso.com")
    );
    assert_eq!(s.run_actor("s1").await.unwrap().as_deref(), Some("system"));
    assert_eq!(s.run_actor("no-such-run").await.unwrap(), None);
    assert!(s.scan_processed("t", "sha-1").await.unwrap());
    assert!(!s.scan_processed("t", "sha-undo").await.unwrap());
    assert!(!s.scan_processed("t2", "sha-1").await.unwrap());
    assert_eq!(s.previous_action_count("t").await.unwrap(), Some(2));
    assert_eq!(s.previous_action_count("t2").await.unwrap(), None);
    let last = s.last_run_at("t").await.unwrap().unwrap();
    assert_eq!(ts(last), "2026-03-01T10:00:00.123Z");
    assert_eq!(s.last_run_at("t2").await.unwrap(), None);

    // Two scan runs started at the same time: the one recorded last is the previous run.
    let later = t0() + hours(1);
    s.record_run(&new_run("s2", "t", "sha-2", "scan", later), &[], &[])
        .await
        .unwrap();
    s.record_run(
        &new_run("s3", "t", "sha-3", "scan", later),
        &[new_action(
            9,
            "u9@contoso.com",
            ActionKind::DisableUser,
            "ready",
            &["r"],
        )],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(s.previous_action_count("t").await.unwrap(), Some(1));
    assert_eq!(s.last_run_at("t").await.unwrap().map(ts), Some(ts(later)));
    // A run id is recorded once.
    assert!(
        s.record_run(&new_run("s3", "t", "sha-4", "scan", later), &[], &[])
            .await
            .is_err()
    );
    assert!(!s.scan_processed("t", "sha-4").await.unwrap());
    assert_verified(s).await;
}

// ---------------------------------------------------------------- both at once

/// A history made only of the store's inputs (no clock reads), so it is the same
/// everywhere.
async fn deterministic_history(s: &dyn Store) -> serde_json::Value {
    two_runs(s).await;
    let now = t0() + hours(3);
    decide(s, &request(&[2], Decision::Reject, "bob", now), &policy())
        .await
        .unwrap_err();
    decide(
        s,
        &request(&[1], Decision::Approve, "alice", now),
        &policy(),
    )
    .await
    .unwrap();
    let ids = record(
        s,
        "c",
        vec![{
            let mut a = pending(7, ActionKind::EnforceMfa);
            a.expires_at = Some(t0() + hours(1));
            a
        }],
    )
    .await;
    s.expire_due(now).await.unwrap();
    let mut approvals = Vec::new();
    for id in 1..=ids[0] {
        approvals.push(serde_json::to_value(s.approvals(id).await.unwrap()).unwrap());
    }
    serde_json::json!({
        "events": serde_json::to_value(all_events(s).await).unwrap(),
        "actions": serde_json::to_value(s.actions(&Filter::default()).await.unwrap()).unwrap(),
        "approvals": approvals,
    })
}

/// Both backends store and return the same strings, so the same inputs give the
/// same hash chain, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_history_on_sqlite_and_postgres() {
    let Some(pg) = Db::postgres().await else {
        return;
    };
    let lite = Db::sqlite().await;
    let a = deterministic_history(&*lite.store).await;
    let b = deterministic_history(&*pg.store).await;
    pg.cleanup().await;
    assert_eq!(a["events"].as_array().map(Vec::len), Some(12));
    assert_eq!(a, b);
}

/// `postgresql://` opens the same store as `postgres://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_scheme_opens_a_postgres_store() {
    let Some(pg) = Db::postgres().await else {
        return;
    };
    let url = pg.url.replacen("postgres://", "postgresql://", 1);
    let store = open(&url).await.unwrap();
    store
        .record_event(NewEvent {
            kind: "hello".into(),
            actor: "test".into(),
            detail: String::new(),
            ..NewEvent::default()
        })
        .await
        .unwrap();
    let seen = all_events(&*pg.store).await;
    pg.cleanup().await;
    assert_eq!(seen.len(), 1);
}

/// The URL helper keeps existing parameters.
#[test]
fn search_path_is_added_to_the_url() {
    assert_eq!(
        with_search_path("postgres://u@h/db", "s1"),
        "postgres://u@h/db?options=-csearch_path%3Ds1"
    );
    assert_eq!(
        with_search_path("postgres://u@h/db?sslmode=disable", "s1"),
        "postgres://u@h/db?sslmode=disable&options=-csearch_path%3Ds1"
    );
}
