-- Each claim of a job (issue 17: the job's timeline): which runner took it on which node, when,
-- and how the attempt ended. Written in the transaction of the claim and of the report or lease
-- expiry that ends it; deleted with its job by retention.
CREATE TABLE job_attempt (
    job_id     VARCHAR(36) NOT NULL,
    attempt    INTEGER     NOT NULL,
    runner_id  VARCHAR(64) NOT NULL,
    node_id    VARCHAR(64),
    claimed_at BIGINT      NOT NULL,
    ended_at   BIGINT,
    -- SUCCEEDED, FAILED, RETRY (back to PENDING), EXPIRED (the lease ran out); NULL while it runs.
    outcome    VARCHAR(16),
    error      TEXT,
    PRIMARY KEY (job_id, attempt)
);
