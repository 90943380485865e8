-- Access review campaigns and their items.

CREATE TABLE campaigns (
    id             TEXT PRIMARY KEY,
    definition_id  TEXT NOT NULL,
    state          TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    due_at         INTEGER NOT NULL,
    closed_at      INTEGER,
    mover          INTEGER NOT NULL DEFAULT 0,
    -- The whole campaign (definition at start, counters) as JSON.
    body           TEXT NOT NULL
);
CREATE INDEX campaigns_by_definition ON campaigns (definition_id, started_at);
CREATE INDEX campaigns_open ON campaigns (due_at) WHERE state = 'open';

CREATE TABLE review_items (
    id              TEXT PRIMARY KEY,
    campaign_id     TEXT NOT NULL REFERENCES campaigns (id),
    grant_id        TEXT NOT NULL,
    employee_id     TEXT NOT NULL,
    entitlement_id  TEXT NOT NULL,
    classification  TEXT NOT NULL,
    reviewer        TEXT NOT NULL,
    state           TEXT NOT NULL,
    decided_at      INTEGER,
    version         INTEGER NOT NULL,
    -- The whole item (context, recommendation, decision) as JSON.
    body            TEXT NOT NULL
);
-- A reviewer's queue, page by page.
CREATE INDEX review_items_by_reviewer ON review_items (reviewer, campaign_id, state, id);
CREATE INDEX review_items_by_campaign ON review_items (campaign_id, state, id);
-- Items of grants that end during the campaign; the last decision on a grant.
CREATE INDEX review_items_by_grant ON review_items (grant_id, decided_at);
-- Whether anything was ever decided (generation skips the history lookup).
CREATE INDEX review_items_decided ON review_items (decided_at) WHERE decided_at IS NOT NULL;

-- When the scheduler first saw each campaign definition: the first
-- automatic campaign starts one period after it.
CREATE TABLE campaign_schedule (
    definition_id  TEXT PRIMARY KEY,
    first_seen_at  INTEGER NOT NULL
);
