//! The PostgreSQL store, which several daemon instances may share. Every
//! transaction that appends to the history first takes one transaction-level
//! advisory lock, so the hash chain grows one writer at a time; state changes
//! also lock the rows they read, and leases are taken with one atomic upsert.
//!
//! Columns and values are those of the SQLite store: timestamps are the same
//! RFC 3339 strings (compared byte by byte: `COLLATE "C"`), ids are `BIGINT`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Action, ActionState};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::{
    ActionRow, ApprovalRow, Chain, CheckpointSink, DecisionRequest, EventRow, Filter, HistoryKey,
    KEYED_EVENT, NewAction, NewEvent, NewRuleError, NewRun, OpenOptions, StateChange, Store,
    StoreError, VerifyReport, action_event, approval_in_chain, display_name, into_actions,
    keyed_event, marker_of, resolve_key, run_events, state_event, ts, verify_history,
};
use crate::approval::{self, ApprovalError, ApprovalPolicy};

/// History kept in a PostgreSQL database shared by any number of daemons.
pub struct PostgresStore {
    pool: PgPool,
    /// The key new events are chained with (`None`: unkeyed).
    key: Option<HistoryKey>,
    /// The seq of the `history_keyed` event, when the chain is keyed.
    keyed_from: Option<i64>,
    read_only: bool,
    sink: CheckpointSink,
}

/// The advisory lock key that serializes appends to the hash chain ("entra-hc").
const CHAIN_LOCK: i64 = 0x656e_7472_612d_6863;

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL (waiting at most
    /// the connect timeout), applies migrations and settles the history key.
    /// Without `create`, a database that holds no history is refused untouched.
    pub async fn open_with(opts: &OpenOptions) -> Result<PostgresStore, StoreError> {
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
        let marker = marker_of(
            sqlx::query_as("SELECT seq, detail FROM events WHERE kind = $1 ORDER BY seq LIMIT 1")
                .bind(KEYED_EVENT)
                .fetch_optional(&pool)
                .await?,
        );
        let key = resolve_key(opts, marker.as_ref())?;
        let mut store = PostgresStore {
            pool,
            keyed_from: marker.as_ref().map(|(s, _)| *s),
            key,
            read_only: opts.read_only,
            sink: opts.sink(),
        };
        if let Some(k) = store.key.clone()
            && store.keyed_from.is_none()
            && !store.read_only
        {
            // Start keying under the chain lock, unless another instance did meanwhile.
            let mut tx = store.begin().await?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM events WHERE kind = $1 ORDER BY seq LIMIT 1")
                    .bind(KEYED_EVENT)
                    .fetch_optional(&mut *tx)
                    .await?;
            let mut chain = store.chain(&mut tx).await?;
            let seq = match found {
                Some(seq) => seq,
                None => {
                    let previous = chain.seq;
                    Self::append(
                        &mut tx,
                        &mut chain,
                        &ts(Utc::now()),
                        &keyed_event(&k, previous),
                    )
                    .await?;
                    chain.seq
                }
            };
            tx.commit().await?;
            store.sink.after_commit(&chain);
            store.keyed_from = Some(seq);
        }
        Ok(store)
    }

    /// Starts a transaction that will append to the history: takes the chain lock
    /// before anything is read, so what it reads is what it appends after.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn chain(&self, tx: &mut Transaction<'_, Postgres>) -> Result<Chain, StoreError> {
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
        Ok(Chain::new(last, self.key.as_ref()))
    }

    async fn append(
        tx: &mut Transaction<'_, Postgres>,
        chain: &mut Chain,
        at: &str,
        e: &NewEvent,
    ) -> Result<(), StoreError> {
        let (seq, prev, hash) = chain.link(at, e);
        sqlx::query(
            "INSERT INTO events (seq, at, tenant, run_id, action_id, identity_id, action_kind, \
             rule, kind, actor, state, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(seq)
        .bind(at)
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
        .bind(&prev)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Reads an action and locks its row until the transaction ends.
    async fn action_for_update(
        tx: &mut Transaction<'_, Postgres>,
        id: i64,
    ) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(ActionRow::into_action).transpose()
    }

    async fn action_in(
        tx: &mut Transaction<'_, Postgres>,
        id: i64,
    ) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as(ACTION_BY_ID)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(ActionRow::into_action).transpose()
    }

    /// The approvals of an action that the verified chain records: only these
    /// count towards four eyes (a row inserted behind the store's back does not).
    async fn approvals_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows: Vec<ApprovalRow> = sqlx::query_as(APPROVALS_OF)
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for ap in rows {
            let ev: Option<EventRow> = match ap.event_seq {
                Some(seq) => {
                    sqlx::query_as("SELECT * FROM events WHERE seq = $1")
                        .bind(seq)
                        .fetch_optional(&mut **tx)
                        .await?
                }
                None => None,
            };
            if approval_in_chain(&ap, ev.as_ref(), self.key.as_ref(), self.keyed_from) {
                out.push(ap);
            } else {
                tracing::warn!(
                    action = id,
                    approver = %ap.approver,
                    "an approval row is not recorded in the history chain; it does not count"
                );
            }
        }
        Ok(out)
    }
}

/// The first line of an error, for messages that name the store themselves.
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The columns of `ActionRow`, in table order.
const ACTION_COLUMNS: &str = "id, run_id, tenant, identity_id, identity_upn, identity_name, kind, \
     targets, reasons, rules, mode, state, state_reason, created_at, expires_at";

const ACTION_BY_ID: &str = "SELECT id, run_id, tenant, identity_id, identity_upn, identity_name, \
     kind, targets, reasons, rules, mode, state, state_reason, created_at, expires_at \
     FROM actions WHERE id = $1";

const APPROVALS_OF: &str = "SELECT action_id, approver, decision, comment, at, event_seq, \
     interface, os_user FROM approvals WHERE action_id = $1 ORDER BY ord";

/// SQLite's `lower()`: ASCII letters only, so both stores match the same UPNs.
macro_rules! ascii_lower {
    ($x:literal) => {
        concat!(
            "translate(",
            $x,
            ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
        )
    };
}

/// The actions filter; NULL matches everything. `position` is an exact substring
/// search (never a pattern), as SQLite's `instr`.
const FILTER_SQL: &str = concat!(
    "($1::text IS NULL OR tenant = $1::text) ",
    "AND ($2::text IS NULL OR ",
    ascii_lower!("identity_id"),
    " = ",
    ascii_lower!("$2::text"),
    " OR ",
    ascii_lower!("identity_upn"),
    " = ",
    ascii_lower!("$2::text"),
    ") ",
    "AND ($3::text IS NULL OR kind = $3::text) AND ($4::text IS NULL OR state = $4::text) ",
    "AND ($5::text IS NULL OR position(',' || $5::text || ',' in rules) > 0) ",
    "AND ($6::text IS NULL OR run_id = $6::text) ",
    "AND ($7::text IS NULL OR created_at >= $7::text) AND ($8::text IS NULL OR created_at < $8::text)"
);

/// The events filter; NULL matches everything.
const EVENT_FILTER_SQL: &str = concat!(
    "($1::text IS NULL OR e.tenant = $1::text) ",
    "AND ($2::text IS NULL OR ",
    ascii_lower!("e.identity_id"),
    " = ",
    ascii_lower!("$2::text"),
    " OR e.identity_id IN ",
    "(SELECT a.identity_id FROM actions a WHERE ",
    ascii_lower!("a.identity_upn"),
    " = ",
    ascii_lower!("$2::text"),
    ")) ",
    "AND ($3::text IS NULL OR e.action_kind = $3::text) AND ($4::text IS NULL OR e.state = $4::text) ",
    "AND ($5::text IS NULL OR e.rule = $5::text OR EXISTS (SELECT 1 FROM actions a ",
    "WHERE a.id = e.action_id AND position(',' || $5::text || ',' in a.rules) > 0)) ",
    "AND ($6::text IS NULL OR e.run_id = $6::text) AND ($7::text IS NULL OR e.at >= $7::text) ",
    "AND ($8::text IS NULL OR e.at < $8::text)"
);

#[async_trait]
impl Store for PostgresStore {
    #[tracing::instrument(skip_all)]
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

    #[tracing::instrument(skip_all)]
    async fn previous_action_count(&self, tenant: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT actionable FROM runs WHERE tenant = $1 AND kind = 'scan' \
             ORDER BY started_at DESC, ord DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn record_event(&self, event: NewEvent) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let mut chain = self.chain(&mut tx).await?;
        Self::append(&mut tx, &mut chain, &ts(Utc::now()), &event).await?;
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(run = %run.id, actions = actions.len()))]
    async fn record_run(
        &self,
        run: &NewRun,
        actions: &[NewAction],
        rule_errors: &[NewRuleError],
    ) -> Result<Vec<i64>, StoreError> {
        let at = ts(run.started_at);
        let actionable = actions
            .iter()
            // Carried-over actions are still asked for (pending under an earlier
            // run): they count, or the next run's circuit breaker would misfire.
            .filter(|a| {
                matches!(
                    a.state,
                    ActionState::Pending | ActionState::Ready | ActionState::CarriedOver
                )
            })
            .count() as i64;
        let mut tx = self.begin().await?;
        let mut chain = self.chain(&mut tx).await?;
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
        .bind(&at)
        .bind(&run.actor)
        .bind(&run.kind)
        .execute(&mut *tx)
        .await?;
        for ev in run_events(run, actions.len(), actionable, rule_errors) {
            Self::append(&mut tx, &mut chain, &at, &ev).await?;
        }
        let mut ids = Vec::with_capacity(actions.len());
        for a in actions {
            let rules: Vec<&str> = a.reasons.iter().map(|r| r.rule.as_str()).collect();
            let rules = format!(",{},", rules.join(","));
            let targets = serde_json::to_string(&a.targets).unwrap_or_default();
            let reasons = serde_json::to_string(&a.reasons).unwrap_or_default();
            let id: i64 = sqlx::query_scalar(
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
            .bind(&targets)
            .bind(&reasons)
            .bind(&rules)
            .bind(a.mode.as_str())
            .bind(a.state.as_str())
            .bind(&a.state_reason)
            .bind(&at)
            .bind(a.expires_at.map(ts))
            .fetch_one(&mut *tx)
            .await?;
            let ev = action_event(run, id, a);
            Self::append(&mut tx, &mut chain, &at, &ev).await?;
            ids.push(id);
        }
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(ids)
    }

    #[tracing::instrument(skip_all)]
    async fn actions(&self, f: &Filter) -> Result<Vec<Action>, StoreError> {
        // `LIMIT NULL` is no limit: the newest `limit` rows, returned oldest first.
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM (SELECT {ACTION_COLUMNS} FROM actions WHERE {FILTER_SQL} \
             ORDER BY id DESC LIMIT $9::bigint) AS newest ORDER BY id"
        );
        let rows: Vec<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&f.tenant)
            .bind(&f.identity)
            .bind(&f.action)
            .bind(&f.state)
            .bind(&f.rule)
            .bind(&f.run)
            .bind(f.since.map(ts))
            .bind(f.until.map(ts))
            // A negative limit is no limit, as in SQLite (PostgreSQL would refuse it).
            .bind(f.limit.filter(|n| *n >= 0))
            .fetch_all(&self.pool)
            .await?;
        into_actions(rows)
    }

    #[tracing::instrument(skip_all)]
    async fn action(&self, id: i64) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as(ACTION_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(ActionRow::into_action).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<String> = sqlx::query_scalar("SELECT scanned_at FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(at.as_deref().and_then(super::parse_ts))
    }

    #[tracing::instrument(skip_all, fields(ids = ids.len()))]
    async fn retry_counts(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, (u32, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT action_id, COUNT(*), MAX(at) FROM events \
             WHERE kind = 'execution_outcome' AND state IN ('ready', 'approved') \
             AND action_id = ANY($1::bigint[]) GROUP BY action_id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, n, at)| {
                super::parse_ts(&at).map(|at| (id, (u32::try_from(n).unwrap_or(u32::MAX), at)))
            })
            .collect())
    }

    #[tracing::instrument(skip_all)]
    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        Ok(sqlx::query_as(APPROVALS_OF)
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn expire_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let at = ts(now);
        let mut tx = self.begin().await?;
        let due: Vec<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE state = 'pending' \
             AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY id FOR UPDATE"
        )))
        .bind(&at)
        .fetch_all(&mut *tx)
        .await?;
        let due = into_actions(due)?;
        let mut chain = self.chain(&mut tx).await?;
        for a in &due {
            sqlx::query("UPDATE actions SET state = 'expired', state_reason = $1 WHERE id = $2")
                .bind("approval window passed without a decision")
                .bind(a.id)
                .execute(&mut *tx)
                .await?;
            let detail = format!(
                "pending since {}; expired at {} without a decision",
                ts(a.created_at),
                a.expires_at.map_or_else(|| "?".to_string(), ts)
            );
            Self::append(
                &mut tx,
                &mut chain,
                &at,
                &state_event(a, "state_changed", "system", ActionState::Expired, detail),
            )
            .await?;
        }
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(due.len() as u64)
    }

    #[tracing::instrument(skip_all, fields(ids = ?req.ids))]
    async fn decide(
        &self,
        req: &DecisionRequest,
        policy: &ApprovalPolicy,
    ) -> Result<Vec<Action>, StoreError> {
        approval::check_approver(policy, &req.by)?;
        if req.ids.is_empty() {
            return Err(ApprovalError::Empty.into());
        }
        let at = ts(req.now);
        // The same id twice is one decision.
        let mut ids = req.ids.clone();
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        let several = req.bulk || ids.len() > 1;
        let mut tx = self.begin().await?;
        let mut plans = Vec::with_capacity(req.ids.len());
        // Validate everything first, with the rows locked: all change, or none.
        for &id in &ids {
            let action = Self::action_for_update(&mut tx, id)
                .await?
                .ok_or(ApprovalError::UnknownId(id))?;
            let prior = self.approvals_in(&mut tx, id).await?;
            let t = approval::transition(
                &action,
                &prior,
                req.decision,
                &req.by,
                &req.origin,
                several,
                policy,
                req.now,
            )?;
            plans.push((action, t));
        }
        let mut chain = self.chain(&mut tx).await?;
        let mut out = Vec::with_capacity(plans.len());
        for (action, t) in plans {
            let mut detail = serde_json::json!({
                "decision": req.decision.as_str(), "comment": req.comment, "bulk": req.bulk,
            });
            req.origin.describe(&mut detail);
            match t.new_state {
                Some(state) => {
                    sqlx::query("UPDATE actions SET state = $1, state_reason = $2 WHERE id = $3")
                        .bind(state.as_str())
                        .bind(format!("{} by {}", req.decision.as_str(), req.by))
                        .bind(action.id)
                        .execute(&mut *tx)
                        .await?;
                    Self::append(
                        &mut tx,
                        &mut chain,
                        &at,
                        &state_event(&action, "state_changed", &req.by, state, detail.to_string()),
                    )
                    .await?;
                }
                None => {
                    Self::append(
                        &mut tx,
                        &mut chain,
                        &at,
                        &state_event(
                            &action,
                            "approval_recorded",
                            &req.by,
                            ActionState::Pending,
                            format!("{detail}; a second approver is required (four eyes)"),
                        ),
                    )
                    .await?;
                }
            }
            // The approval names the event just appended: that event records it
            // in the chain.
            sqlx::query(
                "INSERT INTO approvals (action_id, approver, decision, comment, at, event_seq, interface, os_user) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(action.id)
            .bind(&req.by)
            .bind(req.decision.as_str())
            .bind(&req.comment)
            .bind(&at)
            .bind(chain.seq)
            .bind(req.origin.interface_column())
            .bind(&req.origin.os_user)
            .execute(&mut *tx)
            .await?;
            if let Some(row) = Self::action_in(&mut tx, action.id).await? {
                out.push(row);
            }
        }
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(out)
    }

    #[tracing::instrument(skip_all)]
    async fn events(&self, f: &Filter) -> Result<Vec<EventRow>, StoreError> {
        // One action's events are their own query, so the `events_action` index
        // is used (`$10 IS NULL OR ...` would make a generic plan scan them all).
        let by_action = if f.action_id.is_some() {
            "e.action_id = $10::bigint"
        } else {
            "$10::bigint IS NULL"
        };
        // `LIMIT NULL` is no limit: the newest `limit` events, returned in order.
        let sql = format!(
            "SELECT * FROM (SELECT e.* FROM events e WHERE {by_action} AND {EVENT_FILTER_SQL} \
             ORDER BY e.seq DESC LIMIT $9::bigint) AS newest ORDER BY seq"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&f.tenant)
            .bind(&f.identity)
            .bind(&f.action)
            .bind(&f.state)
            .bind(&f.rule)
            .bind(&f.run)
            .bind(f.since.map(ts))
            .bind(f.until.map(ts))
            // A negative limit is no limit, as in SQLite (PostgreSQL would refuse it).
            .bind(f.limit.filter(|n| *n >= 0))
            .bind(f.action_id)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn verify(&self) -> Result<VerifyReport, StoreError> {
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
        Ok(verify_history(
            &events,
            &actions,
            &approvals,
            self.key.as_ref(),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn event_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash FROM events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(skip_all, fields(ids = ids.len(), to))]
    async fn claim(
        &self,
        ids: &[i64],
        from: &[ActionState],
        to: ActionState,
        actor: &str,
        detail: &str,
    ) -> Result<Vec<Action>, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let mut tx = self.begin().await?;
        // Taken with the chain lock, so times follow the chain's order.
        let at = ts(Utc::now());
        let mut chain = self.chain(&mut tx).await?;
        let mut out = Vec::new();
        for &id in ids {
            // Moves the row only if it is still in an allowed state: a concurrent
            // claim of the same id waits for the row lock, then finds it moved.
            let moved: Option<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE actions SET state = $1, state_reason = NULL \
                 WHERE id = $2 AND state = ANY($3::text[]) RETURNING {ACTION_COLUMNS}"
            )))
            .bind(to.as_str())
            .bind(id)
            .bind(&from)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(a) = moved.map(ActionRow::into_action).transpose()? else {
                continue;
            };
            Self::append(
                &mut tx,
                &mut chain,
                &at,
                &state_event(&a, "state_changed", actor, to, detail.to_string()),
            )
            .await?;
            out.push(a);
        }
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn append(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // Taken with the chain lock, so times follow the chain's order.
        let at = ts(Utc::now());
        let mut chain = self.chain(&mut tx).await?;
        for e in &events {
            Self::append(&mut tx, &mut chain, &at, e).await?;
        }
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(changes = changes.len()))]
    async fn transition(&self, changes: Vec<StateChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // Taken with the chain lock, so times follow the chain's order.
        let at = ts(Utc::now());
        let mut chain = self.chain(&mut tx).await?;
        for c in changes {
            sqlx::query("UPDATE actions SET state = $1, state_reason = $2 WHERE id = $3")
                .bind(c.state.as_str())
                .bind(&c.reason)
                .bind(c.action_id)
                .execute(&mut *tx)
                .await?;
            let mut e = c.event;
            e.action_id = Some(c.action_id);
            e.state = Some(c.state.to_string());
            Self::append(&mut tx, &mut chain, &at, &e).await?;
        }
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn tenant_state(&self, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM tenant_state WHERE tenant = $1 AND key = $2")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(skip_all)]
    async fn set_tenant_state(
        &self,
        tenant: &str,
        key: &str,
        value: &str,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Taken with the chain lock, so times follow the chain's order.
        let at = ts(Utc::now());
        let mut chain = self.chain(&mut tx).await?;
        sqlx::query(
            "INSERT INTO tenant_state (tenant, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(tenant)
        .bind(key)
        .bind(value)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        Self::append(&mut tx, &mut chain, &at, &event).await?;
        tx.commit().await?;
        self.sink.after_commit(&chain);
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(name, holder))]
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let until =
            now + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::seconds(60));
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
        .bind(ts(until))
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(got.is_some())
    }

    #[tracing::instrument(skip_all)]
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn last_run_at(&self, tenant: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT MAX(started_at) FROM runs WHERE tenant = $1 AND kind = 'scan'",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(at
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    async fn last_scanned_at(&self, tenant: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT scanned_at FROM runs WHERE tenant = $1 AND kind = 'scan' \
             ORDER BY started_at DESC, ord DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(at
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)))
    }
}
