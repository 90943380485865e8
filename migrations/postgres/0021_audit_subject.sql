-- The person an audit event is about (`idgov_domain::audit::subject_of`):
-- the identity it targets, or else the first of `employee_id`,
-- `beneficiary`, `employee` that its detail gives as text. It lets an
-- auditor list everything about one person (their grants' and requests'
-- events target the grant or the request). It is derived from what the
-- chain hashes and not hashed itself: `audit verify` checks it against them.
--
-- Older events get theirs here: the append-only trigger is lifted for this
-- one derivation, inside the migration's transaction, and put back.
ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update;
ALTER TABLE audit_events ADD COLUMN subject TEXT;
UPDATE audit_events SET subject = NULLIF(
    CASE
        WHEN left(target, 9) = 'identity:' THEN substr(target, 10)
        ELSE COALESCE(
            CASE WHEN json_typeof(detail::json -> 'employee_id') = 'string' THEN detail::json ->> 'employee_id' END,
            CASE WHEN json_typeof(detail::json -> 'beneficiary') = 'string' THEN detail::json ->> 'beneficiary' END,
            CASE WHEN json_typeof(detail::json -> 'employee') = 'string' THEN detail::json ->> 'employee' END)
    END, '');
ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update;
CREATE INDEX audit_by_subject ON audit_events (subject, seq) WHERE subject IS NOT NULL;
