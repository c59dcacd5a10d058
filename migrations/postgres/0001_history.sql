-- History store, PostgreSQL. Events are append-only and hash-chained.
-- Mirrors migrations/sqlite/0001_history.sql. Timestamps stay TEXT (RFC 3339 UTC
-- with milliseconds, as written by the daemon) because the hash chain covers the
-- exact strings; COLLATE "C" makes them compare and sort byte by byte, as in SQLite.
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    scan_source     TEXT NOT NULL,
    scan_sha256     TEXT NOT NULL,
    scanned_at      TEXT COLLATE "C" NOT NULL,
    rule_set_hash   TEXT NOT NULL,
    mode            TEXT NOT NULL,
    downgrades      TEXT NOT NULL,
    identities      BIGINT NOT NULL,
    findings        BIGINT NOT NULL,
    actionable      BIGINT NOT NULL,
    started_at      TEXT COLLATE "C" NOT NULL,
    actor           TEXT NOT NULL,
    -- Insertion order (SQLite's rowid): breaks ties between runs started at the same time.
    ord             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX runs_tenant ON runs (tenant, started_at);
CREATE INDEX runs_scan ON runs (tenant, scan_sha256);

CREATE TABLE actions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    created_at      TEXT COLLATE "C" NOT NULL,
    expires_at      TEXT COLLATE "C"
);
CREATE INDEX actions_run ON actions (run_id);
CREATE INDEX actions_state ON actions (state, expires_at);

CREATE TABLE approvals (
    -- Insertion order (SQLite's rowid).
    ord             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action_id       BIGINT NOT NULL REFERENCES actions (id),
    approver        TEXT NOT NULL,
    decision        TEXT NOT NULL,
    comment         TEXT,
    at              TEXT COLLATE "C" NOT NULL
);
CREATE INDEX approvals_action ON approvals (action_id);

CREATE TABLE events (
    seq             BIGINT PRIMARY KEY,
    at              TEXT COLLATE "C" NOT NULL,
    tenant          TEXT,
    run_id          TEXT,
    action_id       BIGINT,
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

-- History cannot be rewritten: the database refuses it. The message is the
-- trigger's first argument, word for word the same as SQLite's.
CREATE FUNCTION history_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: events cannot be updated');
CREATE TRIGGER events_no_delete BEFORE DELETE ON events FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: events cannot be deleted');
CREATE TRIGGER approvals_no_update BEFORE UPDATE ON approvals FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: approvals cannot be updated');
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: approvals cannot be deleted');
CREATE TRIGGER runs_no_update BEFORE UPDATE ON runs FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: runs cannot be updated');
CREATE TRIGGER runs_no_delete BEFORE DELETE ON runs FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: runs cannot be deleted');
CREATE TRIGGER actions_no_delete BEFORE DELETE ON actions FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: actions cannot be deleted');
-- Only an action's state may change, and every change has its event.
CREATE TRIGGER actions_fixed_columns BEFORE UPDATE OF
    id, run_id, tenant, identity_id, identity_upn, identity_name, kind, targets, reasons,
    rules, mode, created_at, expires_at ON actions FOR EACH ROW
EXECUTE FUNCTION history_append_only('history is append-only: only an action''s state may change');
-- PostgreSQL also has TRUNCATE, which skips row triggers: refuse it too.
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT
EXECUTE FUNCTION history_append_only('history is append-only: events cannot be deleted');
CREATE TRIGGER approvals_no_truncate BEFORE TRUNCATE ON approvals FOR EACH STATEMENT
EXECUTE FUNCTION history_append_only('history is append-only: approvals cannot be deleted');
CREATE TRIGGER runs_no_truncate BEFORE TRUNCATE ON runs FOR EACH STATEMENT
EXECUTE FUNCTION history_append_only('history is append-only: runs cannot be deleted');
CREATE TRIGGER actions_no_truncate BEFORE TRUNCATE ON actions FOR EACH STATEMENT
EXECUTE FUNCTION history_append_only('history is append-only: actions cannot be deleted');
