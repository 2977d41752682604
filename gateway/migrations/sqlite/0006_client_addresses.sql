-- Who really used a session, and from where: the client address that asked for it (behind a
-- load balancer, from its PROXY header), and the token and address that connected it (an admin
-- may connect another user's session; the row must not credit the owner).
ALTER TABLE sessions ADD COLUMN requested_from TEXT;
ALTER TABLE sessions ADD COLUMN connected_by TEXT;
ALTER TABLE sessions ADD COLUMN connected_from TEXT;
