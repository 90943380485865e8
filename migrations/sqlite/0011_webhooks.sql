-- Webhook subscriptions (issue 13). The audit log is the durable outbox:
-- every event is committed with its change, and each subscription reads
-- it in order from its cursor (the last event delivered), so delivery is
-- at least once and in order per subscription. A lease keeps one replica
-- delivering a subscription at a time.
CREATE TABLE webhook_subscriptions (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,
    cursor           INTEGER NOT NULL,
    state            TEXT NOT NULL,
    state_reason     TEXT,
    failures         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    claimed_until    INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);

-- Every delivery attempt, for operators.
CREATE TABLE webhook_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id  TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    status           INTEGER,
    error            TEXT,
    millis           INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_by_subscription ON webhook_attempts (subscription_id, id);
