-- Dead letters: events this service's consumers could never apply, with
-- why. The consumer writes them (its reason: undecodable, poison, refused
-- by the store); a drain moves here what the broker dead-lettered on its
-- own (delivery limit reached), with the broker's reason. Listing is a
-- query; a requeue goes out through the outbox.
CREATE TABLE dead_letters (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The work queue it came from, and goes back to on a requeue.
    queue         text        NOT NULL,
    -- The event's own id and type; NULL when the body is not an event.
    message_id    uuid,
    event_type    text,
    aggregate_id  text,
    -- The event envelope as JSON, or the raw body as text.
    body          text        NOT NULL,
    reason        text        NOT NULL,
    -- Who dead-lettered it: 'consumer' or 'broker'.
    source        text        NOT NULL CHECK (source IN ('consumer', 'broker')),
    -- Times dead-lettered (again after a requeue, or redelivered before
    -- its ack), first and last time.
    count         integer     NOT NULL DEFAULT 1,
    first_at      timestamptz NOT NULL DEFAULT now(),
    last_at       timestamptz NOT NULL DEFAULT now(),
    -- Set when an operator sent it back to its queue.
    requeued_at   timestamptz
);
-- One row per event and queue: dead-lettered again, it counts up.
CREATE UNIQUE INDEX dead_letters_event ON dead_letters (queue, message_id)
    WHERE message_id IS NOT NULL;

-- A row meant for one queue only (a requeued dead letter) goes there
-- through the default exchange instead of to the outbox's exchange.
ALTER TABLE outbox ADD COLUMN queue text;
