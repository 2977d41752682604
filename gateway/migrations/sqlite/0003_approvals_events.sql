-- Approval decisions, the event outbox and job cursors (see the Postgres migration).
CREATE TABLE approvals (
    session_id TEXT PRIMARY KEY,
    decision   TEXT NOT NULL CHECK (decision IN ('approved', 'denied')),
    decided_by TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    decided_at BIGINT NOT NULL
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE job_cursors (
    job      TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
