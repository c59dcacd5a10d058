-- Approvals in the hash chain: every approval row names the event that records
-- it (`event_seq`), and `audit verify` and four eyes count only rows whose event
-- matches. Rows from before this migration are matched to their event here.
ALTER TABLE approvals ADD COLUMN event_seq INTEGER;
DROP TRIGGER approvals_no_update;
UPDATE approvals SET event_seq = (
    SELECT MIN(e.seq) FROM events e
    WHERE e.action_id = approvals.action_id AND e.actor = approvals.approver
      AND e.at = approvals.at AND e.kind IN ('state_changed', 'approval_recorded')
      AND instr(e.detail, '"decision":"' || approvals.decision || '"') > 0
);
CREATE TRIGGER approvals_no_update BEFORE UPDATE ON approvals
BEGIN SELECT RAISE(ABORT, 'history is append-only: approvals cannot be updated'); END;
CREATE INDEX approvals_event ON approvals (event_seq);
