-- Approval reminders and escalations (issue 13): when half of a pending
-- request's time to expiry has passed, idgov records a reminder to whoever
-- must decide next; at three quarters, an escalation to their manager.
-- Each once per request: these columns say when it was done.
ALTER TABLE access_requests ADD COLUMN reminded_at BIGINT;
ALTER TABLE access_requests ADD COLUMN escalated_at BIGINT;
