//! The PostgreSQL store's SQL; several daemon instances may share one. Every
//! write transaction first takes one transaction-level advisory lock, so the
//! hash chain grows one writer at a time; state changes also lock the rows they
//! read, and leases are taken with one atomic upsert.
//!
//! Columns and values are those of the SQLite store: timestamps are the same
//! RFC 3339 strings (compared byte by byte: `COLLATE "C"`), ids are `BIGINT`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::backend::{Backend, Linked};
use super::filter_sql::{PG_ACTION_COLUMNS as ACTION_COLUMNS, pg_actions, pg_events};
use super::records::{ApprovalRow, EventRow, Filter, NewAction, NewRun};
use super::{ActionRow, OpenOptions, StoreError, display_name, into_actions, ts};
use crate::domain::{Action, ActionState};

/// History kept in a PostgreSQL database shared by any number of daemons.
pub(crate) struct PostgresBackend {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

/// The advisory lock key that serializes appends to the hash chain ("entra-hc").
const CHAIN_LOCK: i64 = 0x656e_7472_612d_6863;

impl PostgresBackend {
    /// Connects to the database named by a `postgres://` URL (waiting at most
    /// the connect timeout) and applies migrations.
    /// Without `create`, a database that holds no history is refused untouched.
    pub(crate) async fn open(opts: &OpenOptions) -> Result<PostgresBackend, StoreError> {
        let name = display_name(&opts.url);
        let failed = |message: String| StoreError::Open {
            store: name.clone(),
            message,
        };
        let pg = PgConnectOptions::from_str(&opts.url).map_err(|e| {
            // The URL itself may carry the password: the message names the store only.
            failed(format!("not a valid PostgreSQL URL ({})", first_line(&e)))
        })?;
        let timeout = opts.connect_timeout.max(Duration::from_millis(100));
        let connecting = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(timeout)
            .connect_with(pg);
        let pool = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(pool)) => pool,
            Ok(Err(e)) if !matches!(e, sqlx::Error::PoolTimedOut) => {
                return Err(failed(first_line(&e)));
            }
            Ok(Err(_)) | Err(_) => {
                return Err(failed(format!(
                    "no answer within {} ([store] connect_timeout)",
                    humantime::format_duration(timeout)
                )));
            }
        };
        if !opts.create {
            let has: Option<String> = sqlx::query_scalar("SELECT to_regclass('events')::text")
                .fetch_one(&pool)
                .await?;
            if has.is_none() {
                return Err(failed(
                    "it holds no history (not an entra-remediator store); nothing was changed"
                        .into(),
                ));
            }
        }
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresBackend { pool })
    }
}

/// The first line of an error, for messages that name the store themselves.
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

const ACTION_BY_ID: &str = "SELECT id, run_id, tenant, identity_id, identity_upn, identity_name, \
     kind, targets, reasons, rules, mode, state, state_reason, created_at, expires_at \
     FROM actions WHERE id = $1";

const APPROVALS_OF: &str = "SELECT action_id, approver, decision, comment, at, event_seq, \
     interface, os_user FROM approvals WHERE action_id = $1 ORDER BY ord";

#[async_trait]
impl Backend for PostgresBackend {
    type Tx = Tx;

    async fn begin(&self) -> Result<Tx, StoreError> {
        // The chain lock before anything is read, so what the transaction reads
        // is what it appends after.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        Ok(tx.commit().await?)
    }

    async fn chain_tail(&self, tx: &mut Tx) -> Result<Option<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?,
        )
    }

    async fn first_seq_in(&self, tx: &mut Tx, kind: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM events WHERE kind = $1 ORDER BY seq LIMIT 1")
                .bind(kind)
                .fetch_optional(&mut **tx)
                .await?,
        )
    }

    async fn insert_event(&self, tx: &mut Tx, l: Linked<'_>) -> Result<(), StoreError> {
        let e = l.event;
        sqlx::query(
            "INSERT INTO events (seq, at, tenant, run_id, action_id, identity_id, action_kind, \
             rule, kind, actor, state, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(l.seq)
        .bind(l.at)
        .bind(&e.tenant)
        .bind(&e.run_id)
        .bind(e.action_id)
        .bind(&e.identity_id)
        .bind(&e.action_kind)
        .bind(&e.rule)
        .bind(&e.kind)
        .bind(&e.actor)
        .bind(&e.state)
        .bind(&e.detail)
        .bind(l.prev)
        .bind(l.hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn scan_processed_in(
        &self,
        tx: &mut Tx,
        tenant: &str,
        sha256: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE tenant = $1 AND scan_sha256 = $2 AND kind = 'scan'",
        )
        .bind(tenant)
        .bind(sha256)
        .fetch_one(&mut **tx)
        .await?;
        Ok(n > 0)
    }

    async fn insert_run(
        &self,
        tx: &mut Tx,
        run: &NewRun,
        actionable: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (id, tenant, scan_source, scan_sha256, scanned_at, rule_set_hash, \
             mode, downgrades, identities, findings, actionable, started_at, actor, kind) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&run.id)
        .bind(&run.tenant)
        .bind(&run.scan_source)
        .bind(&run.scan_sha256)
        .bind(ts(run.scanned_at))
        .bind(&run.rule_set_hash)
        .bind(&run.mode)
        .bind(serde_json::to_string(&run.downgrades).unwrap_or_default())
        .bind(run.identities)
        .bind(run.findings)
        .bind(actionable)
        .bind(ts(run.started_at))
        .bind(&run.actor)
        .bind(&run.kind)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn insert_action(
        &self,
        tx: &mut Tx,
        run: &NewRun,
        a: &NewAction,
        at: &str,
    ) -> Result<i64, StoreError> {
        let rules: Vec<&str> = a.reasons.iter().map(|r| r.rule.as_str()).collect();
        Ok(sqlx::query_scalar(
            "INSERT INTO actions (run_id, tenant, identity_id, identity_upn, identity_name, \
             kind, targets, reasons, rules, mode, state, state_reason, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(&run.id)
        .bind(&run.tenant)
        .bind(&a.identity_id)
        .bind(&a.identity_upn)
        .bind(&a.identity_name)
        .bind(a.kind.as_str())
        .bind(serde_json::to_string(&a.targets).unwrap_or_default())
        .bind(serde_json::to_string(&a.reasons).unwrap_or_default())
        .bind(format!(",{},", rules.join(",")))
        .bind(a.mode.as_str())
        .bind(a.state.as_str())
        .bind(&a.state_reason)
        .bind(at)
        .bind(a.expires_at.map(ts))
        .fetch_one(&mut **tx)
        .await?)
    }

    async fn action_in(&self, tx: &mut Tx, id: i64) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(ActionRow::into_action).transpose()
    }

    async fn move_action(
        &self,
        tx: &mut Tx,
        id: i64,
        from: &[ActionState],
        to: ActionState,
        reason: Option<&str>,
    ) -> Result<Option<Action>, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        // A concurrent move of the same id waits for the row lock, then finds it moved.
        let row: Option<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE actions SET state = $1, state_reason = $2 \
             WHERE id = $3 AND state = ANY($4::text[]) RETURNING {ACTION_COLUMNS}"
        )))
        .bind(to.as_str())
        .bind(reason)
        .bind(id)
        .bind(&from)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(ActionRow::into_action).transpose()
    }

    async fn set_state(
        &self,
        tx: &mut Tx,
        id: i64,
        to: ActionState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE actions SET state = $1, state_reason = $2 WHERE id = $3")
            .bind(to.as_str())
            .bind(reason)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn approval_count_in(&self, tx: &mut Tx, id: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE action_id = $1")
                .bind(id)
                .fetch_one(&mut **tx)
                .await?,
        )
    }

    async fn insert_approval(&self, tx: &mut Tx, ap: &ApprovalRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approvals (action_id, approver, decision, comment, at, event_seq, interface, os_user) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ap.action_id)
        .bind(&ap.approver)
        .bind(&ap.decision)
        .bind(&ap.comment)
        .bind(&ap.at)
        .bind(ap.event_seq)
        .bind(&ap.interface)
        .bind(&ap.os_user)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn due_in(&self, tx: &mut Tx, at: &str) -> Result<Vec<Action>, StoreError> {
        let due: Vec<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE state = 'pending' \
             AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY id FOR UPDATE"
        )))
        .bind(at)
        .fetch_all(&mut **tx)
        .await?;
        into_actions(due)
    }

    async fn put_tenant_state(
        &self,
        tx: &mut Tx,
        tenant: &str,
        key: &str,
        value: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tenant_state (tenant, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(tenant)
        .bind(key)
        .bind(value)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: &str,
        until: &str,
    ) -> Result<bool, StoreError> {
        // One statement: insert, or take over only from the same holder or an
        // expired lease. The conflicting row is locked while the condition is checked.
        let got: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
             expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = $2 OR leases.expires_at <= $4 \
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(got.is_some())
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn first_event_of(&self, kind: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT seq, detail FROM events WHERE kind = $1 ORDER BY seq LIMIT 1")
                .bind(kind)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        Ok(sqlx::query_as(APPROVALS_OF)
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn event_at(&self, seq: i64) -> Result<Option<EventRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn scan_processed(&self, tenant: &str, sha256: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE tenant = $1 AND scan_sha256 = $2 AND kind = 'scan'",
        )
        .bind(tenant)
        .bind(sha256)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    async fn previous_action_count(&self, tenant: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT actionable FROM runs WHERE tenant = $1 AND kind = 'scan' \
             ORDER BY started_at DESC, ord DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn actions(&self, f: &Filter) -> Result<Vec<Action>, StoreError> {
        let rows: Vec<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(pg_actions()))
            .bind(&f.tenant)
            .bind(&f.identity)
            .bind(&f.action)
            .bind(&f.state)
            .bind(&f.rule)
            .bind(&f.run)
            .bind(f.since.map(ts))
            .bind(f.until.map(ts))
            // A negative limit or offset is none, as in SQLite (PostgreSQL would refuse it).
            .bind(f.limit.filter(|n| *n >= 0))
            .bind(&f.person)
            .bind(f.offset.filter(|n| *n >= 0))
            .fetch_all(&self.pool)
            .await?;
        into_actions(rows)
    }

    async fn action_counts(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT a.state, COUNT(*) FROM actions a JOIN runs r ON r.id = a.run_id \
             WHERE r.tenant = $1 AND r.scan_sha256 = $2 GROUP BY a.state",
        )
        .bind(tenant)
        .bind(sha256)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn action(&self, id: i64) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as(ACTION_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(ActionRow::into_action).transpose()
    }

    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT scanned_at FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn run_actor(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_scalar("SELECT actor FROM runs WHERE id = $1").bind(run_id);
        Ok(q.fetch_optional(&self.pool).await?)
    }

    async fn retry_rows(&self, ids: &[i64]) -> Result<Vec<(i64, i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT action_id, COUNT(*), MAX(at) FROM events \
             WHERE kind = 'execution_outcome' AND state IN ('ready', 'approved') \
             AND action_id = ANY($1::bigint[]) GROUP BY action_id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn events(&self, f: &Filter) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(pg_events(f)))
            .bind(&f.tenant)
            .bind(&f.identity)
            .bind(&f.action)
            .bind(&f.state)
            .bind(&f.rule)
            .bind(&f.run)
            .bind(f.since.map(ts))
            .bind(f.until.map(ts))
            // A negative limit or offset is none, as in SQLite (PostgreSQL would refuse it).
            .bind(f.limit.filter(|n| *n >= 0))
            .bind(f.action_id)
            .bind(&f.person)
            .bind(f.offset.filter(|n| *n >= 0))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn everything(
        &self,
    ) -> Result<(Vec<EventRow>, Vec<(i64, String)>, Vec<ApprovalRow>), StoreError> {
        // One snapshot for events and actions, so appends made meanwhile by other
        // instances cannot look like a mismatch.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let events: Vec<EventRow> = sqlx::query_as("SELECT * FROM events ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?;
        let actions: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, state FROM actions ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        let approvals: Vec<ApprovalRow> = sqlx::query_as(
            "SELECT action_id, approver, decision, comment, at, event_seq, interface, os_user FROM approvals ORDER BY ord",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((events, actions, approvals))
    }

    async fn event_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash FROM events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn tenant_state(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM tenant_state WHERE tenant = $1 AND key = $2")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn last_run_at(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(started_at) FROM runs WHERE tenant = $1 AND kind = 'scan'",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn last_scanned_at(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT scanned_at FROM runs WHERE tenant = $1 AND kind = 'scan' \
             ORDER BY started_at DESC, ord DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }
}
