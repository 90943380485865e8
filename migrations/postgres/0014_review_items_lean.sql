-- Review items without a foreign key to their campaign (issue 11).
-- PostgreSQL checks a foreign key with one trigger and one query per
-- inserted row; generating a campaign of a million items spent about a
-- sixth of the database's time in that check. The reference is kept by
-- the one code path that writes items: a generation step inserts them in
-- the transaction that holds its campaign's row lock, and campaigns are
-- never deleted. Item bodies also stopped repeating their columns (the
-- code reads both forms), which needs no change here.
ALTER TABLE review_items DROP CONSTRAINT IF EXISTS review_items_campaign_id_fkey;
