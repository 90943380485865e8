-- What a bulk job works through, staged a row per item (issue 9): an
-- unheld roster sync stages its events and the people it lists unchanged
-- before it applies them in steps, so a crash half-way is resumed from
-- the job's recorded place instead of leaving the roster half-applied.
-- Items with a negative number hold the job's own context. The items go
-- with the job's last step.
CREATE TABLE bulk_job_items (
    job_id TEXT NOT NULL,
    n      BIGINT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
