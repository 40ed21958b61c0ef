-- Sleeping apps (SPEC §8), as migrations/postgres/0004: what a node may hold asleep beyond
-- `max_apps`, how many of its apps its last heartbeat reported asleep, and the index a
-- heartbeat reads its node's app runs by. (SQLite adds one column per statement.)
ALTER TABLE runtime_node ADD COLUMN max_sleeping_apps BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runtime_node ADD COLUMN sleeping_apps BIGINT NOT NULL DEFAULT 0;

CREATE INDEX app_run_node ON app_run (node_id, state);
