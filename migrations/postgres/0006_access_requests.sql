-- Access requests, separation-of-duties exceptions and violations, and
-- time-bound grants (the expiry sweep reads grants by expires_at).

CREATE TABLE access_requests (
    id          TEXT PRIMARY KEY,
    requester   TEXT NOT NULL,
    beneficiary TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    state       TEXT NOT NULL,
    -- Who must decide next (an employee id, or '@security'); NULL once decided.
    waiting_on  TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- Bumped by every change: a write that read an older version fails.
    version     BIGINT NOT NULL,
    -- The whole request (steps, decisions, grants) as JSON.
    body        TEXT NOT NULL
);
CREATE INDEX access_requests_by_beneficiary ON access_requests (beneficiary, id);
CREATE INDEX access_requests_by_requester ON access_requests (requester, id);
CREATE INDEX access_requests_by_state ON access_requests (state, id);
CREATE INDEX access_requests_waiting ON access_requests (waiting_on, id) WHERE waiting_on IS NOT NULL;
CREATE INDEX access_requests_expiring ON access_requests (expires_at) WHERE state = 'pending';

CREATE TABLE sod_exceptions (
    id            TEXT PRIMARY KEY,
    employee_id   TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    justification TEXT NOT NULL,
    granted_by    TEXT NOT NULL,
    granted_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    -- 'active', 'expired' or 'revoked'.
    state         TEXT NOT NULL,
    ended_at      BIGINT
);
CREATE INDEX sod_exceptions_by_employee ON sod_exceptions (employee_id, rule_id) WHERE state = 'active';
CREATE INDEX sod_exceptions_due ON sod_exceptions (expires_at) WHERE state = 'active';

-- Conflicts the detective check found: open until the conflict is gone.
CREATE TABLE sod_violations (
    employee_id   TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    severity      TEXT NOT NULL,
    entitlements  TEXT NOT NULL,
    detected_at   BIGINT NOT NULL,
    checked_at    BIGINT NOT NULL,
    resolved_at   BIGINT,
    PRIMARY KEY (employee_id, rule_id)
);
CREATE INDEX sod_violations_open ON sod_violations (employee_id, rule_id) WHERE resolved_at IS NULL;

ALTER TABLE grants ADD COLUMN exception_id TEXT;
CREATE INDEX grants_expiring ON grants (expires_at) WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX grants_by_exception ON grants (exception_id) WHERE revoked_at IS NULL AND exception_id IS NOT NULL;
