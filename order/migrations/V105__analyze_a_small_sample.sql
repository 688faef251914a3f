-- Analyze the tables that grow with every order from a small sample, as
-- the product service does its reservations (product/migrations/
-- V104__analyze_a_small_sample.sql says why: a default ANALYZE of a table
-- of millions reads 30,000 of its pages back). Orders are read by id, by
-- idempotency key and by redrive time, each through its own index, and
-- their items by order id; 3,000 sampled rows are plenty for those plans.
ALTER TABLE orders
    ALTER COLUMN id SET STATISTICS 10,
    ALTER COLUMN status SET STATISTICS 10,
    ALTER COLUMN reason SET STATISTICS 10,
    ALTER COLUMN total SET STATISTICS 10,
    ALTER COLUMN idempotency_key SET STATISTICS 10,
    ALTER COLUMN fingerprint SET STATISTICS 10,
    ALTER COLUMN created_at SET STATISTICS 10,
    ALTER COLUMN decided_at SET STATISTICS 10,
    ALTER COLUMN redrives SET STATISTICS 10,
    ALTER COLUMN redrive_at SET STATISTICS 10;
ALTER TABLE order_items
    ALTER COLUMN order_id SET STATISTICS 10,
    ALTER COLUMN product_id SET STATISTICS 10,
    ALTER COLUMN quantity SET STATISTICS 10,
    ALTER COLUMN unit_price SET STATISTICS 10;
