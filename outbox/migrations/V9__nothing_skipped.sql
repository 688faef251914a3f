-- Nothing skipped. A snapshot's in-progress list holds only transactions
-- below its xmax, and its xmax is one past the latest *completed*
-- transaction id: a transaction that took its id after that is running,
-- invisible to the snapshot, and absent from its list. The relay's cursor
-- kept such a snapshot, so a row of such a transaction with an id below
-- the cursor's was never read: skipped for good. Closed here, and argued
-- in docs/ARCHITECTURE.md ("Nothing skipped"):
--
-- 1. A writer takes its transaction id before its row id, whatever else
--    it wrote first: the id's default asks for the transaction id, then
--    numbers the row (a CASE evaluates its condition first). A row below
--    a cursor was then numbered before the row the cursor was released at,
--    which committed before the cursor's snapshot was taken: the row's
--    transaction id was taken before that snapshot too.
-- 2. The relay keeps, for each claim partition, a snapshot that sees
--    what its read saw and lists every transaction id below the reader's
--    own (taken after the read's snapshot) that the read did not see
--    (`outbox::relay::snapshot`): every transaction that may still hold a
--    row below the cursor is in the list, and is looked up by it.
-- 3. Rows are stamped with the start of their statement, not of their
--    transaction: an old transaction writes into the current time
--    partition, never into one the upkeep is dropping.
--
-- The cursor's table is renamed: a relay of an earlier release (which
-- would go on keeping incomplete snapshots) fails every batch from now on,
-- loudly, instead of skipping; stop it and start this release's.

CREATE FUNCTION outbox_next_id() RETURNS bigint LANGUAGE sql VOLATILE
    RETURN CASE WHEN pg_current_xact_id() IS NOT NULL THEN nextval('outbox_row_id') END;
COMMENT ON FUNCTION outbox_next_id() IS
    'The next outbox row id, taken after the transaction id (the relay''s cursor relies on that order).';

-- ACCESS EXCLUSIVE on the outbox until this migration commits: every
-- transaction that wrote into it has ended (committed or rolled back)
-- before what follows reads it, and none writes until it commits.
ALTER TABLE outbox ALTER COLUMN id SET DEFAULT outbox_next_id();
ALTER TABLE outbox ALTER COLUMN created_at SET DEFAULT statement_timestamp();

ALTER TABLE outbox_cursor RENAME TO outbox_relay_cursor;

-- The cursors as an earlier release left them: every writer has ended
-- (the lock above), so a row below a cursor that its snapshot does not
-- see is there to find now. Listing the transactions of those rows makes
-- the snapshots complete: rows an earlier release would have skipped
-- under the current cursors are sent as late rows (rows skipped under
-- cursors since moved on need a replay: docs/OPERATIONS.md).
UPDATE outbox_relay_cursor SET released_snapshot = ARRAY(
    SELECT (pg_snapshot_xmin(c.released_snapshot)::text || ':'
            || GREATEST(pg_snapshot_xmax(c.released_snapshot)::text::int8,
                        COALESCE(listed.top + 1, 0))::text || ':'
            || COALESCE(listed.ids, ''))::pg_snapshot
    FROM outbox_partition_cursor c
    CROSS JOIN LATERAL (
        SELECT max(l.x::text::int8) AS top, string_agg(l.x::text, ',' ORDER BY l.x) AS ids
        FROM (SELECT pg_snapshot_xip(c.released_snapshot) AS x
              UNION
              SELECT o.xid FROM outbox o
              WHERE o.partition = c.partition AND o.id <= c.released_id
                AND o.xid >= pg_snapshot_xmax(c.released_snapshot)) l) listed
    ORDER BY c.partition);

-- Made again from the library's one definition of "still to come"
-- (`outbox::unsent`) after every migration run.
DROP VIEW outbox_pending;
