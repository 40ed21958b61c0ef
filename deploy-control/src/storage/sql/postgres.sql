-- Every statement of the PostgreSQL store, by name (build.rs makes each a constant of
-- `storage::sql::postgres`). Parameters are bound in the order the shared binds of
-- `storage::rows::Bind` use. Every statement runs as a generic prepared plan
-- (`plan_cache_mode = force_generic_plan`, see postgres.rs) and without JIT compilation
-- (`jit = off`, same place): the planner comments say why the hand-tuned ones are written as
-- they are.

-- name: BEGIN
-- A transaction (`READ COMMITTED`, PostgreSQL's default).
BEGIN

-- name: GET_JOB
-- One job.
SELECT * FROM deploy_job WHERE job_id = $1

-- name: SHARE_JOB
-- A job under a shared lock: logs may arrive alongside a heartbeat, but not after a report.
SELECT * FROM deploy_job WHERE job_id = $1 FOR SHARE

-- name: LOCK_JOB
-- A job a change is about to decide on, locked until the transaction ends.
SELECT * FROM deploy_job WHERE job_id = $1 FOR UPDATE

-- name: JOB_BY_KEY
-- The job an `Idempotency-Key` created.
SELECT * FROM deploy_job WHERE idempotency_key = $1

-- name: INSERT_JOB
-- A new job; returns its `seq`, or nothing when a concurrent create with the same
-- idempotency key won.
INSERT INTO deploy_job (job_id, app_id, kind, state, payload, secret_env, attempt, max_attempts,
    run_after, version, idempotency_key, request_hash, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq

-- name: INSERT_LABEL
-- One label of a new job.
INSERT INTO job_label (job_seq, key, value) VALUES ($1, $2, $3)

-- name: UPDATE_JOB
-- Every mutable column of a job.
UPDATE deploy_job SET state = $1, attempt = $2, run_after = $3, node_id = $4, runner_id = $5,
    lease_token = $6, lease_expires_at = $7, waiting_reason = $8, error = $9, result = $10,
    version = $11, updated_at = $12, started_at = $13, finished_at = $14
WHERE seq = $15

-- name: SAVE
-- A job's update ($5…) with its event ($1…$4) in one statement: a change that leaves the
-- app's last-known run as it is costs one round trip.
WITH event AS (
    INSERT INTO outbox_event (event_id, routing_key, body, created_at) VALUES ($1, $2, $3, $4)
)
UPDATE deploy_job SET state = $5, attempt = $6, run_after = $7, node_id = $8, runner_id = $9,
    lease_token = $10, lease_expires_at = $11, waiting_reason = $12, error = $13, result = $14,
    version = $15, updated_at = $16, started_at = $17, finished_at = $18
WHERE seq = $19

-- name: SAVE_WITH_RUN
-- A job's update ($13…) with its event ($1…$4) and the app's last-known run ($5…$12), in one
-- statement.
WITH event AS (
    INSERT INTO outbox_event (event_id, routing_key, body, created_at) VALUES ($1, $2, $3, $4)
), run AS (
    INSERT INTO app_run (app_id, last_job_id, state, image, node_id, url, error, updated_at)
    VALUES ($5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (app_id) DO UPDATE SET last_job_id = EXCLUDED.last_job_id,
        state = EXCLUDED.state, image = EXCLUDED.image, node_id = EXCLUDED.node_id,
        url = EXCLUDED.url, error = EXCLUDED.error, updated_at = EXCLUDED.updated_at
)
UPDATE deploy_job SET state = $13, attempt = $14, run_after = $15, node_id = $16,
    runner_id = $17, lease_token = $18, lease_expires_at = $19, waiting_reason = $20,
    error = $21, result = $22, version = $23, updated_at = $24, started_at = $25,
    finished_at = $26
WHERE seq = $27

-- name: SAVE_CLAIMS
-- The claims of one batch in one statement: their events ($1…$4), their apps' runs ($5…$12)
-- and their rows ($13…$27, the columns of UPDATE_JOB), one array per column.
WITH event AS (
    INSERT INTO outbox_event (event_id, routing_key, body, created_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
), run AS (
    INSERT INTO app_run (app_id, last_job_id, state, image, node_id, url, error, updated_at)
    SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
        $10::text[], $11::text[], $12::bigint[])
    ON CONFLICT (app_id) DO UPDATE SET last_job_id = EXCLUDED.last_job_id,
        state = EXCLUDED.state, image = EXCLUDED.image, node_id = EXCLUDED.node_id,
        url = EXCLUDED.url, error = EXCLUDED.error, updated_at = EXCLUDED.updated_at
)
UPDATE deploy_job d SET state = u.state, attempt = u.attempt, run_after = u.run_after,
    node_id = u.node_id, runner_id = u.runner_id, lease_token = u.lease_token,
    lease_expires_at = u.lease_expires_at, waiting_reason = u.waiting_reason, error = u.error,
    result = u.result, version = u.version, updated_at = u.updated_at,
    started_at = u.started_at, finished_at = u.finished_at
FROM unnest($13::text[], $14::int[], $15::bigint[], $16::text[], $17::text[], $18::text[],
    $19::bigint[], $20::text[], $21::text[], $22::text[], $23::bigint[], $24::bigint[],
    $25::bigint[], $26::bigint[], $27::bigint[])
    AS u(state, attempt, run_after, node_id, runner_id, lease_token, lease_expires_at,
        waiting_reason, error, result, version, updated_at, started_at, finished_at, seq)
WHERE d.seq = u.seq

-- name: PICK
-- The claim's pick: the oldest claimable jobs (at most `$3`) but those in `$2`, locked, with
-- their apps' placements and last-known runs in the same round trip.
-- The jobs are picked (and locked) alone, so the index on pending jobs stops at the last
-- match; the joins then touch one row. `OFFSET 0` keeps the running-job check a per-row
-- probe of the index on running jobs: as an anti-join, statistics taken while few jobs ran
-- (before a burst of claims) made the planner scan every running job for every pick. The
-- older-pending check stays an anti-join: as a probe, missing statistics led the planner
-- to the pending-jobs index and a scan of it per row. The generic plan guesses that
-- `LIMIT $3` keeps a tenth of the pending jobs, and would hash-join every placement and
-- run against them; `LATERAL … LIMIT 1` keeps those joins one index lookup per picked job.
WITH j AS (
    SELECT * FROM deploy_job c WHERE c.state = 'PENDING' AND c.run_after <= $1
        AND NOT (c.seq = ANY($2))
        AND NOT EXISTS (SELECT 1 FROM deploy_job b
            WHERE b.app_id = c.app_id AND b.state = 'RUNNING' OFFSET 0)
        AND NOT EXISTS (SELECT 1 FROM deploy_job o
            WHERE o.app_id = c.app_id AND o.state = 'PENDING' AND o.seq < c.seq)
    ORDER BY c.seq LIMIT $3 FOR UPDATE SKIP LOCKED
)
SELECT j.*, p.node_id AS placed_node_id, p.memory_mb AS placed_memory_mb,
    p.cpu_millis AS placed_cpu_millis, r.last_job_id AS run_last_job_id, r.state AS run_state,
    r.image AS run_image, r.node_id AS run_node_id, r.url AS run_url, r.error AS run_error,
    r.updated_at AS run_updated_at
FROM j
LEFT JOIN LATERAL (SELECT * FROM runtime_placement p WHERE p.app_id = j.app_id LIMIT 1) p ON TRUE
LEFT JOIN LATERAL (SELECT * FROM app_run r WHERE r.app_id = j.app_id LIMIT 1) r ON TRUE
ORDER BY j.seq

-- name: EXPIRED_JOBS
-- Up to 100 running jobs whose lease ran out, oldest first, locked; those another reaper
-- holds are skipped.
SELECT * FROM deploy_job WHERE state = 'RUNNING' AND lease_expires_at <= $1
ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED

-- name: JOB_COUNTS
-- Jobs per state.
SELECT state, COUNT(*) FROM deploy_job GROUP BY state

-- name: JOB_LOGS
-- A job's log lines, oldest first.
SELECT at, line FROM job_log WHERE job_id = $1 ORDER BY id

-- name: INSERT_EVENT
-- An outbox event.
INSERT INTO outbox_event (event_id, routing_key, body, created_at) VALUES ($1, $2, $3, $4)

-- name: APP_RUN
-- An app's last-known run. A change reads it without a lock: the job's row lock already
-- orders the changes of one app's running job.
SELECT * FROM app_run WHERE app_id = $1

-- name: LOCK_APP_RUN
-- An app's last-known run, about to be replaced.
SELECT * FROM app_run WHERE app_id = $1 FOR UPDATE

-- name: UPSERT_APP_RUN
-- Records an app's last-known run.
INSERT INTO app_run (app_id, last_job_id, state, image, node_id, url, error, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (app_id) DO UPDATE SET last_job_id = EXCLUDED.last_job_id, state = EXCLUDED.state,
    image = EXCLUDED.image, node_id = EXCLUDED.node_id, url = EXCLUDED.url,
    error = EXCLUDED.error, updated_at = EXCLUDED.updated_at

-- name: NODE_PLACED_APPS
-- The apps placed on a node (served by the index on `node_id`): a heartbeat's reported apps
-- outside this list are judged by `queue::displaced`.
SELECT app_id FROM runtime_placement WHERE node_id = $1

-- name: NODE_APP_RUNS
-- The runs of the apps last known `RUNNING` or `SLEEPING` on a node, which its heartbeat may
-- change (served by the index on `(node_id, state)`).
SELECT * FROM app_run WHERE node_id = $1 AND state IN ('RUNNING', 'SLEEPING')

-- name: SET_APP_RUN_STATE
-- An app run's state and error as its node reported them, only while no job changed the run
-- since it was read (same last job, same state): a compare-and-set.
UPDATE app_run SET state = $1, error = $2, updated_at = $3
WHERE app_id = $4 AND last_job_id = $5 AND state = $6

-- name: PLACEMENT
-- An app's placement, locked (a stop removing it).
SELECT app_id, node_id, memory_mb, cpu_millis FROM runtime_placement WHERE app_id = $1 FOR UPDATE

-- name: LIST_PLACEMENTS
-- Every placement, by app.
SELECT app_id, node_id, memory_mb, cpu_millis FROM runtime_placement ORDER BY app_id

-- name: RECORD_PLACEMENT
-- Places an app on a node, replacing its old placement.
INSERT INTO runtime_placement (app_id, node_id, memory_mb, cpu_millis, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (app_id) DO UPDATE SET node_id = EXCLUDED.node_id, memory_mb = EXCLUDED.memory_mb,
    cpu_millis = EXCLUDED.cpu_millis, updated_at = EXCLUDED.updated_at

-- name: DELETE_PLACEMENT
-- Removes an app's placement (its stop succeeded).
DELETE FROM runtime_placement WHERE app_id = $1

-- name: RESERVE
-- Reserves an app's room on a node, only while the node still has it (the guard against two
-- claims filling its last slot). Up to `max_sleeping_apps` of its sleeping apps free their slot
-- of `max_apps` (SPEC §8; the same count as `NodeRecord::counted_apps`).
UPDATE runtime_node SET app_count = app_count + 1, reserved_memory_mb = reserved_memory_mb + $1,
    reserved_cpu_millis = reserved_cpu_millis + $2
WHERE node_id = $3 AND app_count - LEAST(sleeping_apps, max_sleeping_apps, app_count) < max_apps
    AND ($4 = 0 OR reserved_memory_mb + $5 <= memory_mb)
    AND ($6 = 0 OR reserved_cpu_millis + $7 <= ROUND(cpus * 1000))

-- name: RELEASE
-- Gives back what an app reserved on a node.
UPDATE runtime_node SET app_count = app_count - 1, reserved_memory_mb = reserved_memory_mb - $1,
    reserved_cpu_millis = reserved_cpu_millis - $2
WHERE node_id = $3

-- name: LIST_NODES
-- Every node, by id.
SELECT * FROM runtime_node ORDER BY node_id

-- name: NODE
-- One node.
SELECT * FROM runtime_node WHERE node_id = $1

-- name: LOCK_NODE_STATE
-- A node's recorded state and agent address before a heartbeat, locked so two heartbeats send
-- one `node.online` and a moved agent is recorded once.
SELECT state, agent_base_url FROM runtime_node WHERE node_id = $1 FOR UPDATE

-- name: UPSERT_NODE
-- A heartbeat: inserts the node on its first, else refreshes what it reports (with how many of
-- its apps sleep) and marks it `ONLINE`.
INSERT INTO runtime_node (node_id, name, agent_base_url, gateway_base_url, labels, cpus,
    memory_mb, max_apps, reported_apps, version, scheduling, state, last_heartbeat_at,
    max_sleeping_apps, sleeping_apps)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'ACTIVE', 'ONLINE', $11, $12, $13)
ON CONFLICT (node_id) DO UPDATE SET name = EXCLUDED.name,
    agent_base_url = EXCLUDED.agent_base_url, gateway_base_url = EXCLUDED.gateway_base_url,
    labels = EXCLUDED.labels, cpus = EXCLUDED.cpus, memory_mb = EXCLUDED.memory_mb,
    max_apps = EXCLUDED.max_apps, reported_apps = EXCLUDED.reported_apps,
    version = EXCLUDED.version, state = 'ONLINE', last_heartbeat_at = EXCLUDED.last_heartbeat_at,
    max_sleeping_apps = EXCLUDED.max_sleeping_apps, sleeping_apps = EXCLUDED.sleeping_apps

-- name: SET_SCHEDULING
-- Cordons, uncordons or drains a node.
UPDATE runtime_node SET scheduling = $1 WHERE node_id = $2

-- name: STALE_NODES
-- Nodes recorded `ONLINE` whose last heartbeat is older than the cut-off, by id, locked;
-- those another watcher holds are skipped.
SELECT node_id FROM runtime_node WHERE state = 'ONLINE' AND last_heartbeat_at < $1
ORDER BY node_id FOR UPDATE SKIP LOCKED

-- name: SET_OFFLINE
-- Records a node `OFFLINE`.
UPDATE runtime_node SET state = 'OFFLINE' WHERE node_id = $1

-- name: CURRENT_CREDENTIALS
-- The credentials of every node that is neither revoked nor rotating (its previous credential
-- retired): those a control plane that just started may keep from the first heartbeat on.
SELECT * FROM node_credential WHERE revoked_at IS NULL AND previous_hash IS NULL

-- name: CREDENTIALS_CHANGED
-- The nodes whose credential was revoked or rotated at or after the cut-off (the same cut-off
-- bound twice): a control plane forgets the credentials it kept for them (`service::beats`).
-- A scan of the narrow credential table, a few milliseconds at 10,000 nodes.
SELECT node_id FROM node_credential WHERE revoked_at >= $1 OR rotated_at >= $2

-- name: FLUSH_LAST_SEEN
-- A flush of coalesced heartbeats (`service::beats`): one JSON array of `{node_id, at, hash}`
-- moves each node's last heartbeat forward to `at` (never back), only while the node is recorded
-- `ONLINE` and its credential (current or previous) still hashes to `hash` and is not revoked:
-- a revoked, retired or `OFFLINE` node is left as it is, for its next heartbeat to settle.
UPDATE runtime_node n SET last_heartbeat_at = v.at
FROM jsonb_to_recordset($1::jsonb) AS v(node_id text, at bigint, hash text), node_credential c
WHERE n.node_id = v.node_id AND c.node_id = v.node_id AND n.state = 'ONLINE'
  AND n.last_heartbeat_at < v.at AND c.revoked_at IS NULL
  AND (c.credential_hash = v.hash OR c.previous_hash = v.hash)

-- name: STILL_SEEN
-- The nodes of a flush's JSON array that it kept (`ONLINE`, credential good, as in
-- `FLUSH_LAST_SEEN`), with their scheduling: what their coalesced heartbeats answer.
SELECT n.node_id, n.scheduling
FROM jsonb_to_recordset($1::jsonb) AS v(node_id text, at bigint, hash text)
JOIN runtime_node n ON n.node_id = v.node_id JOIN node_credential c ON c.node_id = v.node_id
WHERE n.state = 'ONLINE' AND c.revoked_at IS NULL
  AND (c.credential_hash = v.hash OR c.previous_hash = v.hash)

-- name: PLACED_ON_SEEN
-- The placements on the nodes of a flush's JSON array (by the index on `node_id`): a coalesced
-- heartbeat that reports only these apps has none to remove.
SELECT p.node_id, p.app_id FROM jsonb_to_recordset($1::jsonb) AS v(node_id text)
JOIN runtime_placement p ON p.node_id = v.node_id

-- name: UNPUBLISHED
-- The oldest unpublished events, locked until the relay marks them or drops its batch; those
-- another relay holds are skipped. The partial index on unpublished rows serves it.
SELECT seq, event_id, routing_key, body, created_at FROM outbox_event
WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED

-- name: PRUNE_OUTBOX
-- Deletes a chunk of events published before the cut-off (`$1`), and with `$2` also
-- unpublished ones created before it (`$3`, the same cut-off).
DELETE FROM outbox_event WHERE seq IN (SELECT seq FROM outbox_event
    WHERE (published_at IS NOT NULL AND published_at < $1) OR ($2 AND created_at < $3) LIMIT $4)

-- name: AGENT_MOVED
-- A heartbeat moved a known node's agent to another address: the address before and when.
UPDATE runtime_node SET previous_agent_base_url = $1, agent_url_changed_at = $2 WHERE node_id = $3

-- name: CUT_OFF_NODE
-- A revoked node: `OFFLINE` at once, its last trusted heartbeat moved back past the TTL so no
-- claim places an app on it (placement reads the heartbeat's age).
UPDATE runtime_node SET state = 'OFFLINE', last_heartbeat_at = LEAST(last_heartbeat_at, $1)
WHERE node_id = $2

-- name: CREDENTIAL_BY_HASH
-- The credential a heartbeat presents, by the hash of its current or its previous credential
-- (the same hash bound twice); each hash has its own index.
SELECT * FROM node_credential WHERE credential_hash = $1 OR previous_hash = $2

-- name: LOCK_CREDENTIAL
-- A node's credential a rotation, a revocation or a first use is about to change, locked.
SELECT * FROM node_credential WHERE node_id = $1 FOR UPDATE

-- name: INSERT_CREDENTIAL
-- A node's first credential at join; a unique violation when the node joined before (or a
-- concurrent join won), which the store reports as a conflict.
INSERT INTO node_credential (node_id, credential_hash, previous_hash, created_at, rotated_at,
    revoked_at)
VALUES ($1, $2, $3, $4, $5, $6)

-- name: UPDATE_CREDENTIAL
-- A rotation, a first use after one, or a revocation.
UPDATE node_credential SET credential_hash = $1, previous_hash = $2, rotated_at = $3,
    revoked_at = $4
WHERE node_id = $5

-- name: PRUNABLE_JOBS
-- Up to `$2` jobs that finished before `$1`, oldest first, but those retention keeps whatever
-- their age: each app's last known run (`app_run`) and its newest successful DEPLOY (the spec a
-- redeploy, drain or lost-node move repeats).
SELECT j.job_id FROM deploy_job j
WHERE j.finished_at < $1 AND j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
  AND NOT EXISTS (SELECT 1 FROM app_run r WHERE r.app_id = j.app_id AND r.last_job_id = j.job_id)
  AND (j.kind <> 'DEPLOY' OR j.state <> 'SUCCEEDED' OR EXISTS (SELECT 1 FROM deploy_job n
      WHERE n.app_id = j.app_id AND n.state = 'SUCCEEDED' AND n.kind = 'DEPLOY' AND n.seq > j.seq))
ORDER BY j.finished_at LIMIT $2

-- name: END_ATTEMPT
-- How a job's open attempt ended (a report or a lease expiry): when, its outcome and error.
UPDATE job_attempt SET ended_at = $1, outcome = $2, error = $3
WHERE job_id = $4 AND attempt = $5 AND ended_at IS NULL

-- name: JOB_ATTEMPTS
-- A job's attempts, first first (the timeline).
SELECT attempt, runner_id, node_id, claimed_at, ended_at, outcome, error FROM job_attempt
WHERE job_id = $1 ORDER BY attempt

-- name: ANALYZE_QUEUE
-- Refreshes the planner's statistics of the job table (see `Store::refresh_statistics`).
ANALYZE deploy_job
