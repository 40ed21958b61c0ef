-- Each claim of a job (issue 17: the job's timeline): which runner took it on which node, when,
-- and how the attempt ended. Written in the transaction of the claim and of the report or lease
-- expiry that ends it; deleted with its job by retention.
CREATE TABLE job_attempt (
    job_id     TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    runner_id  TEXT    NOT NULL,
    node_id    TEXT,
    claimed_at INTEGER NOT NULL,
    ended_at   INTEGER,
    -- SUCCEEDED, FAILED, RETRY (back to PENDING), EXPIRED (the lease ran out); NULL while it runs.
    outcome    TEXT,
    error      TEXT,
    PRIMARY KEY (job_id, attempt)
);
