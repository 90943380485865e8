-- Review items without a foreign key to their campaign (issue 11), on
-- PostgreSQL only. There the check costs a trigger and a query per
-- inserted row; SQLite checks it with one probe of the campaigns' primary
-- key, which is cheap, and dropping it here would mean rebuilding the
-- table. The reference is kept by the one code path that writes items (a
-- generation step, under its campaign's row lock; campaigns are never
-- deleted). Nothing changes in this schema.
SELECT 1;
