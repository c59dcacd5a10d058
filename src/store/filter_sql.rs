//! The SQL of the history filters (`Filter`) for both databases, kept together
//! so that the two stores match the same rows: identity (id or UPN, ASCII case
//! folded), person (the run's actor or an approver), paging by offset.

use super::records::Filter;

/// True when the query takes only a page of the newest rows.
fn paged(f: &Filter) -> bool {
    f.limit.is_some() || f.offset.is_some()
}

/// SQLite: the actions filter; `?10` is the person. NULL matches everything.
const SQLITE_ACTIONS: &str = "(?1 IS NULL OR tenant = ?1) \
     AND (?2 IS NULL OR lower(identity_id) = lower(?2) OR lower(identity_upn) = lower(?2)) \
     AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR state = ?4) \
     AND (?5 IS NULL OR instr(rules, ',' || ?5 || ',') > 0) AND (?6 IS NULL OR run_id = ?6) \
     AND (?7 IS NULL OR created_at >= ?7) AND (?8 IS NULL OR created_at < ?8) \
     AND (?10 IS NULL OR EXISTS (SELECT 1 FROM runs r WHERE r.id = actions.run_id AND lower(r.actor) = lower(?10)) \
     OR EXISTS (SELECT 1 FROM approvals p WHERE p.action_id = actions.id AND lower(p.approver) = lower(?10)))";

/// SQLite: the actions look-up. Binds: the eight filter values, `?9` limit,
/// `?10` person, `?11` offset. Limited or offset: the newest rows, returned
/// oldest first.
pub(crate) fn sqlite_actions(f: &Filter) -> String {
    if paged(f) {
        format!(
            "SELECT * FROM (SELECT * FROM actions WHERE {SQLITE_ACTIONS} ORDER BY id DESC \
             LIMIT coalesce(?9, -1) OFFSET coalesce(?11, 0)) ORDER BY id"
        )
    } else {
        format!(
            "SELECT * FROM actions WHERE {SQLITE_ACTIONS} AND ?9 IS NULL AND ?11 IS NULL ORDER BY id"
        )
    }
}

/// The SQL of an events look-up (SQLite). Binds: the eight filter values, `?9`
/// limit, `?10` action id, `?11` person (events of the actions it matches),
/// `?12` offset. Looking up one action's events is its own query,
/// `e.action_id = ?10`, so it uses the `events_action` index (an
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
         AND (?6 IS NULL OR e.run_id = ?6) AND (?7 IS NULL OR e.at >= ?7) AND (?8 IS NULL OR e.at < ?8) \
         AND (?11 IS NULL OR e.action_id IN (SELECT a.id FROM actions a WHERE \
         EXISTS (SELECT 1 FROM runs r WHERE r.id = a.run_id AND lower(r.actor) = lower(?11)) \
         OR EXISTS (SELECT 1 FROM approvals p WHERE p.action_id = a.id AND lower(p.approver) = lower(?11))))"
    );
    if paged(f) {
        format!(
            "SELECT * FROM (SELECT e.* FROM events e WHERE {cond} ORDER BY e.seq DESC \
             LIMIT coalesce(?9, -1) OFFSET coalesce(?12, 0)) ORDER BY seq"
        )
    } else {
        format!(
            "SELECT e.* FROM events e WHERE {cond} AND ?9 IS NULL AND ?12 IS NULL ORDER BY e.seq"
        )
    }
}

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

/// PostgreSQL: the actions filter; `$10` is the person. NULL matches
/// everything. `position` is an exact substring search (never a pattern), as
/// SQLite's `instr`.
const PG_ACTIONS: &str = concat!(
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
    "AND ($7::text IS NULL OR created_at >= $7::text) AND ($8::text IS NULL OR created_at < $8::text) ",
    "AND ($10::text IS NULL OR EXISTS (SELECT 1 FROM runs r WHERE r.id = actions.run_id AND ",
    ascii_lower!("r.actor"),
    " = ",
    ascii_lower!("$10::text"),
    ") OR EXISTS (SELECT 1 FROM approvals p WHERE p.action_id = actions.id AND ",
    ascii_lower!("p.approver"),
    " = ",
    ascii_lower!("$10::text"),
    "))"
);

/// The columns of `ActionRow`, in table order.
pub(crate) const PG_ACTION_COLUMNS: &str = "id, run_id, tenant, identity_id, identity_upn, \
     identity_name, kind, targets, reasons, rules, mode, state, state_reason, created_at, expires_at";

/// PostgreSQL: the actions look-up, binds as in SQLite (`$9` limit, `$10`
/// person, `$11` offset). `LIMIT NULL` is no limit: the newest rows, returned
/// oldest first.
pub(crate) fn pg_actions() -> String {
    let cols = PG_ACTION_COLUMNS;
    format!(
        "SELECT {cols} FROM (SELECT {cols} FROM actions WHERE {PG_ACTIONS} \
         ORDER BY id DESC LIMIT $9::bigint OFFSET coalesce($11::bigint, 0)) AS newest ORDER BY id"
    )
}

/// PostgreSQL: the events filter; NULL matches everything.
const PG_EVENTS: &str = concat!(
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
    "AND ($8::text IS NULL OR e.at < $8::text) ",
    "AND ($11::text IS NULL OR e.action_id IN (SELECT a.id FROM actions a WHERE ",
    "EXISTS (SELECT 1 FROM runs r WHERE r.id = a.run_id AND ",
    ascii_lower!("r.actor"),
    " = ",
    ascii_lower!("$11::text"),
    ") OR EXISTS (SELECT 1 FROM approvals p WHERE p.action_id = a.id AND ",
    ascii_lower!("p.approver"),
    " = ",
    ascii_lower!("$11::text"),
    ")))"
);

/// PostgreSQL: the events look-up, binds as in SQLite (`$10` action id, `$11`
/// person, `$12` offset). One action's events are their own query, so the
/// `events_action` index is used (`$10 IS NULL OR ...` would make a generic
/// plan scan them all). `LIMIT NULL` is no limit.
pub(crate) fn pg_events(f: &Filter) -> String {
    let by_action = if f.action_id.is_some() {
        "e.action_id = $10::bigint"
    } else {
        "$10::bigint IS NULL"
    };
    format!(
        "SELECT * FROM (SELECT e.* FROM events e WHERE {by_action} AND {PG_EVENTS} \
         ORDER BY e.seq DESC LIMIT $9::bigint OFFSET coalesce($12::bigint, 0)) AS newest ORDER BY seq"
    )
}
