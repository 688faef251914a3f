-- Vacuum the tables that grow with every order a little and often. By
-- default a table is vacuumed once a fifth of its rows are new (or dead):
-- on two million orders that is the pages of 400,000 orders at once, long
-- written out by then, read back, marked all-visible and written out
-- again in one go, which stalled commits in the soak (p99 of the minute
-- 74-108 ms while orders, order_items and reservations were vacuumed).
-- With a fixed threshold a vacuum covers the last few thousand orders'
-- pages, most still in shared buffers. Autovacuum reads these storage
-- parameters; so does the services' fallback when it is off.
ALTER TABLE orders SET (
    autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0);
ALTER TABLE order_items SET (
    autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0);
