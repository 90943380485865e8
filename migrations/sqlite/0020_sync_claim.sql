-- One roster sync at a time per snapshot (source and sync id): a sync's
-- job names its snapshot in `claim`, and no two jobs may hold one claim
-- while they are being staged or applied. Two sends of one sync id that
-- arrive together are decided here, by the database, not by two reads
-- that can both miss the other: the second to insert its job is told the
-- claim is taken, and waits for the first's answer (the same roster) or is
-- refused (another roster under the same id). A job leaves the index when
-- it ends (done, held, failed, interrupted); a released hold's job runs
-- again under another kind and does not take the claim back.
ALTER TABLE bulk_jobs ADD COLUMN claim TEXT;
CREATE UNIQUE INDEX bulk_jobs_one_claim ON bulk_jobs (claim)
    WHERE claim IS NOT NULL
      AND (state = 'staging' OR (state = 'running' AND kind = 'roster_sync'));
