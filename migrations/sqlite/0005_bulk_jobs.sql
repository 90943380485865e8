-- Bulk work done in bounded steps (a policy's recompute of everyone): its
-- progress, so a crash resumes where it stopped and a re-run is idempotent.
CREATE TABLE bulk_jobs (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    state          TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    cursor         TEXT NOT NULL,
    detail         TEXT NOT NULL,
    claimed_until  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX bulk_jobs_by_state ON bulk_jobs (state, created_at);
