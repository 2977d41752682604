-- The per-token cap counts a token's open sessions on every new session (issue 11: target and
-- count in one round trip). The plain token index visits every session the token ever had, so
-- an automation token with a long history made each new session slower; this partial index
-- holds only open sessions.
CREATE INDEX sessions_open_by_token ON sessions (token_id)
    WHERE status IN ('pending', 'authorized', 'active', 'terminating');
