-- Per-node credentials (SPEC §7). A node joins once with `BERTH_NODE_JOIN_TOKEN` and gets a
-- credential of its own, stored here only as its SHA-256 (hex): it speaks for `node_id` only.
-- A rotation keeps the credential the node presented in `previous_hash`, still accepted, until
-- the new one is used once; a revoked row accepts nothing.
CREATE TABLE node_credential (
    node_id         VARCHAR(64) NOT NULL PRIMARY KEY,
    credential_hash TEXT   NOT NULL,
    previous_hash   TEXT,
    created_at      BIGINT NOT NULL,
    rotated_at      BIGINT,
    revoked_at      BIGINT
);

-- A heartbeat finds its credential by hash (current, or previous during a rotation).
CREATE UNIQUE INDEX node_credential_hash ON node_credential (credential_hash);
CREATE INDEX node_credential_previous ON node_credential (previous_hash);

-- A heartbeat that moves a known node's agent to another address is recorded for operators:
-- the address before and when it changed.
ALTER TABLE runtime_node
    ADD COLUMN previous_agent_base_url TEXT,
    ADD COLUMN agent_url_changed_at    BIGINT;
