-- Bulk work done in bounded steps (a policy's recompute of everyone): its
-- progress, so a crash resumes where it stopped and a re-run is idempotent.
CREATE TABLE bulk_jobs (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    state          TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    cursor         TEXT NOT NULL,
    detail         TEXT NOT NULL,
    claimed_until  BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX bulk_jobs_by_state ON bulk_jobs (state, created_at);
