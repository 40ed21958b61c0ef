-- The notification names the job its event is about (`job.cancelled <jobId>`; a node's events
-- keep the routing key alone), so a replica rings only that job's watch: before, every
-- notification made each replica read every job it had watchers for, and 10,000 watched jobs
-- cost 10,000 reads per change.
CREATE OR REPLACE FUNCTION berth_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_events', concat_ws(' ', NEW.routing_key, NEW.body::json ->> 'jobId'));
    RETURN NULL;
END
$$;
