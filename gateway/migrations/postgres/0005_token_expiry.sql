-- Tokens expire and are listed: when a token stops working (NULL: never), and roughly when it
-- was last used (updated at most once a minute per replica, so it costs no write per request).
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
