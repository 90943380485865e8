-- HR truth under any arrival order (the fold of a person's history).
-- The background check's date, and what the history leaves behind besides
-- the attributes (newest event folded, employment, end-date zone, roster
-- presence) as JSON; empty for rows written before this migration.
ALTER TABLE identities ADD COLUMN background_check_date TEXT;
ALTER TABLE identities ADD COLUMN history TEXT NOT NULL DEFAULT '';

-- Roster snapshots applied, with the time they describe: the newest one's
-- absences are folded into the histories of people it did not list.
CREATE TABLE roster_snapshots (
    source     TEXT NOT NULL,
    sync_id    TEXT NOT NULL,
    as_of      BIGINT NOT NULL,
    time_zone  TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (source, sync_id)
);
CREATE INDEX roster_snapshots_by_as_of ON roster_snapshots (as_of);
