//! The console's read side through real parts: scan views loaded from a real
//! scan directory through the cache, the dashboard, identity and finding pages,
//! history by person, paging and CSV, on a real SQLite file and (when
//! `ENTRA_REMEDIATOR_TEST_POSTGRES_URL` is set) on PostgreSQL.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entra_remediator::approval::{ApprovalPolicy, Decision};
use entra_remediator::config::Config;
use entra_remediator::domain::{ActionKind, Reason};
use entra_remediator::scan::{ScanError, Severity};
use entra_remediator::service::approvals::{DecisionRequest, decide};
use entra_remediator::service::history::{
    ACTION_CSV_COLUMNS, actions_page, chain_status, export_actions_csv,
};
use entra_remediator::service::posture::{
    AffectedQuery, SortKey, dashboard, finding_page, identity_page,
};
use entra_remediator::service::scan_view::{ScanCache, ScanView};
use entra_remediator::store::{Filter, NewAction, NewRun, Store};
use serde_json::json;

use crate::common::{Workspace, finding, guid, ident, scan};
use crate::store::Db;

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// A workspace whose scan directory holds one scan of 30 identities, taken an
/// hour before `now`: `F-CRIT` (critical) affects 1-3, `F-LOW` (low) all.
fn workspace(now: DateTime<Utc>) -> Workspace {
    let ws = Workspace::new();
    let mut ids: Vec<_> = (1..=30)
        .map(|n| ident(n, &format!("user{n:02}@contoso.com")))
        .collect();
    ids[2]["risk_score"] = json!(95);
    let findings = vec![
        finding("F-CRIT", "critical", &[1, 2, 3]),
        finding("F-LOW", "low", &(1..=30).collect::<Vec<_>>()),
    ];
    let at = rfc(now - chrono::Duration::hours(1));
    ws.add_scan("a.json", &scan(&at, ids, findings));
    ws
}

fn run(id: &str, sha: &str, actor: &str, at: DateTime<Utc>) -> NewRun {
    NewRun {
        id: id.into(),
        tenant: "test".into(),
        scan_source: "scans/a.json".into(),
        scan_sha256: sha.into(),
        scanned_at: at - chrono::Duration::hours(1),
        rule_set_hash: "rules".into(),
        mode: "approval".into(),
        downgrades: vec![],
        identities: 30,
        findings: 2,
        started_at: at,
        actor: actor.into(),
        kind: "scan".into(),
    }
}

fn action(n: u32, kind: ActionKind, state: &str, name: &str) -> NewAction {
    NewAction {
        identity_id: guid(n),
        identity_upn: format!("user{n:02}@contoso.com"),
        identity_name: name.into(),
        kind: kind.into(),
        targets: vec![],
        reasons: vec![Reason {
            rule: "r".into(),
            finding: "F-CRIT".into(),
            reason: "critical".into(),
        }],
        mode: "approval".parse().unwrap(),
        state: state.parse().unwrap(),
        state_reason: (state == "refused").then(|| "guardrail".to_string()),
        expires_at: None,
    }
}

/// Records this scan's run (by "Alice Admin": four actions, one approved by
/// Carol) and another scan's run (by bob: one action for user 1); returns the ids.
async fn record(s: &dyn Store, view: &ScanView, now: DateTime<Utc>) -> Vec<i64> {
    use ActionKind::*;
    let mut ids = s
        .record_run(
            &run("r1", &view.loaded.sha256, "Alice Admin", now),
            &[
                action(1, DisableUser, "pending", "User 1"),
                action(2, DisableUser, "pending", "=HYPERLINK(\"x\")"),
                action(3, DisableUser, "refused", "User 3"),
                action(4, RevokeSessions, "planned", "User 4"),
            ],
            &[],
        )
        .await
        .unwrap();
    let req = DecisionRequest {
        ids: vec![ids[1]],
        decision: Decision::Approve,
        by: "Carol".into(),
        comment: Some("ok".into()),
        bulk: false,
        now,
        origin: Default::default(),
    };
    decide(s, &req, &ApprovalPolicy::default()).await.unwrap();
    let other = run(
        "r2",
        "another-scan",
        "bob",
        now + chrono::Duration::seconds(1),
    );
    ids.extend(
        s.record_run(&other, &[action(1, EnforceMfa, "planned", "User 1")], &[])
            .await
            .unwrap(),
    );
    ids
}

async fn console_reads(s: &dyn Store, _db: &Db) {
    let now = Utc::now();
    let ws = workspace(now);
    let cfg = Config::load(&ws.config_path()).unwrap();
    let cache = ScanCache::new(2);
    let view = cache.get(&cfg, "test", None, now).await.unwrap();
    let ids = record(s, &view, now).await;

    let d = dashboard(s, &view).await.unwrap();
    assert_eq!((d.identities, d.not_evaluated), (30, 0));
    assert_eq!(d.findings[0].id, "F-CRIT");
    assert_eq!(d.findings[0].affected, 3);
    assert_eq!(d.by_severity[0], (Severity::Critical, 1, 3));
    assert_eq!(d.by_severity[3], (Severity::Low, 1, 30));
    assert_eq!(d.by_severity[1], (Severity::High, 0, 0));
    assert_eq!(d.top.len(), 10);
    assert_eq!(d.top[0].upn.as_deref(), Some("user03@contoso.com"));
    // Only this scan's run counts: one pending, one approved, one refused, one planned.
    let a = &d.actions;
    assert_eq!((a.pending, a.approved, a.refused, a.planned), (1, 1, 1, 1));
    assert_eq!(a.total(), 4);

    let page = identity_page(s, &view, "test", "USER01@CONTOSO.COM")
        .await
        .unwrap()
        .unwrap();
    let listed: Vec<i64> = page.actions.iter().map(|a| a.id).collect();
    assert_eq!(listed, [ids[4], ids[0]], "newest first, both runs");
    assert_eq!(page.findings.len(), 2);
    assert_eq!(page.findings[0].id, "F-CRIT");
    assert!(!page.more_actions);
    assert!(
        identity_page(s, &view, "test", "nobody@contoso.com")
            .await
            .unwrap()
            .is_none()
    );
    let q = AffectedQuery {
        q: Some("USER0".into()),
        sort: SortKey::Upn,
        desc: false,
        ..AffectedQuery::default()
    };
    let fp = finding_page(&view, "F-LOW", &q).unwrap();
    assert_eq!((fp.matched, fp.pages, fp.rows.len()), (9, 1, 9));
    assert_eq!(fp.recommendation, "fix it");

    person_filters(s, &ids).await;
    paging_and_csv(s, &ids, now).await;
    let chain = chain_status(s, now).await.unwrap();
    assert!(chain.ok, "{:?}", chain.problems);
    assert!(chain.events >= 7, "{}", chain.events);
}

async fn person_filters(s: &dyn Store, ids: &[i64]) {
    let by = |p: &str| Filter {
        person: Some(p.into()),
        ..Filter::default()
    };
    let of = |v: Vec<entra_remediator::domain::Action>| v.iter().map(|a| a.id).collect::<Vec<_>>();
    // The run's actor, any case.
    assert_eq!(of(s.actions(&by("alice ADMIN")).await.unwrap()), ids[..4]);
    assert_eq!(of(s.actions(&by("BOB")).await.unwrap()), [ids[4]]);
    // An approver: the action they decided (and Alice's as well through her run).
    assert_eq!(of(s.actions(&by("carol")).await.unwrap()), [ids[1]]);
    assert!(
        s.actions(&by("Alice")).await.unwrap().is_empty(),
        "whole name only"
    );
    // With the other filters.
    let f = Filter {
        identity: Some("user02@contoso.com".into()),
        ..by("alice admin")
    };
    assert_eq!(of(s.actions(&f).await.unwrap()), [ids[1]]);
    // Events: those of the person's actions.
    let events = s.events(&by("carol")).await.unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.action_id == Some(ids[1])));
    // Recorded, then approved: the second newest is the first.
    assert_eq!(events.len(), 2);
    let second = Filter {
        limit: Some(1),
        offset: Some(1),
        ..by("carol")
    };
    let page = s.events(&second).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [events[0].seq]
    );
}

async fn paging_and_csv(s: &dyn Store, ids: &[i64], now: DateTime<Utc>) {
    let all = Filter::default();
    let (p1, more) = actions_page(s, &all, 1, 2).await.unwrap();
    assert_eq!(
        p1.iter().map(|a| a.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    assert!(more);
    let (p3, more) = actions_page(s, &all, 3, 2).await.unwrap();
    assert_eq!(p3.iter().map(|a| a.id).collect::<Vec<_>>(), [ids[0]]);
    assert!(!more);
    let (p9, more) = actions_page(s, &all, 9, 2).await.unwrap();
    assert!(p9.is_empty() && !more);
    let (alice, more) = actions_page(
        s,
        &Filter {
            person: Some("alice admin".into()),
            ..all.clone()
        },
        1,
        3,
    )
    .await
    .unwrap();
    assert_eq!(alice.len(), 3);
    assert!(more);

    let mut out = Vec::new();
    let n = export_actions_csv(s, &all, now + chrono::Duration::minutes(1), &mut out)
        .await
        .unwrap();
    assert_eq!(n, 5);
    let text = String::from_utf8(out).unwrap();
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>(),
        ACTION_CSV_COLUMNS
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    let col = |name: &str| ACTION_CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
    let firsts: Vec<i64> = rows.iter().map(|r| r[col("id")].parse().unwrap()).collect();
    assert_eq!(firsts, [ids[4], ids[3], ids[2], ids[1], ids[0]]);
    assert_eq!(&rows[3][col("state")], "approved");
    assert_eq!(
        &rows[3][col("identity_name")],
        "'=HYPERLINK(\"x\")",
        "defused"
    );
    assert_eq!(&rows[0][col("action")], "enforce_mfa");
    assert!(rows[4][col("reasons")].contains("F-CRIT"));
    // Nothing recorded after `now` is exported (paging stays stable).
    let mut none = Vec::new();
    let early = now - chrono::Duration::hours(1);
    assert_eq!(
        export_actions_csv(s, &all, early, &mut none).await.unwrap(),
        0
    );
    assert_eq!(String::from_utf8(none).unwrap().lines().count(), 1);
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn console_reads() {
        crate::store::Db::sqlite()
            .await
            .run(|s, db| Box::pin(super::console_reads(s, db)))
            .await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn console_reads() {
        let Some(db) = crate::store::Db::postgres().await else {
            return;
        };
        db.run(|s, db| Box::pin(super::console_reads(s, db))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_loads_once_notices_new_scans_and_keeps_two() {
    let now = Utc::now();
    let ws = workspace(now);
    let cfg = Config::load(&ws.config_path()).unwrap();
    let cache = ScanCache::new(2);
    let first = cache.get(&cfg, "test", None, now).await.unwrap();
    let again = cache.get(&cfg, "test", None, now).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "loaded once");
    // Concurrent first requests share one load.
    let fresh = ScanCache::new(2);
    let (a, b) = tokio::join!(
        fresh.get(&cfg, "test", None, now),
        fresh.get(&cfg, "test", None, now)
    );
    assert!(Arc::ptr_eq(&a.unwrap(), &b.unwrap()));

    // A newer scan shows up as the newest; the older one stays reachable.
    let old_at = first.loaded.scan.scanned_at;
    let newer = scan(
        &rfc(now - chrono::Duration::minutes(5)),
        vec![ident(1, "user01@contoso.com")],
        vec![],
    );
    ws.add_scan("b.json", &newer);
    let newest = cache.get(&cfg, "test", None, now).await.unwrap();
    assert_eq!(newest.loaded.scan.identities.len(), 1);
    assert_ne!(newest.loaded.sha256, first.loaded.sha256);
    let old = cache.get(&cfg, "test", Some(old_at), now).await.unwrap();
    assert_eq!(old.loaded.sha256, first.loaded.sha256);
    assert_eq!(cache.len(), 2, "at most two kept");
    // The first key (newest before b.json) was evicted; asking again for the
    // newest is still the kept view.
    let newest_again = cache.get(&cfg, "test", None, now).await.unwrap();
    assert!(Arc::ptr_eq(&newest, &newest_again));

    // The same checks as a run: an unknown tenant, a scan grown too old.
    let unknown = cache.get(&cfg, "nope", None, now).await.unwrap_err();
    assert!(matches!(unknown, ScanError::NotFound(_)), "{unknown}");
    let later = now + chrono::Duration::days(400);
    let too_old = cache.get(&cfg, "test", None, later).await.unwrap_err();
    assert!(matches!(too_old, ScanError::TooOld { .. }), "{too_old}");
    // A failed load is not kept and pushes out nothing.
    let missing = now - chrono::Duration::days(3);
    let err = cache
        .get(&cfg, "test", Some(missing), now)
        .await
        .unwrap_err();
    assert!(matches!(err, ScanError::BadRequest(_)), "{err}");
    assert_eq!(cache.len(), 2);
    let still = cache.get(&cfg, "test", Some(old_at), now).await.unwrap();
    assert!(Arc::ptr_eq(&old, &still));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_picker_reads_each_file_once_while_it_is_unchanged() {
    let now = Utc::now();
    let ws = workspace(now);
    let cfg = Arc::new(Config::load(&ws.config_path()).unwrap());
    let cache = ScanCache::new(2);
    let first = cache.list(&cfg, "test").await.unwrap();
    assert_eq!(first.len(), 1);
    let path = first[0].path.clone();
    let identities = first[0].identities;
    assert!(identities > 1);
    // Same length, same modification time, other content: still the summary
    // read before (the file was not read again).
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let one = scan(&rfc(now), vec![ident(1, "user01@contoso.com")], vec![]);
    let mut text = serde_json::to_string(&one).unwrap();
    assert!(text.len() < len);
    text.push_str(&" ".repeat(len - text.len()));
    std::fs::write(&path, &text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        cache.list(&cfg, "test").await.unwrap()[0].identities,
        identities
    );
    // A new modification time: read again.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime + std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(cache.list(&cfg, "test").await.unwrap()[0].identities, 1);
    // The listing is the one `scans list` gives.
    let direct = entra_remediator::service::scan::list_scans(&cfg, "test").unwrap();
    assert_eq!(direct[0].identities, 1);
}
