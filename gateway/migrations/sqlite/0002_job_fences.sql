-- Fencing for leased background jobs: a lease can be lost in a Redis failover, so two replicas
-- may briefly both believe they hold it. Each holder takes a new epoch when it acquires the
-- lease, and every side effect of the job is conditional on its epoch still being current.
CREATE TABLE job_fences (
    job   TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    at    BIGINT NOT NULL
);
