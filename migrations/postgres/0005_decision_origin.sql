-- Who decided, as far as this machine can tell, until a console sign-in exists:
-- the interface a decision came through ("cli" or "api") and, for the CLI, the
-- operating-system user who ran it, beside the self-declared approver name.
-- Rows written before this migration have neither (NULL).
ALTER TABLE approvals ADD COLUMN interface TEXT;
ALTER TABLE approvals ADD COLUMN os_user TEXT;
