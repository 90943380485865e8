-- Signed audit checkpoints (issue 13): the chain head (position and hash)
-- signed with the service's Ed25519 key. A chain rewritten from some point
-- with recomputed hashes, or cut short, no longer matches a checkpoint, and
-- a checkpoint cannot be forged without the key.
CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
    hash        TEXT NOT NULL,
    signed_at   BIGINT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL
);
