-- The transactional outbox: events written in the same transaction as the
-- state change they describe, sent to the broker by the relay.
CREATE TABLE outbox (
    -- Commit order per aggregate: writers of one aggregate serialise on its
    -- row, so a later event of the same aggregate gets a larger id.
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    uuid        NOT NULL UNIQUE,
    aggregate_id  text        NOT NULL,
    -- hash(aggregate_id) % 16: a relay claims whole partitions, so events
    -- of one aggregate are never sent by two relays at once.
    partition     smallint    NOT NULL CHECK (partition >= 0 AND partition < 16),
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    -- Refusals by the broker (nacks, unroutable, oversized).
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text,
    -- Set when the row was refused too often: out of the relay's way, kept
    -- for `outbox stats` and `outbox replay`.
    set_aside_at  timestamptz
);

-- The relay's scan touches only rows still to send; it stays small however
-- large the table grows.
CREATE INDEX outbox_pending ON outbox (partition, id)
    WHERE published_at IS NULL AND set_aside_at IS NULL;
CREATE INDEX outbox_set_aside ON outbox (id) WHERE set_aside_at IS NOT NULL;
-- Time filters of replay, stats and retention: created_at grows with id,
-- so a BRIN index is tiny and cheap to keep up to date; autosummarize keeps
-- new block ranges from matching every query.
CREATE INDEX outbox_created_at ON outbox USING brin (created_at) WITH (autosummarize = on);

-- One row per partition; a relay holds the row locks of the partitions it
-- is sending for the length of its batch transaction.
CREATE TABLE outbox_partition (partition smallint PRIMARY KEY);
INSERT INTO outbox_partition SELECT generate_series(0, 15);

-- Wakes relays when rows arrive; they also poll, so a lost notification
-- only delays.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- The idempotent inbox: a message id recorded in the same transaction as
-- its effect. A redelivered message finds its id here and changes nothing.
CREATE TABLE inbox (
    message_id   uuid        PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_received_at ON inbox USING brin (received_at) WITH (autosummarize = on);
