-- Durable state of Wardengate. Times are unix milliseconds (BIGINT) so the same queries run on
-- Postgres and on the embedded SQLite store of `wardengate dev`.
CREATE TABLE targets (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    host             TEXT NOT NULL,
    port             BIGINT NOT NULL CHECK (port BETWEEN 1 AND 65535),
    require_approval BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL
);

CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('user', 'approver', 'admin')),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    target_name TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        BIGINT NOT NULL,
    status      TEXT NOT NULL,
    replica     TEXT,
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    ended_at    BIGINT,
    bytes_up    BIGINT NOT NULL DEFAULT 0,
    bytes_down  BIGINT NOT NULL DEFAULT 0,
    end_reason  TEXT
);
CREATE INDEX sessions_status ON sessions (status);
CREATE INDEX sessions_token ON sessions (token_id);

CREATE TABLE audit_events (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
