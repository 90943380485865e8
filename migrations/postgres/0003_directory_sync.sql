-- Directory sync runs and the drift each found.
CREATE TABLE directory_syncs (
    id          TEXT PRIMARY KEY,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    dry_run     BIGINT NOT NULL,
    account_count BIGINT NOT NULL,
    group_count   BIGINT NOT NULL,
    summary     TEXT NOT NULL
);

CREATE TABLE directory_drift (
    sync_id        TEXT NOT NULL REFERENCES directory_syncs (id),
    seq            BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    employee_id    TEXT,
    account_dn     TEXT,
    group_dn       TEXT,
    entitlement_id TEXT,
    action         TEXT NOT NULL,
    PRIMARY KEY (sync_id, seq)
);
CREATE INDEX directory_drift_by_kind ON directory_drift (sync_id, kind, seq);
