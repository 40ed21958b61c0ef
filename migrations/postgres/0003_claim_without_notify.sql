-- A claim (`job.running`) no longer NOTIFYs. A transaction that notifies takes one lock for
-- the whole database at commit and holds it through the WAL flush, so every claim committed
-- one after another; claims are the busiest writes. Nothing waits for `job.running` to find
-- work: waiting claims wake on new and freed jobs. `?wait=` readers on other replicas see a
-- claim at their next re-read (at most a second later); on the replica that made the claim, and
-- everywhere when RabbitMQ carries the wake-ups, they still wake at once.
DROP TRIGGER outbox_event_notify ON outbox_event;

CREATE TRIGGER outbox_event_notify AFTER INSERT ON outbox_event
    FOR EACH ROW WHEN (NEW.routing_key <> 'job.running')
    EXECUTE FUNCTION berth_outbox_notify();
