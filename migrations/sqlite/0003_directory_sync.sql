-- Directory sync runs and the drift each found.
CREATE TABLE directory_syncs (
    id          TEXT PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    dry_run     INTEGER NOT NULL,
    account_count INTEGER NOT NULL,
    group_count   INTEGER NOT NULL,
    summary     TEXT NOT NULL
);

CREATE TABLE directory_drift (
    sync_id        TEXT NOT NULL REFERENCES directory_syncs (id),
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    employee_id    TEXT,
    account_dn     TEXT,
    group_dn       TEXT,
    entitlement_id TEXT,
    action         TEXT NOT NULL,
    PRIMARY KEY (sync_id, seq)
);
CREATE INDEX directory_drift_by_kind ON directory_drift (sync_id, kind, seq);
