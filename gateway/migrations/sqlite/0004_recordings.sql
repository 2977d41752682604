-- Recordings: one row per recorded session; the manifest job signs each once, fenced.
CREATE TABLE recordings (
    session_id      TEXT PRIMARY KEY,
    replica         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('recording', 'signed')),
    started_at      BIGINT NOT NULL,
    manifest_sha256 TEXT,
    complete        BIGINT NOT NULL DEFAULT 0,
    signed_at       BIGINT
);
CREATE INDEX recordings_state ON recordings (state);
