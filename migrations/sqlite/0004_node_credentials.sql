-- Per-node credentials (SPEC §7), as migrations/postgres/0005: one row per joined node with the
-- SHA-256 (hex) of its credential, the previous one during a rotation, and when it was
-- created, rotated and revoked; and what a heartbeat that moved a node's agent changed.
-- (SQLite adds one column per statement.)
CREATE TABLE node_credential (
    node_id         TEXT    NOT NULL PRIMARY KEY,
    credential_hash TEXT    NOT NULL,
    previous_hash   TEXT,
    created_at      BIGINT  NOT NULL,
    rotated_at      BIGINT,
    revoked_at      BIGINT
);

CREATE UNIQUE INDEX node_credential_hash ON node_credential (credential_hash);
CREATE INDEX node_credential_previous ON node_credential (previous_hash);

ALTER TABLE runtime_node ADD COLUMN previous_agent_base_url TEXT;
ALTER TABLE runtime_node ADD COLUMN agent_url_changed_at BIGINT;
