-- Regional sessions and events from remote gateways (issue 15, second slice).
-- A target with a region is relayed by a connected gateway of that region, never by the
-- control plane; NULL keeps today's behaviour.
ALTER TABLE targets ADD COLUMN region TEXT;
-- The last session-event sequence number of each gateway applied through the session core:
-- events at or below it are duplicates (a reconnect resending what was not yet acknowledged).
ALTER TABLE gateways ADD COLUMN events_seq BIGINT NOT NULL DEFAULT 0;
