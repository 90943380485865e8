-- A roster snapshot staged as it streams in, so that a sync never holds the
-- roster in memory: each entry under the sync's run id, at its place in the
-- roster (`seq`), with its employee id and the manager it names (for the
-- paged diff, the duplicate check and the management-cycle check in SQL).
-- Deleted when the sync ends; what a crash leaves is deleted by the next
-- roster sync a day later. (Unlogged: scratch rows, not worth the
-- write-ahead log.)
CREATE UNLOGGED TABLE roster_stage_runs (
    run_id     TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL
);

CREATE UNLOGGED TABLE roster_stage_entries (
    run_id        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    employee_id   TEXT NOT NULL,
    -- 1: the entry gives its manager column (`manager_id` NULL: cleared);
    -- 0: it leaves it out (the person keeps their manager).
    manager_given BIGINT NOT NULL,
    manager_id    TEXT,
    entry         TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX roster_stage_entries_by_employee ON roster_stage_entries (run_id, employee_id);
