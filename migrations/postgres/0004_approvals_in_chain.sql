-- Approvals in the hash chain: every approval row names the event that records
-- it (`event_seq`), and `audit verify` and four eyes count only rows whose event
-- matches. Rows from before this migration are matched to their event here.
-- Mirrors migrations/sqlite/0004_approvals_in_chain.sql.
ALTER TABLE approvals ADD COLUMN event_seq BIGINT;
ALTER TABLE approvals DISABLE TRIGGER approvals_no_update;
UPDATE approvals SET event_seq = (
    SELECT MIN(e.seq) FROM events e
    WHERE e.action_id = approvals.action_id AND e.actor = approvals.approver
      AND e.at = approvals.at AND e.kind IN ('state_changed', 'approval_recorded')
      AND position('"decision":"' || approvals.decision || '"' in e.detail) > 0
);
ALTER TABLE approvals ENABLE TRIGGER approvals_no_update;
CREATE INDEX approvals_event ON approvals (event_seq);
