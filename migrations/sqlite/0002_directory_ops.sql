-- The provisioning outbox: directory operations written in the same
-- transaction as the change that needs them, applied by a worker in order
-- per person. Nothing is deleted: done operations stay as the record.
CREATE TABLE directory_ops (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    employee_id     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    group_dn        TEXT,
    entitlement_id  TEXT,
    cause           TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    outcome         TEXT,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER NOT NULL DEFAULT 0,
    done_at         INTEGER,
    alerted         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX directory_ops_pending ON directory_ops (employee_id, id) WHERE state = 'pending';
CREATE INDEX directory_ops_due ON directory_ops (next_attempt_at) WHERE state = 'pending';
CREATE INDEX directory_ops_by_employee ON directory_ops (employee_id, id);
