-- When a review item's context was first shown to its reviewer in the web
-- app (issue 12): a decision on an item never shown is "decided without
-- opening", one of the rubber-stamp indicators of the campaign report.
ALTER TABLE review_items ADD COLUMN shown_at INTEGER;
