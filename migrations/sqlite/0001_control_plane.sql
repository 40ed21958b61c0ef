-- The control plane's tables (SPEC §2) for SQLite, the embedded default: the same tables, columns
-- and meaning as migrations/postgres. Times are milliseconds since the Unix epoch. One writer at
-- a time (the store's single connection) makes claims exclusive without row locks.

-- The job queue. `seq` is the FIFO order and the list cursor; `job_id` the public id.
CREATE TABLE deploy_job (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           VARCHAR(36)  NOT NULL UNIQUE,
    app_id           VARCHAR(63)  NOT NULL,
    kind             VARCHAR(16)  NOT NULL,
    state            VARCHAR(16)  NOT NULL,
    payload          TEXT         NOT NULL,
    secret_env       TEXT         NOT NULL,
    attempt          INTEGER      NOT NULL,
    max_attempts     INTEGER      NOT NULL,
    run_after        BIGINT       NOT NULL,
    node_id          VARCHAR(64),
    runner_id        VARCHAR(64),
    lease_token      VARCHAR(64),
    lease_expires_at BIGINT,
    waiting_reason   TEXT,
    error            TEXT,
    result           TEXT,
    version          BIGINT       NOT NULL,
    idempotency_key  VARCHAR(255) UNIQUE,
    request_hash     VARCHAR(64),
    created_at       BIGINT       NOT NULL,
    updated_at       BIGINT       NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
-- The claim scans pending jobs in order.
CREATE INDEX deploy_job_pending ON deploy_job (seq) WHERE state = 'PENDING';
-- Per-app ordering checks and the app filter.
CREATE INDEX deploy_job_app ON deploy_job (app_id, state, seq);
-- The reaper looks for expired leases.
CREATE INDEX deploy_job_lease ON deploy_job (lease_expires_at) WHERE state = 'RUNNING';
-- At most one running job per app, whatever races the claims run into.
CREATE UNIQUE INDEX deploy_job_one_running ON deploy_job (app_id) WHERE state = 'RUNNING';

-- Labels a caller put on a job, for `label=k:v` filters.
CREATE TABLE job_label (
    job_seq BIGINT      NOT NULL REFERENCES deploy_job (seq) ON DELETE CASCADE,
    key     VARCHAR(63) NOT NULL,
    value   VARCHAR(63) NOT NULL,
    PRIMARY KEY (job_seq, key)
);
CREATE INDEX job_label_key_value ON job_label (key, value, job_seq);

-- Lines a runner sent for a job.
CREATE TABLE job_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id VARCHAR(36) NOT NULL,
    at     BIGINT      NOT NULL,
    line   TEXT        NOT NULL
);
CREATE INDEX job_log_job ON job_log (job_id, id);

-- The node registry, with the reservations of the apps placed on each node kept as counters
-- so a claim reads one small table.
CREATE TABLE runtime_node (
    node_id             VARCHAR(64)  PRIMARY KEY,
    name                VARCHAR(255) NOT NULL,
    agent_base_url      TEXT         NOT NULL,
    gateway_base_url    TEXT         NOT NULL,
    labels              TEXT         NOT NULL,
    cpus                REAL NOT NULL,
    memory_mb           BIGINT       NOT NULL,
    max_apps            BIGINT       NOT NULL,
    reported_apps       TEXT         NOT NULL,
    version             VARCHAR(64)  NOT NULL,
    scheduling          VARCHAR(16)  NOT NULL,
    state               VARCHAR(16)  NOT NULL,
    last_heartbeat_at   BIGINT       NOT NULL,
    app_count           BIGINT       NOT NULL DEFAULT 0,
    reserved_memory_mb  BIGINT       NOT NULL DEFAULT 0,
    reserved_cpu_millis BIGINT       NOT NULL DEFAULT 0
);

-- appId → nodeId, sticky, with what the app reserves there.
CREATE TABLE runtime_placement (
    app_id     VARCHAR(63) PRIMARY KEY,
    node_id    VARCHAR(64) NOT NULL,
    memory_mb  BIGINT      NOT NULL,
    cpu_millis BIGINT      NOT NULL,
    updated_at BIGINT      NOT NULL
);
CREATE INDEX runtime_placement_node ON runtime_placement (node_id);

-- The last known run of each app.
CREATE TABLE app_run (
    app_id      VARCHAR(63) PRIMARY KEY,
    last_job_id VARCHAR(36) NOT NULL,
    state       VARCHAR(16) NOT NULL,
    image       TEXT,
    node_id     VARCHAR(64),
    url         TEXT,
    error       TEXT,
    updated_at  BIGINT      NOT NULL
);

-- Events written with the change they describe; a relay publishes them (SPEC §4).
CREATE TABLE outbox_event (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     VARCHAR(36) NOT NULL UNIQUE,
    routing_key  VARCHAR(64) NOT NULL,
    body         TEXT        NOT NULL,
    created_at   BIGINT      NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_event_unpublished ON outbox_event (seq) WHERE published_at IS NULL;
