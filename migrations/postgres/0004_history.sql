-- HR truth under any arrival order (the fold of a person's history).
-- The background check's date, and what the history leaves behind besides
-- the attributes (newest event folded, employment, end-date zone, roster
-- presence) as JSON; empty for rows written before this migration.
ALTER TABLE identities ADD COLUMN background_check_date TEXT;
ALTER TABLE identities ADD COLUMN history TEXT NOT NULL DEFAULT '';
