-- Listing the events one roster sync made (ListHrEvents with a roster
-- sync): their ids share the prefix `roster:{sync_id}:`. SQLite compares
-- text bytewise, so the unique index on (source, event_id) already finds
-- them as a range; PostgreSQL gets an index of its own (see there).
SELECT 1;
