-- Remote gateways (issue 15): one-time join tokens (only their hashes), and the gateways that
-- joined with them. A gateway row is written by whichever control-plane replica holds its
-- agent link; `linked_by` is that replica (NULL once the link ended cleanly).
CREATE TABLE gateway_join_tokens (
    hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT,
    revoked_at BIGINT
);
CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    join_token_id TEXT NOT NULL,
    cert_not_after BIGINT NOT NULL,
    version TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    sessions BIGINT NOT NULL DEFAULT 0,
    last_heartbeat_at BIGINT,
    linked_by TEXT,
    revoked_at BIGINT
);
-- Commands for a gateway (drain, terminate), queued by any replica and delivered down the link
-- by whichever replica holds it, at its next heartbeat; `delivered_at` claims one exactly once.
CREATE TABLE gateway_commands (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    session_id TEXT,
    timeout_seconds BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    delivered_by TEXT
);
CREATE INDEX gateway_commands_pending ON gateway_commands (gateway_id) WHERE delivered_at IS NULL;
