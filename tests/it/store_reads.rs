//! The SQLite store serves reads while writes wait: reads have read-only
//! connections of their own (WAL mode lets them read while a write is open), so
//! neither a write transaction another process holds open nor the writers of
//! this process queued behind it keep the API's reads waiting, and the queued
//! writers go through once the write lock is free.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use entra_remediator::domain::{ActionKind, ActionState};
use entra_remediator::service::{actions, show};
use entra_remediator::store::{Filter, NewAction, NewEvent, NewRun, Store, open};
use sqlx::Connection;

/// More writers than the store ever had connections, so under the old shared
/// pool they took every connection.
const WRITERS: usize = 8;

/// How long a read may take here before the test gives up (generous: it only
/// has to complete while the write lock is held).
const READ_LIMIT: Duration = Duration::from_secs(60);

fn run() -> NewRun {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    NewRun {
        id: "r1".into(),
        tenant: "t".into(),
        scan_source: "scans/r1.json".into(),
        scan_sha256: "sha-r1".into(),
        scanned_at: at,
        rule_set_hash: "rules-hash".into(),
        mode: "approval".parse().unwrap(),
        downgrades: vec![],
        identities: 2,
        findings: 1,
        started_at: at,
        actor: "system".into(),
        kind: "scan".parse().unwrap(),
    }
}

fn pending(n: u32) -> NewAction {
    NewAction {
        identity_id: format!("id-{n}"),
        identity_upn: format!("u{n}@contoso.com"),
        identity_name: format!("User {n}"),
        kind: ActionKind::DisableUser.into(),
        targets: vec![],
        reasons: vec![],
        mode: "approval".parse().unwrap(),
        state: ActionState::Pending,
        state_reason: None,
        expires_at: None,
    }
}

fn note(n: usize) -> NewEvent {
    NewEvent {
        tenant: Some("t".into()),
        kind: "note".into(),
        actor: format!("writer-{n}"),
        detail: format!("write {n}"),
        ..NewEvent::default()
    }
}

/// The reads the API's GET routes make: the pending list, one action with its
/// approvals and history, and a filtered history query.
async fn api_reads(store: &dyn Store, id: i64) -> (usize, usize, usize) {
    let now = Utc::now();
    let listed = actions::pending(store, None, None, now).await.unwrap();
    let detail = show::show(store, id, now).await.unwrap().unwrap();
    let events = store.events(&Filter::default()).await.unwrap();
    (listed.len(), detail.history.len(), events.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_are_served_while_writers_wait_for_a_held_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let store: Arc<dyn Store> = Arc::from(open(&url).await.unwrap());
    let ids = store
        .record_run(&run(), &[pending(1), pending(2)], &[])
        .await
        .unwrap();
    let before = store.events(&Filter::default()).await.unwrap().len();
    let expected = api_reads(store.as_ref(), ids[0]).await;
    assert_eq!(expected.0, 2, "both actions are pending");

    // Another process's write transaction, held open: nobody else can write.
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    // This process's writers start and wait for the lock.
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.record_event(note(n)).await })
        })
        .collect();
    // Give them the time to be waiting (not an assertion: reads must complete
    // however many of them are waiting).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reads = tokio::time::timeout(READ_LIMIT, api_reads(store.as_ref(), ids[0]))
        .await
        .expect("the reads completed while the write lock was held");
    assert_eq!(reads, expected, "pending actions, action history, events");
    // The lock is still held, so no write can have gone through, nor failed.
    let finished = writers.iter().filter(|w| w.is_finished()).count();
    assert_eq!(finished, 0, "writers finished while another held the lock");

    // Once it is released, every queued writer goes through.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let events = store.events(&Filter::default()).await.unwrap();
    assert_eq!(events.len(), before + WRITERS);
    let report = store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_see_every_committed_write() {
    // Reads go to other connections than writes: each read sees what was
    // committed before it started.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let store = open(&url).await.unwrap();
    let ids = store.record_run(&run(), &[pending(1)], &[]).await.unwrap();
    for n in 0..20 {
        store.record_event(note(n)).await.unwrap();
        let events = store.events(&Filter::default()).await.unwrap();
        assert_eq!(
            events.last().map(|e| e.actor.clone()),
            Some(format!("writer-{n}"))
        );
    }
    let moved = store
        .claim(
            &ids,
            &[ActionState::Pending],
            ActionState::Approved,
            "tester",
            "approved",
        )
        .await
        .unwrap();
    assert_eq!(moved.len(), 1);
    let a = store.action(ids[0]).await.unwrap().unwrap();
    assert_eq!(a.state, ActionState::Approved);
    let listed = actions::pending(store.as_ref(), None, None, Utc::now())
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
