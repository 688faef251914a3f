-- The outbox becomes append-only: a row is written once, in the writer's
-- transaction, and never updated. The relay keeps how far it got per claim
-- partition (outbox_cursor: one small update per batch) instead of
-- marking every row published, and rows
-- leave by whole time partitions, dropped past the retention window:
-- nothing is left for a vacuum to chase. Rows the broker refused live
-- beside the table (outbox_refused), with their attempts and, once they
-- were refused too often, as set aside.
--
-- Upgrading keeps the rows still to send and those set aside; the history
-- already published leaves with the old table.

ALTER TABLE outbox RENAME TO outbox_v2;
DROP TRIGGER outbox_notify ON outbox_v2;

-- Ids come from a sequence (a partitioned table takes no identity column
-- on PostgreSQL 15), one at a time (CACHE 1): an id is taken when its row
-- is inserted, so ids grow with the time of the insert across sessions,
-- which the relay's cursor relies on.
CREATE SEQUENCE outbox_row_id AS bigint CACHE 1;
SELECT setval('outbox_row_id', COALESCE((SELECT max(id) FROM outbox_v2), 0) + 1, false);

CREATE TABLE outbox (
    -- Insert order. Within an aggregate it is also commit order: writers
    -- of one aggregate serialise on its row, so a later event of the same
    -- aggregate is inserted, and numbered, after the earlier one committed.
    id            bigint      NOT NULL DEFAULT nextval('outbox_row_id'),
    message_id    uuid        NOT NULL,
    aggregate_id  text        NOT NULL,
    -- hash(aggregate_id) % 16: a relay claims whole partitions, so events
    -- of one aggregate are never sent by two relays at once.
    partition     smallint    NOT NULL CHECK (partition >= 0 AND partition < 16),
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The one queue it is for (a requeued dead letter), if any.
    queue         text,
    -- The writing transaction: which rows a snapshot saw committed.
    xid           xid8        NOT NULL DEFAULT pg_current_xact_id()
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE outbox_row_id OWNED BY outbox.id;

-- The relay reads new rows in id order from where it got to, and the rows
-- of transactions that were still running when it last looked, by xid.
-- Replay reads by id too. Nothing else is indexed: two entries per row.
CREATE INDEX outbox_by_id ON outbox (id);
CREATE INDEX outbox_by_xid ON outbox (xid);

-- What came before this migration, and its first minutes; the service
-- creates the partitions after these ahead of time, and drops them once
-- past the retention window and fully sent.
DO $$
DECLARE
    start timestamptz := date_trunc('minute', now());
BEGIN
    EXECUTE format(
        'CREATE TABLE outbox_before_v3 PARTITION OF outbox FOR VALUES FROM (MINVALUE) TO (%L)',
        start);
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF outbox FOR VALUES FROM (%L) TO (%L)',
        'outbox_' || to_char(start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI'),
        start, start + interval '10 minutes');
END
$$;

INSERT INTO outbox (id, message_id, aggregate_id, partition, event_type, payload, created_at, queue)
SELECT id, message_id, aggregate_id, partition, event_type, payload, created_at, queue
FROM outbox_v2
WHERE published_at IS NULL AND set_aside_at IS NULL
ORDER BY id;

-- Rows the broker refused: a copy of the row, kept until it is sent (then
-- deleted: refusals are rare) or, once refused max_attempts times, set
-- aside for an operator (`outbox stats`, `outbox replay`). A copy, so that
-- dropping the row's time partition never loses it.
CREATE TABLE outbox_refused (
    id            bigint      PRIMARY KEY,
    message_id    uuid        NOT NULL,
    aggregate_id  text        NOT NULL,
    partition     smallint    NOT NULL,
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL,
    queue         text,
    attempts      integer     NOT NULL,
    last_error    text,
    set_aside_at  timestamptz
);
CREATE INDEX outbox_refused_retry ON outbox_refused (partition, id) WHERE set_aside_at IS NULL;

INSERT INTO outbox_refused (id, message_id, aggregate_id, partition, event_type, payload,
                            created_at, queue, attempts, last_error, set_aside_at)
SELECT id, message_id, aggregate_id, partition, event_type, payload, created_at, queue,
       attempts, last_error, set_aside_at
FROM outbox_v2
WHERE set_aside_at IS NOT NULL;

DROP TABLE outbox_v2;

-- How far the relay got in each claim partition (index partition + 1):
-- every row with an id up to released_id has been sent, except rows of
-- the transactions that were still running in released_snapshot (they
-- may hold smaller ids and commit later: the relay looks them up by xid).
-- One row for all sixteen, so that a batch costs one update (HOT: its
-- columns are not indexed) whichever partitions it sent. Relays claim
-- partitions with transaction-level advisory locks, which write no WAL
-- (the row locks on outbox_partition wrote one record each per batch).
DROP TABLE outbox_partition;
CREATE TABLE outbox_cursor (
    single             boolean     PRIMARY KEY DEFAULT true CHECK (single),
    released_snapshot  pg_snapshot[] NOT NULL,
    released_id        bigint[]    NOT NULL
);
INSERT INTO outbox_cursor (released_snapshot, released_id)
SELECT array_agg(pg_current_snapshot()), array_agg(0::bigint) FROM generate_series(0, 15);

-- The cursor of each claim partition, as rows.
CREATE VIEW outbox_partition_cursor AS
    SELECT p::smallint AS partition, c.released_snapshot[p + 1] AS released_snapshot,
           c.released_id[p + 1] AS released_id
    FROM outbox_cursor c, generate_series(0, 15) p;

-- Rows still to send: not yet released by the relay's cursor (new ones,
-- and committed rows of transactions the cursor saw running), and refused
-- ones waiting for their next attempt. `outbox stats`, the relay's gauges
-- and the tests read it.
CREATE VIEW outbox_pending AS
    SELECT o.id, o.message_id, o.aggregate_id, o.partition, o.event_type, o.payload,
           o.created_at, o.queue
    FROM outbox o JOIN outbox_partition_cursor c ON c.partition = o.partition
    WHERE o.id > (SELECT min(id) FROM outbox_cursor, unnest(released_id) id)
      AND o.id > c.released_id
    UNION ALL
    SELECT o.id, o.message_id, o.aggregate_id, o.partition, o.event_type, o.payload,
           o.created_at, o.queue
    -- Found by xid alone (the index), among every cursor's running
    -- transactions (OFFSET 0: not through the id index, which would read
    -- every row below the cursors); then the row's own partition decides.
    FROM (SELECT * FROM outbox
          WHERE xid = ANY (ARRAY(SELECT pg_snapshot_xip(released_snapshot)
                                 FROM outbox_partition_cursor))
          OFFSET 0) o
    JOIN outbox_partition_cursor c ON c.partition = o.partition
    WHERE o.xid IN (SELECT pg_snapshot_xip(c.released_snapshot))
      AND o.id <= c.released_id
    UNION ALL
    SELECT r.id, r.message_id, r.aggregate_id, r.partition, r.event_type, r.payload,
           r.created_at, r.queue
    FROM outbox_refused r
    WHERE r.set_aside_at IS NULL;

-- Wakes relays when rows arrive; they also poll, so a lost notification
-- only delays.
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
