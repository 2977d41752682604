-- Terminating SSH (issue 16): which targets the SSH front end terminates, as which login,
-- whether their recordings keep terminal input, and the host key pinned for each (on first use,
-- or configured with `wgctl targets add … --ssh-host-key`). Kept beside `targets` so the byte
-- relay's rows and queries do not change; a target deleted and re-added gets a new id.
CREATE TABLE ssh_targets (
    target_id TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    record_input BIGINT NOT NULL DEFAULT 0,
    host_key TEXT,
    host_key_pinned_at BIGINT
);
