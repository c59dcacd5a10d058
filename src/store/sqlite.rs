//! The embedded SQLite store: WAL mode, a busy timeout, and `BEGIN IMMEDIATE` for
//! every transaction that reads then writes.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Action, ActionState};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{
    ActionRow, ApprovalRow, Chain, CheckpointSink, DecisionRequest, EventRow, Filter, HistoryKey,
    KEYED_EVENT, NewAction, NewEvent, NewRuleError, NewRun, OpenOptions, StateChange, Store,
    StoreError, VerifyReport, action_event, approval_in_chain, display_name, into_actions,
    keyed_event, marker_of, resolve_key, run_events, state_event, ts, verify_history,
};
use crate::approval::{self, ApprovalError, ApprovalPolicy};

/// History kept in a local SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
    /// The key new events are chained with (`None`: unkeyed).
    key: Option<HistoryKey>,
    /// The seq of the `history_keyed` event, when the chain is keyed.
    keyed_from: Option<i64>,
    read_only: bool,
    sink: CheckpointSink,
}

impl SqliteStore {
    /// Opens the database file as the options say (creating it only when they
    /// allow), applies migrations and settles the history key.
    pub async fn open_with(opts: &OpenOptions) -> Result<SqliteStore, StoreError> {
        let raw = opts.url.strip_prefix("sqlite://").unwrap_or(&opts.url);
        let path = Path::new(raw);
        if !opts.create && !path.is_file() {
            return Err(StoreError::Missing(display_name(&opts.url)));
        }
        let pool = Self::connect(path, opts.create, &display_name(&opts.url)).await?;
        let marker = marker_of(
            sqlx::query_as("SELECT seq, detail FROM events WHERE kind = ? ORDER BY seq LIMIT 1")
                .bind(KEYED_EVENT)
                .fetch_optional(&pool)
                .await?,
        );
        let key = resolve_key(opts, marker.as_ref())?;
        let mut store = SqliteStore {
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
            // Start keying: one `history_keyed` event, itself keyed, unless
            // another process did so meanwhile.
            let mut tx = store.begin().await?;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM events WHERE kind = ? ORDER BY seq LIMIT 1")
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

    /// Opens the pool (serialized with other openers) and applies migrations;
    /// without `create`, a file that holds no history is refused untouched.
    async fn connect(path: &Path, create: bool, name: &str) -> Result<SqlitePool, StoreError> {
        if create
            && let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Db(sqlx::Error::Configuration(
                    format!("cannot create {}: {e}", dir.display()).into(),
                ))
            })?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Two processes opening the store at once (the daemon and a CLI command)
        // must not both switch it to WAL or apply migrations: SQLite has no
        // advisory lock for that, and the WAL switch ignores the busy timeout, so
        // opening is serialized with a lock file.
        let lock_path = path.with_extension("migrate.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Db(sqlx::Error::Configuration(
                    format!("cannot open {}: {e}", lock_path.display()).into(),
                ))
            })?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let opened = async {
            // Checked under the lock: a store another process is creating right
            // now is complete once the lock is ours.
            if !create && !is_sqlite_file(path) {
                return Err(StoreError::Open {
                    store: name.to_string(),
                    message: "it is not an SQLite database, so it holds no history (not an entra-remediator store); nothing was changed".into(),
                });
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            if !create {
                let tables: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
                )
                .fetch_one(&pool)
                .await?;
                if tables == 0 {
                    return Err(StoreError::Open {
                        store: path.display().to_string(),
                        message: "it holds no history (not an entra-remediator store); nothing was changed".into(),
                    });
                }
            }
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Ok::<_, StoreError>(pool)
        }
        .await;
        drop(lock);
        opened
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn chain(&self, tx: &mut Transaction<'_, Sqlite>) -> Result<Chain, StoreError> {
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
        Ok(Chain::new(last, self.key.as_ref()))
    }

    async fn append(
        tx: &mut Transaction<'_, Sqlite>,
        chain: &mut Chain,
        at: &str,
        e: &NewEvent,
    ) -> Result<(), StoreError> {
        let (seq, prev, hash) = chain.link(at, e);
        sqlx::query(
            "INSERT INTO events (seq, at, tenant, run_id, action_id, identity_id, action_kind, \
             rule, kind, actor, state, detail, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    async fn action_in(
        tx: &mut Transaction<'_, Sqlite>,
        id: i64,
    ) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as("SELECT * FROM actions WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(ActionRow::into_action).transpose()
    }

    /// The approvals of an action that the verified chain records: only these
    /// count towards four eyes (a row inserted behind the store's back does not).
    async fn approvals_in(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        id: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows: Vec<ApprovalRow> =
            sqlx::query_as("SELECT * FROM approvals WHERE action_id = ? ORDER BY rowid")
                .bind(id)
                .fetch_all(&mut **tx)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for ap in rows {
            let ev: Option<EventRow> = match ap.event_seq {
                Some(seq) => {
                    sqlx::query_as("SELECT * FROM events WHERE seq = ?")
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

/// True when the file starts with SQLite's header (an empty file does not).
fn is_sqlite_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}

/// The SQL of an events look-up. Looking up one action's events is its own
/// query, `e.action_id = ?10`, so it uses the `events_action` index (an
/// `?10 IS NULL OR ...` term would make SQLite scan every event).
pub fn events_sql(f: &Filter) -> String {
    let by_action = if f.action_id.is_some() {
        "e.action_id = ?10"
    } else {
        "?10 IS NULL"
    };
    let cond = format!(
        "{by_action} AND (?1 IS NULL OR e.tenant = ?1) \
         AND (?2 IS NULL OR lower(e.identity_id) = lower(?2) OR e.identity_id IN (SELECT a.identity_id FROM actions a WHERE lower(a.identity_upn) = lower(?2))) \
         AND (?3 IS NULL OR e.action_kind = ?3) AND (?4 IS NULL OR e.state = ?4) \
         AND (?5 IS NULL OR e.rule = ?5 OR EXISTS (SELECT 1 FROM actions a WHERE a.id = e.action_id AND instr(a.rules, ',' || ?5 || ',') > 0)) \
         AND (?6 IS NULL OR e.run_id = ?6) AND (?7 IS NULL OR e.at >= ?7) AND (?8 IS NULL OR e.at < ?8)"
    );
    if f.limit.is_some() {
        format!(
            "SELECT * FROM (SELECT e.* FROM events e WHERE {cond} ORDER BY e.seq DESC LIMIT ?9) ORDER BY seq"
        )
    } else {
        format!("SELECT e.* FROM events e WHERE {cond} AND ?9 IS NULL ORDER BY e.seq")
    }
}

const FILTER_SQL: &str = "(?1 IS NULL OR tenant = ?1) \
     AND (?2 IS NULL OR lower(identity_id) = lower(?2) OR lower(identity_upn) = lower(?2)) \
     AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR state = ?4) \
     AND (?5 IS NULL OR instr(rules, ',' || ?5 || ',') > 0) AND (?6 IS NULL OR run_id = ?6) \
     AND (?7 IS NULL OR created_at >= ?7) AND (?8 IS NULL OR created_at < ?8)";

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(skip_all)]
    async fn scan_processed(&self, tenant: &str, sha256: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE tenant = ? AND scan_sha256 = ? AND kind = 'scan'",
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
            "SELECT actionable FROM runs WHERE tenant = ? AND kind = 'scan' ORDER BY started_at DESC, rowid DESC LIMIT 1",
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
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        let sql = if f.limit.is_some() {
            "SELECT * FROM (SELECT * FROM actions WHERE {F} ORDER BY id DESC LIMIT ?9) ORDER BY id"
        } else {
            "SELECT * FROM actions WHERE {F} AND ?9 IS NULL ORDER BY id"
        };
        let sql = sql.replace("{F}", FILTER_SQL);
        let rows: Vec<ActionRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&f.tenant)
            .bind(&f.identity)
            .bind(&f.action)
            .bind(&f.state)
            .bind(&f.rule)
            .bind(&f.run)
            .bind(f.since.map(ts))
            .bind(f.until.map(ts))
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        into_actions(rows)
    }

    #[tracing::instrument(skip_all)]
    async fn action(&self, id: i64) -> Result<Option<Action>, StoreError> {
        let row: Option<ActionRow> = sqlx::query_as("SELECT * FROM actions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(ActionRow::into_action).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn run_scanned_at(&self, run_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<String> = sqlx::query_scalar("SELECT scanned_at FROM runs WHERE id = ?")
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
        let mut out = std::collections::HashMap::new();
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
            for (id, n, at) in q.fetch_all(&self.pool).await? {
                if let Some(at) = super::parse_ts(&at) {
                    out.insert(id, (u32::try_from(n).unwrap_or(u32::MAX), at));
                }
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all)]
    async fn approvals(&self, id: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM approvals WHERE action_id = ? ORDER BY rowid")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(skip_all)]
    async fn expire_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let at = ts(now);
        let mut tx = self.begin().await?;
        let due: Vec<ActionRow> = sqlx::query_as(
            "SELECT * FROM actions WHERE state = 'pending' AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY id",
        )
        .bind(&at)
        .fetch_all(&mut *tx)
        .await?;
        let due = into_actions(due)?;
        let mut chain = self.chain(&mut tx).await?;
        for a in &due {
            sqlx::query("UPDATE actions SET state = 'expired', state_reason = ? WHERE id = ?")
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
        // Validate everything first: all change, or none.
        for &id in &ids {
            let action = Self::action_in(&mut tx, id)
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
                    sqlx::query("UPDATE actions SET state = ?, state_reason = ? WHERE id = ?")
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
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let events: Vec<EventRow> = sqlx::query_as("SELECT * FROM events ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        let actions: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, state FROM actions ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let approvals: Vec<ApprovalRow> = sqlx::query_as("SELECT * FROM approvals ORDER BY rowid")
            .fetch_all(&self.pool)
            .await?;
        Ok(verify_history(
            &events,
            &actions,
            &approvals,
            self.key.as_ref(),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn event_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash FROM events WHERE seq = ?")
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
        let at = ts(Utc::now());
        let mut tx = self.begin().await?;
        let mut chain = self.chain(&mut tx).await?;
        let mut out = Vec::new();
        for &id in ids {
            let Some(a) = Self::action_in(&mut tx, id).await? else {
                continue;
            };
            if !from.contains(&a.state) {
                continue;
            }
            sqlx::query("UPDATE actions SET state = ?, state_reason = NULL WHERE id = ?")
                .bind(to.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Self::append(
                &mut tx,
                &mut chain,
                &at,
                &state_event(&a, "state_changed", actor, to, detail.to_string()),
            )
            .await?;
            if let Some(row) = Self::action_in(&mut tx, id).await? {
                out.push(row);
            }
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
        let at = ts(Utc::now());
        let mut tx = self.begin().await?;
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
        let at = ts(Utc::now());
        let mut tx = self.begin().await?;
        let mut chain = self.chain(&mut tx).await?;
        for c in changes {
            sqlx::query("UPDATE actions SET state = ?, state_reason = ? WHERE id = ?")
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
            sqlx::query_scalar("SELECT value FROM tenant_state WHERE tenant = ? AND key = ?")
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
        let at = ts(Utc::now());
        let mut tx = self.begin().await?;
        let mut chain = self.chain(&mut tx).await?;
        sqlx::query(
            "INSERT INTO tenant_state (tenant, key, value, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
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
        let mut tx = self.begin().await?;
        let current: Option<(String, String)> =
            sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let free = match &current {
            None => true,
            Some((h, exp)) => h == holder || exp.as_str() <= ts(now).as_str(),
        };
        if free {
            sqlx::query(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            )
            .bind(name)
            .bind(holder)
            .bind(ts(until))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(free)
    }

    #[tracing::instrument(skip_all)]
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn last_run_at(&self, tenant: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT MAX(started_at) FROM runs WHERE tenant = ? AND kind = 'scan'",
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
            "SELECT scanned_at FROM runs WHERE tenant = ? AND kind = 'scan' \
             ORDER BY started_at DESC, rowid DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(at
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)))
    }
}
