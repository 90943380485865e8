-- Listing the events one roster sync made (ListHrEvents with a roster
-- sync): their ids share the prefix `roster:{sync_id}:`, found as a range
-- of ids compared bytewise, whatever the database's collation.
CREATE INDEX hr_events_by_roster_sync ON hr_events (source, event_id COLLATE "C");
