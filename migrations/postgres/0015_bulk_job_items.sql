-- What a bulk job works through, staged in rows of many items (issue 9):
-- an unheld roster sync stages its events and the people it lists
-- unchanged, 2,000 to a row (a JSON array), before it applies them in
-- steps, so a crash half-way is resumed from the job's recorded place
-- instead of leaving the roster half-applied. Rows with a negative number
-- hold the job's own context. The rows go once the job is done.
CREATE TABLE bulk_job_items (
    job_id TEXT NOT NULL,
    n      BIGINT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
