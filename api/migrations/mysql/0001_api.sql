-- berth-api's own tables (SPEC §6). Times are milliseconds since the Unix epoch; specs are JSON text.
CREATE TABLE IF NOT EXISTS api_tenant (
    tenant_id VARCHAR(63) PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    max_apps BIGINT NOT NULL,
    max_concurrent_deploys BIGINT NOT NULL,
    deploys_per_day BIGINT NOT NULL,
    deploys_per_month BIGINT NOT NULL,
    rate_limit_per_minute BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- key_hash is HMAC-SHA256 of the key's secret part under the server key; the key itself is never stored.
CREATE TABLE IF NOT EXISTS api_key (
    key_id VARCHAR(32) PRIMARY KEY,
    tenant_id VARCHAR(63) NOT NULL,
    name VARCHAR(200) NOT NULL,
    key_hash VARCHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX IF NOT EXISTS api_key_tenant ON api_key (tenant_id, created_at);
-- app_id is the primary key: the control plane's app ids are one namespace for every tenant.
CREATE TABLE IF NOT EXISTS api_app (
    app_id VARCHAR(63) PRIMARY KEY,
    tenant_id VARCHAR(63) NOT NULL,
    spec TEXT NOT NULL,
    secret_env TEXT NOT NULL,
    deleting BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_app_tenant ON api_app (tenant_id, app_id);
CREATE TABLE IF NOT EXISTS api_template (
    tenant_id VARCHAR(63) NOT NULL,
    template_id VARCHAR(63) NOT NULL,
    spec TEXT NOT NULL,
    secret_env TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, template_id)
);
-- deployment_id is a UUID v7, so its text sorts by creation time (newest first = descending id).
CREATE TABLE IF NOT EXISTS api_deployment (
    deployment_id VARCHAR(36) PRIMARY KEY,
    tenant_id VARCHAR(63) NOT NULL,
    app_id VARCHAR(63) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    state VARCHAR(16) NOT NULL,
    job_id VARCHAR(36),
    spec TEXT NOT NULL,
    image TEXT,
    url TEXT,
    node_id VARCHAR(64),
    error TEXT,
    version BIGINT NOT NULL,
    idempotency_key VARCHAR(255),
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (tenant_id, app_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS api_deployment_app ON api_deployment (tenant_id, app_id, deployment_id);
CREATE INDEX IF NOT EXISTS api_deployment_tenant ON api_deployment (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS api_deployment_state ON api_deployment (state);
-- One row per (tenant, slug): the row decides which of concurrent identical calls creates the instance.
CREATE TABLE IF NOT EXISTS api_instance (
    tenant_id VARCHAR(63) NOT NULL,
    slug VARCHAR(63) NOT NULL,
    template_id VARCHAR(63) NOT NULL,
    app_id VARCHAR(63) NOT NULL,
    deployment_id VARCHAR(36) NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, slug)
);
CREATE TABLE IF NOT EXISTS api_usage (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    tenant_id VARCHAR(63) NOT NULL,
    at BIGINT NOT NULL,
    key_id VARCHAR(32) NOT NULL,
    action VARCHAR(64) NOT NULL,
    app_id VARCHAR(63),
    deployment_id VARCHAR(36),
    status BIGINT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS api_usage_tenant ON api_usage (tenant_id, id);
