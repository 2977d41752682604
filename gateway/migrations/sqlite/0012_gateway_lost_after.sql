-- How long after its last recorded heartbeat a remote gateway's sessions are over at the latest
-- (its offline grace plus the time it takes to notice a lost link), as its heartbeats report it.
-- The cleanup job ends the sessions of a gateway silent for longer (plus --replica-lost-after)
-- as `replica_lost`. 0: not reported yet; the control plane assumes the default grace.
ALTER TABLE gateways ADD COLUMN lost_after_ms BIGINT NOT NULL DEFAULT 0;
