//! The embedded SQLite store's SQL: WAL mode, a busy timeout, and `BEGIN
//! IMMEDIATE` for every write transaction, which holds the chain's lock. Write
//! transactions and leases go to the one write connection, every other query
//! to the read-only pool (see `sqlite_open`).

use std::path::Path;

use async_trait::async_trait;
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::backend::{Backend, Linked};
use super::filter_sql::{events_sql, sqlite_actions};
use super::records::{ApprovalRow, EventRow, Filter, NewAction, NewRun};
use super::sqlite_open::{Pools, connect};
use super::{ActionRow, OpenOptions, StoreError, display_name, into_actions, ts};
use crate::domain::{Action, ActionState};

/// History kept in a local SQLite file.
pub(crate) struct SqliteBackend {
    /// The one write connection.
    write: SqlitePool,
    /// Read-only connections, for queries outside a write transaction.
    read: SqlitePool,
}

type Tx = Transaction<'static, Sqlite>;

impl SqliteBackend {
    /// Opens the database file as the options say (creating it only when they
    /// allow) and applies migrations.
    pub(crate) async fn open(opts: &OpenOptions) -> Result<SqliteBackend, StoreError> {
        let raw = opts.url.strip_prefix("sqlite://").unwrap_or(&opts.url);
        let path = Path::new(raw);
        if !opts.create && !path.is_file() {
            return Err(StoreError::Missing(display_name(&opts.url)));
        }
        let Pools { write, read } = connect(path, opts.create, &display_name(&opts.url)).await?;
        Ok(SqliteBackend { write, read })
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    type Tx = Tx;

    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
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
            sqlx::query_scalar("SELECT seq FROM events WHERE kind = ? ORDER BY seq LIMIT 1")
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT COUNT(*) FROM runs WHERE tenant = ? AND scan_sha256 = ? AND kind = 'scan'",
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        let row: Option<ActionRow> = sqlx::query_as("SELECT * FROM actions WHERE id = ?")
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
        let marks = vec!["?"; from.len()].join(", ");
        let sql = format!(
            "UPDATE actions SET state = ?, state_reason = ? WHERE id = ? AND state IN ({marks}) \
             RETURNING *"
        );
        let mut q = sqlx::query_as::<_, ActionRow>(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(reason)
            .bind(id);
        for s in from {
            q = q.bind(s.as_str());
        }
        let row = q.fetch_optional(&mut **tx).await?;
        row.map(ActionRow::into_action).transpose()
    }

    async fn set_state(
        &self,
        tx: &mut Tx,
        id: i64,
        to: ActionState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE actions SET state = ?, state_reason = ? WHERE id = ?")
            .bind(to.as_str())
            .bind(reason)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn approval_count_in(&self, tx: &mut Tx, id: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE action_id = ?")
                .bind(id)
                .fetch_one(&mut **tx)
                .await?,
        )
    }

    async fn insert_approval(&self, tx: &mut Tx, ap: &ApprovalRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approvals (action_id, approver, decision, comment, at, event_seq, interface, os_user) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        let due: Vec<ActionRow> = sqlx::query_as(
            "SELECT * FROM actions WHERE state = 'pending' AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY id",
        )
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
            "INSERT INTO tenant_state (tenant, key, value, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
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
        let mut tx = self.begin().await?;
        let current: Option<(String, String)> =
            sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let free = match &current {
            None => true,
            Some((h, exp)) => h == holder || exp.as_str() <= now,
        };
        if free {
            sqlx::query(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            )
            .bind(name)
            .bind(holder)
            .bind(until)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(free)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn first_event_of(&self, kind: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT seq, detail FROM events WHERE kind = ? ORDER BY seq LIMIT 1")
                .bind(kind)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM approvals WHERE action_id = ? ORDER BY rowid")
                .bind(id)
                .fetch_all(&self.read)
                .await?,
        )
    }

    async fn event_at(&self, seq: i64) -> Result<Option<EventRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM events WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn scan_processed(&self, tenant: &str, sha256: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE tenant = ? AND scan_sha256 = ? AND kind = 'scan'",
        )
        .bind(tenant)
        .bind(sha256)
        .fetch_one(&self.read)
        .await?;
        Ok(n > 0)
    }

    async fn previous_action_count(&self, tenant: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT actionable FROM runs WHERE tenant = ? AND kind = 'scan' ORDER BY started_at DESC, rowid DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.read)
        .await?)
    }

    async fn actions(&self, f: &Filter) -> Result<Vec<Action>, StoreError> {
        let rows: Vec<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sqlite_actions(f)))
            .bind(&f.tenant)
            .bind(&f.identity)
            .bind(&f.action)
            .bind(&f.state)
            .bind(&f.rule)
            .bind(&f.run)
            .bind(f.since.map(ts))
            .bind(f.until.map(ts))
            .bind(f.limit)
            .bind(&f.person)
            .bind(f.offset)
            .fetch_all(&self.read)
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
             WHERE r.tenant = ? AND r.scan_sha256 = ? GROUP BY a.state",
        )
        .bind(tenant)
        .bind(sha256)
        .fetch_all(&self.read)
        .await?)
    }

    async fn action(&self, id: i64) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as("SELECT * FROM actions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(ActionRow::into_action).transpose()
    }

    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT scanned_at FROM runs WHERE id = ?")
                .bind(run_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn run_actor(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let q = sqlx::query_scalar("SELECT actor FROM runs WHERE id = ?").bind(run_id);
        Ok(q.fetch_optional(&self.read).await?)
    }

    async fn retry_rows(&self, ids: &[i64]) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT action_id, COUNT(*), MAX(at) FROM events \
                 WHERE kind = 'execution_outcome' AND state IN ('ready', 'approved') \
                 AND action_id IN ({marks}) GROUP BY action_id"
            );
            let mut q = sqlx::query_as::<_, (i64, i64, String)>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&self.read).await?);
        }
        Ok(out)
    }

    async fn events(&self, f: &Filter) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(events_sql(f)))
            .bind(&f.tenant)
            .bind(&f.identity)
            .bind(&f.action)
            .bind(&f.state)
            .bind(&f.rule)
            .bind(&f.run)
            .bind(f.since.map(ts))
            .bind(f.until.map(ts))
            .bind(f.limit)
            .bind(f.action_id)
            .bind(&f.person)
            .bind(f.offset)
            .fetch_all(&self.read)
            .await?)
    }

    async fn everything(
        &self,
    ) -> Result<(Vec<EventRow>, Vec<(i64, String)>, Vec<ApprovalRow>), StoreError> {
        // One read transaction: the three reads see one snapshot.
        let mut tx = self.read.begin().await?;
        let events: Vec<EventRow> = sqlx::query_as("SELECT * FROM events ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?;
        let actions: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, state FROM actions ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        let approvals: Vec<ApprovalRow> = sqlx::query_as("SELECT * FROM approvals ORDER BY rowid")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((events, actions, approvals))
    }

    async fn event_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash FROM events WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn tenant_state(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM tenant_state WHERE tenant = ? AND key = ?")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn last_run_at(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(started_at) FROM runs WHERE tenant = ? AND kind = 'scan'",
        )
        .bind(tenant)
        .fetch_one(&self.read)
        .await?)
    }

    async fn last_scanned_at(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT scanned_at FROM runs WHERE tenant = ? AND kind = 'scan' \
             ORDER BY started_at DESC, rowid DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.read)
        .await?)
    }
}
