-- Per-node credentials (SPEC §7), as migrations/postgres/0005: one row per joined node with the
-- SHA-256 (hex) of its credential, the previous one during a rotation, and when it was
-- created, rotated and revoked; and what a heartbeat that moved a node's agent changed.
CREATE TABLE node_credential (
    node_id         VARCHAR(64) NOT NULL PRIMARY KEY,
    credential_hash CHAR(64)    NOT NULL,
    previous_hash   CHAR(64)    NULL,
    created_at      BIGINT      NOT NULL,
    rotated_at      BIGINT      NULL,
    revoked_at      BIGINT      NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE UNIQUE INDEX node_credential_hash ON node_credential (credential_hash);
CREATE INDEX node_credential_previous ON node_credential (previous_hash);

ALTER TABLE runtime_node
    ADD COLUMN previous_agent_base_url TEXT   NULL,
    ADD COLUMN agent_url_changed_at    BIGINT NULL;
