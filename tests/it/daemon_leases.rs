//! Many tenants and several daemon instances, with the daemon as a process: a
//! tick that finds another (dead) instance's lease is not lost, it runs once
//! the lease expires; an instance whose lease was taken from it stops its work
//! on the tenant (PostgreSQL tests, gated as in `daemon.rs` by
//! ENTRA_REMEDIATOR_TEST_POSTGRES_URL); a thousand tenants on one schedule
//! each run at the tick (SQLite).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fake_entra::{FakeTenant, Fault, User};
use sqlx::Connection;

use crate::common::*;

const LEASE: &str = "tenant:test";

fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("ENTRA_REMEDIATOR_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("ENTRA_REMEDIATOR_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{test}: ENTRA_REMEDIATOR_TEST_POSTGRES_URL is not set but PostgreSQL tests are required"
            );
            eprintln!(
                "PostgreSQL test SKIPPED ({test}): set ENTRA_REMEDIATOR_TEST_POSTGRES_URL to run it"
            );
            None
        }
    }
}

/// A fresh database on the test server; its URL.
async fn fresh_database(url: &str) -> String {
    let db = format!(
        "er_leases_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut c)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// A cron schedule that fires once, `secs` seconds from now (UTC).
fn once_in(secs: i64) -> (String, DateTime<Utc>) {
    let at = Utc::now() + chrono::Duration::seconds(secs);
    (at.format("%S %M %H * * *").to_string(), at)
}

/// An enforce-mode workspace on the database `db_url`, instance "live", with
/// `users` users affected by a rule that disables them and revokes their sessions.
async fn setup(
    db_url: &str,
    schedule: &str,
    users: u32,
    graph_extra: &str,
) -> (FakeTenant, Workspace) {
    let fake = FakeTenant::start(TENANT).await;
    fake.register_app_secret(CLIENT, SECRET);
    for n in 1..=users {
        fake.add_user(User {
            id: guid(n),
            user_principal_name: format!("u{n}@t.com"),
            display_name: format!("u{n}"),
            user_type: "Member".into(),
            account_enabled: true,
        });
    }
    let mut ws = Workspace::new();
    ws.set_top("mode = \"enforce\"");
    ws.set_tables(&format!(
        "[guardrails]\nmax_actions_percent = 100.0\n[daemon]\nschedule = \"{schedule}\"\ncatch_up = false\nlease_secs = 10\ninstance = \"live\"\nexecute_interval_secs = 3600\nshutdown_grace_secs = 5\n"
    ));
    ws.write("secret", SECRET);
    ws.set_graph(&graph_table(
        &fake.base_url(),
        CLIENT,
        "secret",
        graph_extra,
    ));
    let cfg = std::fs::read_to_string(ws.config_path()).unwrap().replace(
        "url = \"sqlite://history.db\"",
        &format!("url = \"{db_url}\""),
    );
    std::fs::write(ws.config_path(), cfg).unwrap();
    ws.add_rule(
        "r.rhai",
        &rule(
            "r",
            "F1",
            "[disable_user(\"stale\"), revoke_sessions(\"stale\")]",
        ),
    );
    let ids: Vec<u32> = (1..=users).collect();
    ws.add_scan(
        "s.json",
        &scan(
            &now_rfc3339(),
            ids.iter()
                .map(|n| ident(*n, &format!("u{n}@t.com")))
                .collect(),
            vec![finding("F1", "high", &ids)],
        ),
    );
    (fake, ws)
}

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(ws: &Workspace) -> Daemon {
        let log = ws.path().join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_entra-remediator"))
            .args([
                "--config",
                ws.config_path().to_str().unwrap(),
                "--log",
                "info",
                "daemon",
            ])
            .current_dir(ws.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it gives a value; fails (with the daemon's log) after 180 s.
async fn until<T>(d: &Daemon, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "timed out waiting for {what}; daemon log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Graph writes the fake received.
fn writes(fake: &FakeTenant) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PATCH"))
        .filter(|r| !r.path.ends_with("/$batch") && !r.path.contains("/oauth2/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// (actor, started_at) of the scan runs.
async fn runs(db: &mut sqlx::PgConnection) -> Vec<(String, String)> {
    sqlx::query_as("SELECT actor, started_at FROM runs WHERE kind = 'scan' ORDER BY ord")
        .fetch_all(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tick_that_finds_a_dead_instances_lease_runs_once_the_lease_expires() {
    let test = "a_tick_that_finds_a_dead_instances_lease_runs_once_the_lease_expires";
    let Some(url) = postgres_url(test) else {
        return;
    };
    let db_url = fresh_database(&url).await;
    // The only tick fires 4 s from now, while the dead instance's lease holds.
    let (schedule, fires) = once_in(4);
    let (fake, ws) = setup(&db_url, &schedule, 5, "").await;
    // An instance took the tenant's lease and died: its lease runs out by itself.
    let store =
        entra_remediator::store::open_with(&entra_remediator::store::OpenOptions::new(&db_url))
            .await
            .unwrap();
    assert!(
        store
            .try_lease(LEASE, "dead", Duration::from_secs(10))
            .await
            .unwrap()
    );
    let expires = Utc::now() + chrono::Duration::seconds(10);
    let d = Daemon::start(&ws);
    let mut db = sqlx::PgConnection::connect(&db_url).await.unwrap();
    until(&d, "every action executed", async || {
        let all = (1..=5).all(|n| {
            fake.user(&guid(n)).is_some_and(|u| !u.account_enabled)
                && fake.revocations(&guid(n)) == 1
        });
        all.then_some(())
    })
    .await;
    let log = d.log();
    assert!(
        log.contains("trying again until the lease is given back or expires"),
        "{log}"
    );
    let runs = runs(&mut db).await;
    assert_eq!(runs.len(), 1, "one run: {runs:?}");
    assert_eq!(runs[0].0, "daemon:live");
    let started: DateTime<Utc> = runs[0].1.parse().unwrap();
    assert!(started > fires, "the tick fired first");
    assert!(
        started >= expires - chrono::Duration::milliseconds(500),
        "it waited for the dead instance's lease to expire: run at {started}, lease until {expires}"
    );
    let mut w = writes(&fake);
    let n = w.len();
    w.sort();
    w.dedup();
    assert_eq!(n, 10, "two writes per user");
    assert_eq!(w.len(), n, "no write sent twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_whose_lease_was_taken_stops_its_work_on_the_tenant() {
    let test = "an_instance_whose_lease_was_taken_stops_its_work_on_the_tenant";
    let Some(url) = postgres_url(test) else {
        return;
    };
    let db_url = fresh_database(&url).await;
    let (schedule, _) = once_in(3);
    // One write at a time, each taking a second: the run executes for 40 s.
    let (fake, ws) = setup(
        &db_url,
        &schedule,
        20,
        "batch_size = 1\nmax_concurrency = 1",
    )
    .await;
    fake.inject(Fault::Latency {
        matching: "/users/".into(),
        delay: Duration::from_secs(1),
    });
    let d = Daemon::start(&ws);
    until(&d, "the first write", async || {
        (!writes(&fake).is_empty()).then_some(())
    })
    .await;
    // Another instance takes the lease, as after renewals failing until it expired.
    let mut db = sqlx::PgConnection::connect(&db_url).await.unwrap();
    let taken = sqlx::query(
        "UPDATE leases SET holder = 'thief', expires_at = '2999-01-01T00:00:00.000Z' WHERE name = $1",
    )
    .bind(LEASE)
    .execute(&mut db)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(taken, 1, "the daemon held the lease while executing");
    // Its next renewal, at most a third of the lease (3.4 s) away, finds the
    // lease taken; the write then in flight (1 s) may still land.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let at_stop = writes(&fake).len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = writes(&fake).len();
    assert_eq!(
        later,
        at_stop,
        "no write is started once the lease is taken; daemon log:\n{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("another instance took it: this instance's work on the tenant stopped")
    );
    assert!(
        later < 40,
        "the run did not go on to the end: {later} writes"
    );
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM actions GROUP BY state ORDER BY state")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(
        states.iter().any(|(s, _)| s == "ready" || s == "executing"),
        "actions are left for the lease's holder: {states:?}"
    );
}

/// Every tenant of a large deployment runs at its cron time. The scheduler's
/// dropped activations ("Lagged") that one job per tenant met in the bench,
/// with the daemon's threads busy, do not reproduce on demand here: this guards
/// the one-job-per-schedule start of every tenant's tick.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_tenants_on_one_schedule_each_run_at_the_tick() {
    // SQLite and dry-run: what is proven is that no tenant's tick is lost.
    let n = 1000;
    let ws = Workspace::new();
    let (schedule, _) = once_in(4);
    let mut cfg = format!(
        "mode = \"dry-run\"\npolicies_dir = \"policies\"\n[store]\nurl = \"sqlite://history.db\"\n[daemon]\nschedule = \"{schedule}\"\ncatch_up = false\n"
    );
    for t in 0..n {
        cfg.push_str(&format!(
            "[[tenant]]\nname = \"t{t}\"\ntenant_id = \"{TENANT}\"\nsource = {{ dir = \"scans/t{t}\" }}\n"
        ));
        let dir = ws.path().join(format!("scans/t{t}"));
        std::fs::create_dir_all(&dir).unwrap();
        let s = scan(&now_rfc3339(), vec![ident(1, "u1@t.com")], vec![]);
        std::fs::write(dir.join("s.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    }
    std::fs::write(ws.config_path(), cfg).unwrap();
    ws.add_rule("r.rhai", &rule("r", "F1", "disable_user(\"stale\")"));
    let d = Daemon::start(&ws);
    let url = format!("sqlite://{}", ws.db_path().display());
    until(&d, "a run of every tenant", async || {
        let mut db = sqlx::SqliteConnection::connect(&url).await.ok()?;
        let ran: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT tenant) FROM runs")
            .fetch_one(&mut db)
            .await
            .ok()?;
        (ran == n).then_some(())
    })
    .await;
    assert!(!d.log().contains("Lagged"), "{}", d.log());
}
