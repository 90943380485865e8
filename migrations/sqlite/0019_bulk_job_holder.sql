-- Which process holds a bulk job's lease (issue 9). A process renews only
-- a lease it holds, so when a replica takes over a job whose holder
-- stalled past its lease, the stalled process finds the job gone from it
-- at its next step and stops, instead of both running it. '' for jobs
-- leased before this column: their lease runs out and the next claim
-- names its holder.
ALTER TABLE bulk_jobs ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
