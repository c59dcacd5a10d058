-- Execution: per-tenant state kept by the executor (Conditional Access policy ids).
-- Every change is also an event in the hash-chained history.
CREATE TABLE tenant_state (
    tenant      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX events_kind_action ON events (kind, action_id);
-- Runs are scan runs or undo runs; only scan runs count for the circuit breaker.
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'scan';
