-- Approval decisions (durable: a pending request survives the replica that created it, a
-- decision survives every replica), the event outbox that the leased fan-out job publishes to
-- subscribers, and the fenced cursors of jobs that walk an ordered table.
CREATE TABLE approvals (
    session_id TEXT PRIMARY KEY,
    decision   TEXT NOT NULL CHECK (decision IN ('approved', 'denied')),
    decided_by TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    decided_at BIGINT NOT NULL
);

CREATE TABLE events (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE job_cursors (
    job      TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
