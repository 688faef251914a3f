-- Vacuum the reservations a little and often, as the order service does
-- its orders (order/migrations/V104__vacuum_in_small_steps.sql says why).
ALTER TABLE reservations SET (
    autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0);
