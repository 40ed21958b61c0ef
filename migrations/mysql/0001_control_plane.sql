-- The control plane's tables (SPEC §2) for MySQL 8 / MariaDB 10.6+: the same tables, columns
-- and meaning as migrations/postgres. Times are milliseconds since the Unix epoch.
-- Text columns are utf8mb4 with the server's usual case-insensitive collation: a `_bin`
-- collation would make the driver see them as binary strings.

-- The job queue. `seq` is the FIFO order and the list cursor; `job_id` the public id.
CREATE TABLE deploy_job (
    seq              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    job_id           VARCHAR(36)  NOT NULL UNIQUE,
    app_id           VARCHAR(63)  NOT NULL,
    kind             VARCHAR(16)  NOT NULL,
    state            VARCHAR(16)  NOT NULL,
    payload          MEDIUMTEXT   NOT NULL,
    secret_env       MEDIUMTEXT   NOT NULL,
    attempt          INT          NOT NULL,
    max_attempts     INT          NOT NULL,
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
    finished_at      BIGINT,
    -- The app while the job runs, else NULL: MySQL has no partial index, and a unique index
    -- ignores NULLs, so this keeps at most one running job per app whatever races the claims run into.
    running_app      VARCHAR(63) AS (IF(state = 'RUNNING', app_id, NULL)) STORED,
    UNIQUE KEY deploy_job_one_running (running_app),
    -- The claim scans pending jobs in order; the reaper looks for expired leases.
    KEY deploy_job_state (state, seq),
    KEY deploy_job_lease (state, lease_expires_at),
    -- Per-app ordering checks and the app filter.
    KEY deploy_job_app (app_id, state, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Labels a caller put on a job, for `label=k:v` filters.
CREATE TABLE job_label (
    job_seq BIGINT      NOT NULL,
    `key`   VARCHAR(63) NOT NULL,
    value   VARCHAR(63) NOT NULL,
    PRIMARY KEY (job_seq, `key`),
    KEY job_label_key_value (`key`, value, job_seq),
    CONSTRAINT job_label_job FOREIGN KEY (job_seq) REFERENCES deploy_job (seq) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Lines a runner sent for a job.
CREATE TABLE job_log (
    id     BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    job_id VARCHAR(36) NOT NULL,
    at     BIGINT      NOT NULL,
    line   MEDIUMTEXT  NOT NULL,
    KEY job_log_job (job_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The node registry, with the reservations of the apps placed on each node kept as counters
-- so a claim reads one small table.
CREATE TABLE runtime_node (
    node_id             VARCHAR(64)  NOT NULL PRIMARY KEY,
    name                VARCHAR(255) NOT NULL,
    agent_base_url      TEXT         NOT NULL,
    gateway_base_url    TEXT         NOT NULL,
    labels              TEXT         NOT NULL,
    cpus                DOUBLE       NOT NULL,
    memory_mb           BIGINT       NOT NULL,
    max_apps            BIGINT       NOT NULL,
    reported_apps       MEDIUMTEXT   NOT NULL,
    version             VARCHAR(64)  NOT NULL,
    scheduling          VARCHAR(16)  NOT NULL,
    state               VARCHAR(16)  NOT NULL,
    last_heartbeat_at   BIGINT       NOT NULL,
    app_count           BIGINT       NOT NULL DEFAULT 0,
    reserved_memory_mb  BIGINT       NOT NULL DEFAULT 0,
    reserved_cpu_millis BIGINT       NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- appId → nodeId, sticky, with what the app reserves there.
CREATE TABLE runtime_placement (
    app_id     VARCHAR(63) NOT NULL PRIMARY KEY,
    node_id    VARCHAR(64) NOT NULL,
    memory_mb  BIGINT      NOT NULL,
    cpu_millis BIGINT      NOT NULL,
    updated_at BIGINT      NOT NULL,
    KEY runtime_placement_node (node_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The last known run of each app.
CREATE TABLE app_run (
    app_id      VARCHAR(63) NOT NULL PRIMARY KEY,
    last_job_id VARCHAR(36) NOT NULL,
    state       VARCHAR(16) NOT NULL,
    image       TEXT,
    node_id     VARCHAR(64),
    url         TEXT,
    error       TEXT,
    updated_at  BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Events written with the change they describe; a relay publishes them (SPEC §4).
CREATE TABLE outbox_event (
    seq          BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id     VARCHAR(36) NOT NULL UNIQUE,
    routing_key  VARCHAR(64) NOT NULL,
    body         MEDIUMTEXT  NOT NULL,
    created_at   BIGINT      NOT NULL,
    published_at BIGINT,
    KEY outbox_event_unpublished (published_at, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
