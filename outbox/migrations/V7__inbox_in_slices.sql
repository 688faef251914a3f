-- The inbox expires as the outbox does, by dropping whole time partitions,
-- not by deleting rows one by one (each delete left a dead row and dead
-- index entries for a vacuum to chase, as many as there were events).
--
-- An event id made by this library is a UUIDv7: its first 48 bits are the
-- milliseconds of its making, so ids sort by time and the inbox can be
-- partitioned by the id itself, which keeps the primary key (a unique key
-- of a partitioned table must hold its partition key) and every
-- `ON CONFLICT (message_id)` as they were. The service makes the slices
-- ahead and drops those past the inbox window (`crate::partitions`).
--
-- Ids that carry no time (any other UUID version, from a producer of its
-- own) and ids older than the oldest slice (a dead letter requeued weeks
-- later) go to `inbox_untimed`, purged row by row after the window as the
-- whole inbox used to be: rare rows. `inbox_horizon` says where the slices
-- begin; the upkeep moves it up before it drops a slice, so no insert is
-- ever routed to a slice that is going.
--
-- Upgrading keeps what the inbox held: the old table becomes
-- `inbox_untimed`, and every id is looked up there as well until those
-- rows leave with the window. Consumers of the previous release that
-- dedupe by the inbox must stop before this runs: their inserts go to the
-- parent, where an id with no time in it finds no partition.

ALTER TABLE inbox RENAME TO inbox_untimed;
ALTER TABLE inbox_untimed RENAME CONSTRAINT inbox_pkey TO inbox_untimed_pkey;
ALTER INDEX inbox_received_at RENAME TO inbox_untimed_received_at;

CREATE TABLE inbox (
    message_id   uuid        PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (message_id);

-- One row: the first id the time slices hold.
CREATE TABLE inbox_horizon (
    one          boolean     PRIMARY KEY DEFAULT true CHECK (one),
    timed_from   uuid        NOT NULL
);

-- The slices' bound for a minute: its milliseconds in the first 48 bits,
-- every other bit zero (below every id of that minute).
DO $$
DECLARE
    start timestamptz := date_trunc('minute', now());
    bound_of text := 'SELECT regexp_replace(lpad(to_hex((extract(epoch FROM $1) * 1000)::int8), 12, ''0''), '
        '''^(.{8})(.{4})$'', ''\1-\2-0000-0000-000000000000'')::uuid';
    lower uuid;
    upper uuid;
BEGIN
    EXECUTE bound_of INTO lower USING start;
    EXECUTE bound_of INTO upper USING start + interval '10 minutes';
    INSERT INTO inbox_horizon (timed_from) VALUES (lower);
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF inbox FOR VALUES FROM (%L) TO (%L)',
        'inbox_' || to_char(start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI'), lower, upper);
END
$$;
