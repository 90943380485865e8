-- idgov initial schema (SQLite). Times are microseconds since the Unix
-- epoch (UTC) in INTEGER columns, identical on both backends.

CREATE TABLE identities (
    employee_id         TEXT PRIMARY KEY,
    display_name        TEXT NOT NULL,
    email               TEXT NOT NULL,
    department          TEXT NOT NULL,
    title               TEXT NOT NULL,
    job_code            TEXT NOT NULL,
    location            TEXT NOT NULL,
    cost_center         TEXT NOT NULL,
    manager_id          TEXT,
    employment_type     TEXT NOT NULL,
    background_check    TEXT NOT NULL,
    clearance           TEXT NOT NULL,
    start_date          TEXT,
    end_date            TEXT,
    status              TEXT NOT NULL,
    attrs_effective_at  INTEGER NOT NULL,
    status_effective_at INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX identities_by_status ON identities (status, employee_id);
CREATE INDEX identities_by_department ON identities (department, employee_id);
CREATE INDEX identities_by_manager ON identities (manager_id, employee_id);
-- The scheduler asks every second whose last day is over.
CREATE INDEX identities_ending ON identities (end_date)
    WHERE status IN ('active', 'suspended') AND end_date IS NOT NULL;

CREATE TABLE grants (
    id                   TEXT PRIMARY KEY,
    employee_id          TEXT NOT NULL REFERENCES identities (employee_id),
    entitlement_id       TEXT NOT NULL,
    classification       TEXT NOT NULL,
    source               TEXT NOT NULL,
    source_ref           TEXT NOT NULL,
    granted_at           INTEGER NOT NULL,
    expires_at           INTEGER,
    approvers            TEXT NOT NULL,
    justification        TEXT NOT NULL,
    revoked_at           INTEGER,
    revoke_reason        TEXT,
    review_pending INTEGER NOT NULL DEFAULT 0,
    cause                TEXT NOT NULL
);
CREATE INDEX grants_by_identity ON grants (employee_id, id);
CREATE INDEX grants_active_by_entitlement ON grants (entitlement_id) WHERE revoked_at IS NULL;
-- A person's active grants, read by every HR event about them.
CREATE INDEX grants_active_by_identity ON grants (employee_id) WHERE revoked_at IS NULL;

CREATE TABLE hr_events (
    arrival       INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    employee_id   TEXT NOT NULL,
    effective_at  INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    state         TEXT NOT NULL,
    applied_at    INTEGER,
    detail        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    payload       TEXT NOT NULL,
    actor         TEXT NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX hr_events_due ON hr_events (effective_at, arrival) WHERE state = 'scheduled';
CREATE INDEX hr_events_by_employee ON hr_events (employee_id, arrival);
-- Events that did not simply apply (scheduled, superseded, rescinded,
-- rejected): the ones people list. Applied events, nearly all of them, stay out.
CREATE INDEX hr_events_unusual ON hr_events (state, arrival) WHERE state <> 'applied';

CREATE TABLE roster_syncs (
    source         TEXT NOT NULL,
    sync_id        TEXT NOT NULL,
    received_at    INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    held_change_id TEXT,
    response       TEXT NOT NULL,
    PRIMARY KEY (source, sync_id)
);

CREATE TABLE held_changes (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    summary         TEXT NOT NULL,
    guard           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    decided_by      TEXT,
    decided_at      INTEGER,
    decision_reason TEXT
);
CREATE INDEX held_changes_by_state ON held_changes (state, created_at);

CREATE TABLE policies (
    version    INTEGER PRIMARY KEY,
    document   TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    applied_at INTEGER NOT NULL,
    applied_by TEXT NOT NULL,
    reason     TEXT NOT NULL
);

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    occurred_at INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    security    INTEGER NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_by_actor ON audit_events (actor, seq);
CREATE INDEX audit_by_target ON audit_events (target, seq);
CREATE INDEX audit_by_time ON audit_events (occurred_at, seq);

-- The chain head: the last event's position and hash. Writers lock this row,
-- so events are appended one transaction at a time, in commit order.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The audit log is append-only.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
