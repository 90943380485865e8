-- Web sign-in (issue 12). Sessions live in the database so every replica
-- knows them; only a SHA-256 of the session id is stored, so a copy of the
-- database signs nobody in.
CREATE TABLE web_sessions (
    id_hash       TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    employee_id   TEXT NOT NULL,
    roles         TEXT NOT NULL,
    method        TEXT NOT NULL,
    csrf_token    TEXT NOT NULL,
    -- The provider's ID token, for RP-initiated logout ('' when none).
    id_token      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    end_reason    TEXT
);
CREATE INDEX web_sessions_by_person ON web_sessions (employee_id) WHERE ended_at IS NULL;

-- A sign-in under way: bound to the browser by a cookie (its hash is the
-- key), with the OIDC state, nonce and PKCE verifier. Used once.
CREATE TABLE web_logins (
    id_hash       TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
