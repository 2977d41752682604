-- Terminating SSH (issue 16): the destinations a target's users may open `direct-tcpip`
-- channels to (`wgctl targets add … --ssh-forward-to localhost:5432,…`), opened by the
-- target's own sshd. NULL: port forwarding refused.
ALTER TABLE ssh_targets ADD COLUMN forward_to TEXT;
