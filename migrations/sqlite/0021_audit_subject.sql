-- The person an audit event is about (`idgov_domain::audit::subject_of`):
-- the identity it targets, or else the first of `employee_id`,
-- `beneficiary`, `employee` that its detail gives as text. It lets an
-- auditor list everything about one person (their grants' and requests'
-- events target the grant or the request). It is derived from what the
-- chain hashes and not hashed itself: `audit verify` checks it against them.
--
-- Older events get theirs here: the append-only trigger is lifted for this
-- one derivation, inside the migration's transaction, and put back.
DROP TRIGGER audit_events_no_update;
ALTER TABLE audit_events ADD COLUMN subject TEXT;
UPDATE audit_events SET subject = NULLIF(
    CASE
        WHEN substr(target, 1, 9) = 'identity:' THEN substr(target, 10)
        WHEN json_valid(detail) THEN COALESCE(
            CASE WHEN json_type(detail, '$.employee_id') = 'text' THEN json_extract(detail, '$.employee_id') END,
            CASE WHEN json_type(detail, '$.beneficiary') = 'text' THEN json_extract(detail, '$.beneficiary') END,
            CASE WHEN json_type(detail, '$.employee') = 'text' THEN json_extract(detail, '$.employee') END)
    END, '');
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
CREATE INDEX audit_by_subject ON audit_events (subject, seq) WHERE subject IS NOT NULL;
