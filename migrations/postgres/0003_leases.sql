-- Leases: which daemon instance runs a tenant now. A crashed holder's lease expires.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  TEXT COLLATE "C" NOT NULL
);
