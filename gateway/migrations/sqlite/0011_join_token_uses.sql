-- Join tokens usable by several gateways (issue 15, operator pools): a GatewayPool's pods each
-- join with the token in the pool's Secret, so a token admits up to `max_uses` joins. Existing
-- tokens stay one-time; `uses` counts the joins (a used-up token is refused as "used").
ALTER TABLE gateway_join_tokens ADD COLUMN max_uses BIGINT NOT NULL DEFAULT 1;
ALTER TABLE gateway_join_tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
