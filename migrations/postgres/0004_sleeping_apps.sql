-- Sleeping apps (SPEC §8). A node announces how many sleeping apps it holds beyond `max_apps`
-- (`max_sleeping_apps`, 0 for agents that have none) and each heartbeat records how many of its
-- apps sleep (`sleeping_apps`): placement counts `app_count - LEAST(sleeping_apps,
-- max_sleeping_apps)` against `max_apps`.
ALTER TABLE runtime_node
    ADD COLUMN max_sleeping_apps BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN sleeping_apps     BIGINT NOT NULL DEFAULT 0;

-- A heartbeat reads the runs of the apps last known on its node, to record which sleep.
CREATE INDEX app_run_node ON app_run (node_id, state);
