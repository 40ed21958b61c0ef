-- Wake-ups across control-plane replicas without a broker: every outbox insert notifies the
-- channel `berth_events` with its routing key, delivered when the transaction commits (and
-- collapsed to one per key and transaction). Replicas LISTEN and wake their waiting claims and
-- `?wait=` readers.
CREATE FUNCTION berth_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_events', NEW.routing_key);
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_event_notify AFTER INSERT ON outbox_event
    FOR EACH ROW EXECUTE FUNCTION berth_outbox_notify();

-- The relay's prune of published rows.
CREATE INDEX outbox_event_published ON outbox_event (published_at) WHERE published_at IS NOT NULL;
