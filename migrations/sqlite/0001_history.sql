-- History store, SQLite. Events are append-only and hash-chained.
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    scan_source     TEXT NOT NULL,
    scan_sha256     TEXT NOT NULL,
    scanned_at      TEXT NOT NULL,
    rule_set_hash   TEXT NOT NULL,
    mode            TEXT NOT NULL,
    downgrades      TEXT NOT NULL,
    identities      INTEGER NOT NULL,
    findings        INTEGER NOT NULL,
    actionable      INTEGER NOT NULL,
    started_at      TEXT NOT NULL,
    actor           TEXT NOT NULL
);
CREATE INDEX runs_tenant ON runs (tenant, started_at);
CREATE INDEX runs_scan ON runs (tenant, scan_sha256);

CREATE TABLE actions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL REFERENCES runs (id),
    tenant          TEXT NOT NULL,
    identity_id     TEXT NOT NULL,
    identity_upn    TEXT NOT NULL,
    identity_name   TEXT NOT NULL,
    kind            TEXT NOT NULL,
    targets         TEXT NOT NULL,
    reasons         TEXT NOT NULL,
    rules           TEXT NOT NULL,
    mode            TEXT NOT NULL,
    state           TEXT NOT NULL,
    state_reason    TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT
);
CREATE INDEX actions_run ON actions (run_id);
CREATE INDEX actions_state ON actions (state, expires_at);

CREATE TABLE approvals (
    action_id       INTEGER NOT NULL REFERENCES actions (id),
    approver        TEXT NOT NULL,
    decision        TEXT NOT NULL,
    comment         TEXT,
    at              TEXT NOT NULL
);
CREATE INDEX approvals_action ON approvals (action_id);

CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    tenant          TEXT,
    run_id          TEXT,
    action_id       INTEGER,
    identity_id     TEXT,
    action_kind     TEXT,
    rule            TEXT,
    kind            TEXT NOT NULL,
    actor           TEXT NOT NULL,
    state           TEXT,
    detail          TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX events_action ON events (action_id);
CREATE INDEX events_at ON events (at);

-- History cannot be rewritten: the database refuses it.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'history is append-only: events cannot be updated'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'history is append-only: events cannot be deleted'); END;
CREATE TRIGGER approvals_no_update BEFORE UPDATE ON approvals
BEGIN SELECT RAISE(ABORT, 'history is append-only: approvals cannot be updated'); END;
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
BEGIN SELECT RAISE(ABORT, 'history is append-only: approvals cannot be deleted'); END;
CREATE TRIGGER runs_no_update BEFORE UPDATE ON runs
BEGIN SELECT RAISE(ABORT, 'history is append-only: runs cannot be updated'); END;
CREATE TRIGGER runs_no_delete BEFORE DELETE ON runs
BEGIN SELECT RAISE(ABORT, 'history is append-only: runs cannot be deleted'); END;
CREATE TRIGGER actions_no_delete BEFORE DELETE ON actions
BEGIN SELECT RAISE(ABORT, 'history is append-only: actions cannot be deleted'); END;
-- Only an action's state may change, and every change has its event.
CREATE TRIGGER actions_fixed_columns BEFORE UPDATE OF
    id, run_id, tenant, identity_id, identity_upn, identity_name, kind, targets, reasons,
    rules, mode, created_at, expires_at ON actions
BEGIN SELECT RAISE(ABORT, 'history is append-only: only an action''s state may change'); END;
