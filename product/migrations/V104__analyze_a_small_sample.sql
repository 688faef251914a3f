-- Analyze the reservations from a small sample. ANALYZE reads 300 rows per
-- point of a column's statistics target (100 by default: 30,000 rows, on
-- a table of millions 30,000 pages all over it, long written out): on
-- 5.6 million reservations the services' `VACUUM (ANALYZE) reservations`
-- ran 8 s, reading those pages back while commits waited on the WAL
-- (soak of 2026-12-07, minute 28: p99 310 ms). Reservations are read by
-- order id only (the primary key) and summed whole by the invariant
-- check; no plan needs finer statistics than 3,000 rows give, and the row
-- count the planner uses comes from every VACUUM anyway.
ALTER TABLE reservations
    ALTER COLUMN order_id SET STATISTICS 10,
    ALTER COLUMN message_id SET STATISTICS 10,
    ALTER COLUMN status SET STATISTICS 10,
    ALTER COLUMN reason SET STATISTICS 10,
    ALTER COLUMN items SET STATISTICS 10,
    ALTER COLUMN decided_at SET STATISTICS 10,
    ALTER COLUMN product_id SET STATISTICS 10;
