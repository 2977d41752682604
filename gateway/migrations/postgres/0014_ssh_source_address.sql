-- Terminating SSH (issue 16): the `source-address` a target's per-session certificates are
-- bound to (`wgctl targets add … --ssh-source-address`): `dial`, or a list of CIDR blocks.
-- NULL: not bound.
ALTER TABLE ssh_targets ADD COLUMN source_address TEXT;
