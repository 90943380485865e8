-- What a directory sync reads from the directory, staged while the sync
-- runs so that it never holds the directory in memory: the accounts, the
-- memberships of the managed groups, and the drift found, each under the
-- sync's run id. Deleted when the sync ends; a sync interrupted by a crash
-- leaves its rows, deleted by the next sync a day later.
CREATE TABLE directory_stage_runs (
    run_id     TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL
);

CREATE TABLE directory_stage_accounts (
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    dn          TEXT NOT NULL,
    dn_norm     TEXT NOT NULL,
    employee_id TEXT,
    disabled    INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX directory_stage_accounts_by_employee ON directory_stage_accounts (run_id, employee_id);
CREATE INDEX directory_stage_accounts_by_dn ON directory_stage_accounts (run_id, dn_norm);

CREATE TABLE directory_stage_members (
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    group_dn    TEXT NOT NULL,
    member      TEXT NOT NULL,
    member_norm TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX directory_stage_members_by_member ON directory_stage_members (run_id, member_norm);

-- Drift found, before it is recorded in kind order (`kind_rank`) with its
-- outcome decided when it was found.
CREATE TABLE directory_stage_drift (
    run_id         TEXT NOT NULL,
    kind_rank      INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    employee_id    TEXT,
    account_dn     TEXT,
    group_dn       TEXT,
    entitlement_id TEXT,
    action         TEXT NOT NULL,
    PRIMARY KEY (run_id, kind_rank, seq)
);

-- A run is complete once all its drift is recorded; until then it is
-- never the latest sync.
ALTER TABLE directory_syncs ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
