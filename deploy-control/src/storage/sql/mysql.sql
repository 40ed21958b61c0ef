-- Every statement of the MySQL / MariaDB store, by name (build.rs makes each a constant of
-- `storage::sql::mysql`). Parameters are `?`, bound in order (`storage::rows::Bind`). Every
-- connection runs at `READ COMMITTED` (mysql.rs), like PostgreSQL: each statement sees what
-- others committed before it, and locking reads take no gap locks that would make claimers
-- wait on each other. MariaDB has no `UPDATE … RETURNING`: changes are read back.

-- name: BEGIN
-- A transaction.
START TRANSACTION

-- name: GET_JOB
-- One job.
SELECT * FROM deploy_job WHERE job_id = ?

-- name: SHARE_JOB
-- A job under a shared lock: logs may arrive alongside a heartbeat, but not after a report.
SELECT * FROM deploy_job WHERE job_id = ? LOCK IN SHARE MODE

-- name: LOCK_JOB
-- A job a change is about to decide on, locked until the transaction ends.
SELECT * FROM deploy_job WHERE job_id = ? FOR UPDATE

-- name: JOB_BY_KEY
-- The job an `Idempotency-Key` created.
SELECT * FROM deploy_job WHERE idempotency_key = ?

-- name: INSERT_JOB
-- A new job (its `seq` is the connection's last insert id); a concurrent create with the same
-- idempotency key makes it fail with a unique violation.
INSERT INTO deploy_job (job_id, app_id, kind, state, payload, secret_env, attempt, max_attempts,
    run_after, version, idempotency_key, request_hash, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: INSERT_LABEL
-- One label of a new job (`KEY` is reserved).
INSERT INTO job_label (job_seq, `key`, value) VALUES (?, ?, ?)

-- name: UPDATE_JOB
-- Every mutable column of a job.
UPDATE deploy_job SET state = ?, attempt = ?, run_after = ?, node_id = ?, runner_id = ?,
    lease_token = ?, lease_expires_at = ?, waiting_reason = ?, error = ?, result = ?,
    version = ?, updated_at = ?, started_at = ?, finished_at = ?
WHERE seq = ?

-- name: PICK_LOCK
-- The lock clause of the claim's pick (`storage::rows::pick_jobs`, built per call): jobs
-- another claim holds are skipped.
FOR UPDATE SKIP LOCKED

-- name: EXPIRED_JOBS
-- Up to 100 running jobs whose lease ran out, oldest first, locked; those another reaper
-- holds are skipped.
SELECT * FROM deploy_job WHERE state = 'RUNNING' AND lease_expires_at <= ?
ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED

-- name: JOB_COUNTS
-- Jobs per state (`COUNT` is unsigned in MySQL; the counts are read as signed integers).
SELECT state, CAST(COUNT(*) AS SIGNED) FROM deploy_job GROUP BY state

-- name: JOB_LOGS
-- A job's log lines, oldest first.
SELECT at, line FROM job_log WHERE job_id = ? ORDER BY id

-- name: INSERT_EVENT
-- An outbox event.
INSERT INTO outbox_event (event_id, routing_key, body, created_at) VALUES (?, ?, ?, ?)

-- name: APP_RUN
-- An app's last-known run.
SELECT * FROM app_run WHERE app_id = ?

-- name: LOCK_APP_RUN
-- An app's last-known run, about to be replaced.
SELECT * FROM app_run WHERE app_id = ? FOR UPDATE

-- name: UPSERT_APP_RUN
-- Records an app's last-known run.
INSERT INTO app_run (app_id, last_job_id, state, image, node_id, url, error, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON DUPLICATE KEY UPDATE last_job_id = VALUES(last_job_id), state = VALUES(state),
    image = VALUES(image), node_id = VALUES(node_id), url = VALUES(url), error = VALUES(error),
    updated_at = VALUES(updated_at)

-- name: NODE_PLACED_APPS
-- The apps placed on a node (served by the index on `node_id`): a heartbeat's reported apps
-- outside this list are judged by `queue::displaced`.
SELECT app_id FROM runtime_placement WHERE node_id = ?

-- name: NODE_APP_RUNS
-- The runs of the apps last known `RUNNING` or `SLEEPING` on a node, which its heartbeat may
-- change (served by the index on `(node_id, state)`).
SELECT * FROM app_run WHERE node_id = ? AND state IN ('RUNNING', 'SLEEPING')

-- name: SET_APP_RUN_STATE
-- An app run's state and error as its node reported them, only while no job changed the run
-- since it was read (same last job, same state): a compare-and-set.
UPDATE app_run SET state = ?, error = ?, updated_at = ?
WHERE app_id = ? AND last_job_id = ? AND state = ?

-- name: PLACEMENT
-- An app's placement, locked (a claim moving the app, a stop removing it).
SELECT app_id, node_id, memory_mb, cpu_millis FROM runtime_placement WHERE app_id = ? FOR UPDATE

-- name: LIST_PLACEMENTS
-- Every placement, by app.
SELECT app_id, node_id, memory_mb, cpu_millis FROM runtime_placement ORDER BY app_id

-- name: RECORD_PLACEMENT
-- Places an app on a node, replacing its old placement.
INSERT INTO runtime_placement (app_id, node_id, memory_mb, cpu_millis, updated_at)
VALUES (?, ?, ?, ?, ?)
ON DUPLICATE KEY UPDATE node_id = VALUES(node_id), memory_mb = VALUES(memory_mb),
    cpu_millis = VALUES(cpu_millis), updated_at = VALUES(updated_at)

-- name: DELETE_PLACEMENT
-- Removes an app's placement (its stop succeeded).
DELETE FROM runtime_placement WHERE app_id = ?

-- name: RESERVE
-- Reserves an app's room on a node, only while the node still has it (the guard against two
-- claims filling its last slot). Up to `max_sleeping_apps` of its sleeping apps free their slot
-- of `max_apps` (SPEC §8; the same count as `NodeRecord::counted_apps`).
UPDATE runtime_node SET app_count = app_count + 1, reserved_memory_mb = reserved_memory_mb + ?,
    reserved_cpu_millis = reserved_cpu_millis + ?
WHERE node_id = ? AND app_count - LEAST(sleeping_apps, max_sleeping_apps, app_count) < max_apps
    AND (? = 0 OR reserved_memory_mb + ? <= memory_mb)
    AND (? = 0 OR reserved_cpu_millis + ? <= ROUND(cpus * 1000))

-- name: RELEASE
-- Gives back what an app reserved on a node.
UPDATE runtime_node SET app_count = app_count - 1, reserved_memory_mb = reserved_memory_mb - ?,
    reserved_cpu_millis = reserved_cpu_millis - ?
WHERE node_id = ?

-- name: LIST_NODES
-- Every node, by id.
SELECT * FROM runtime_node ORDER BY node_id

-- name: NODE
-- One node.
SELECT * FROM runtime_node WHERE node_id = ?

-- name: LOCK_NODE_STATE
-- A node's recorded state and agent address before a heartbeat, locked so two heartbeats send
-- one `node.online` and a moved agent is recorded once.
SELECT state, agent_base_url FROM runtime_node WHERE node_id = ? FOR UPDATE

-- name: UPSERT_NODE
-- A heartbeat: inserts the node on its first, else refreshes what it reports (with how many of
-- its apps sleep) and marks it `ONLINE`.
INSERT INTO runtime_node (node_id, name, agent_base_url, gateway_base_url, labels, cpus,
    memory_mb, max_apps, reported_apps, version, scheduling, state, last_heartbeat_at,
    max_sleeping_apps, sleeping_apps)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ACTIVE', 'ONLINE', ?, ?, ?)
ON DUPLICATE KEY UPDATE name = VALUES(name), agent_base_url = VALUES(agent_base_url),
    gateway_base_url = VALUES(gateway_base_url), labels = VALUES(labels), cpus = VALUES(cpus),
    memory_mb = VALUES(memory_mb), max_apps = VALUES(max_apps),
    reported_apps = VALUES(reported_apps), version = VALUES(version), state = 'ONLINE',
    last_heartbeat_at = VALUES(last_heartbeat_at), max_sleeping_apps = VALUES(max_sleeping_apps),
    sleeping_apps = VALUES(sleeping_apps)

-- name: SET_SCHEDULING
-- Cordons, uncordons or drains a node.
UPDATE runtime_node SET scheduling = ? WHERE node_id = ?

-- name: STALE_NODES
-- Nodes recorded `ONLINE` whose last heartbeat is older than the cut-off, by id, locked;
-- those another watcher holds are skipped.
SELECT node_id FROM runtime_node WHERE state = 'ONLINE' AND last_heartbeat_at < ?
ORDER BY node_id FOR UPDATE SKIP LOCKED

-- name: SET_OFFLINE
-- Records a node `OFFLINE`.
UPDATE runtime_node SET state = 'OFFLINE' WHERE node_id = ?

-- name: CURRENT_CREDENTIALS
-- The credentials of every node that is neither revoked nor rotating (its previous credential
-- retired): those a control plane that just started may keep from the first heartbeat on.
SELECT * FROM node_credential WHERE revoked_at IS NULL AND previous_hash IS NULL

-- name: CREDENTIALS_CHANGED
-- The nodes whose credential was revoked or rotated at or after the cut-off (the same cut-off
-- bound twice): a control plane forgets the credentials it kept for them (`service::beats`).
-- A scan of the narrow credential table, a few milliseconds at 10,000 nodes.
SELECT node_id FROM node_credential WHERE revoked_at >= ? OR rotated_at >= ?

-- name: FLUSH_LAST_SEEN
-- A flush of coalesced heartbeats (`service::beats`): one JSON array of `{node_id, at, hash}`
-- moves each node's last heartbeat forward to `at` (never back), only while the node is recorded
-- `ONLINE` and its credential (current or previous) still hashes to `hash` and is not revoked:
-- a revoked, retired or `OFFLINE` node is left as it is, for its next heartbeat to settle.
UPDATE runtime_node n
JOIN JSON_TABLE(?, '$[*]' COLUMNS (node_id VARCHAR(64) PATH '$.node_id', at BIGINT PATH '$.at',
    hash CHAR(64) PATH '$.hash')) v ON n.node_id = v.node_id
JOIN node_credential c ON c.node_id = v.node_id
SET n.last_heartbeat_at = v.at
WHERE n.state = 'ONLINE' AND n.last_heartbeat_at < v.at AND c.revoked_at IS NULL
  AND (c.credential_hash = v.hash OR c.previous_hash = v.hash)

-- name: STILL_SEEN
-- The nodes of a flush's JSON array that it kept (`ONLINE`, credential good, as in
-- `FLUSH_LAST_SEEN`), with their scheduling: what their coalesced heartbeats answer.
SELECT n.node_id, n.scheduling
FROM JSON_TABLE(?, '$[*]' COLUMNS (node_id VARCHAR(64) PATH '$.node_id', at BIGINT PATH '$.at',
    hash CHAR(64) PATH '$.hash')) v
JOIN runtime_node n ON n.node_id = v.node_id JOIN node_credential c ON c.node_id = v.node_id
WHERE n.state = 'ONLINE' AND c.revoked_at IS NULL
  AND (c.credential_hash = v.hash OR c.previous_hash = v.hash)

-- name: PLACED_ON_SEEN
-- The placements on the nodes of a flush's JSON array (by the index on `node_id`): a coalesced
-- heartbeat that reports only these apps has none to remove.
SELECT p.node_id, p.app_id
FROM JSON_TABLE(?, '$[*]' COLUMNS (node_id VARCHAR(64) PATH '$.node_id')) v
JOIN runtime_placement p ON p.node_id = v.node_id

-- name: UNPUBLISHED
-- The oldest unpublished events, locked until the relay marks them or drops its batch; those
-- another relay holds are skipped. At `READ COMMITTED` the locking read takes no gap lock, so
-- jobs keep inserting events while a relay holds its batch.
SELECT seq, event_id, routing_key, body, created_at FROM outbox_event
WHERE published_at IS NULL ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED

-- name: PRUNE_OUTBOX
-- Deletes a chunk of events published before the cut-off, and with the flag also unpublished
-- ones created before it (the same cut-off again). MySQL cannot `LIMIT` a subquery of `IN`,
-- so the `DELETE` itself is ordered and limited.
DELETE FROM outbox_event WHERE (published_at IS NOT NULL AND published_at < ?)
    OR (? AND created_at < ?) ORDER BY seq LIMIT ?

-- name: AGENT_MOVED
-- A heartbeat moved a known node's agent to another address: the address before and when.
UPDATE runtime_node SET previous_agent_base_url = ?, agent_url_changed_at = ? WHERE node_id = ?

-- name: CUT_OFF_NODE
-- A revoked node: `OFFLINE` at once, its last trusted heartbeat moved back past the TTL so no
-- claim places an app on it (placement reads the heartbeat's age).
UPDATE runtime_node SET state = 'OFFLINE', last_heartbeat_at = LEAST(last_heartbeat_at, ?)
WHERE node_id = ?

-- name: CREDENTIAL_BY_HASH
-- The credential a heartbeat presents, by the hash of its current or its previous credential
-- (the same hash bound twice); each hash has its own index.
SELECT * FROM node_credential WHERE credential_hash = ? OR previous_hash = ?

-- name: LOCK_CREDENTIAL
-- A node's credential a rotation, a revocation or a first use is about to change, locked.
SELECT * FROM node_credential WHERE node_id = ? FOR UPDATE

-- name: INSERT_CREDENTIAL
-- A node's first credential at join; a unique violation when the node joined before (or a
-- concurrent join won), which the store reports as a conflict.
INSERT INTO node_credential (node_id, credential_hash, previous_hash, created_at, rotated_at,
    revoked_at)
VALUES (?, ?, ?, ?, ?, ?)

-- name: UPDATE_CREDENTIAL
-- A rotation, a first use after one, or a revocation.
UPDATE node_credential SET credential_hash = ?, previous_hash = ?, rotated_at = ?,
    revoked_at = ?
WHERE node_id = ?

-- name: PRUNABLE_JOBS
-- Up to the limit of jobs that finished before the cut-off, oldest first, but those retention
-- keeps whatever their age: each app's last known run (`app_run`) and its newest successful DEPLOY (the spec a
-- redeploy, drain or lost-node move repeats).
SELECT j.job_id FROM deploy_job j
WHERE j.finished_at < ? AND j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
  AND NOT EXISTS (SELECT 1 FROM app_run r WHERE r.app_id = j.app_id AND r.last_job_id = j.job_id)
  AND (j.kind <> 'DEPLOY' OR j.state <> 'SUCCEEDED' OR EXISTS (SELECT 1 FROM deploy_job n
      WHERE n.app_id = j.app_id AND n.state = 'SUCCEEDED' AND n.kind = 'DEPLOY' AND n.seq > j.seq))
ORDER BY j.finished_at LIMIT ?

-- name: END_ATTEMPT
-- How a job's open attempt ended (a report or a lease expiry): when, its outcome and error.
UPDATE job_attempt SET ended_at = ?, outcome = ?, error = ?
WHERE job_id = ? AND attempt = ? AND ended_at IS NULL

-- name: JOB_ATTEMPTS
-- A job's attempts, first first (the timeline).
SELECT attempt, runner_id, node_id, claimed_at, ended_at, outcome, error FROM job_attempt
WHERE job_id = ? ORDER BY attempt

-- name: ANALYZE_QUEUE
-- Refreshes the optimizer's statistics of the job table (see `Store::refresh_statistics`).
ANALYZE TABLE deploy_job
