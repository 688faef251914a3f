-- Re-drives of orders left PENDING: how many times this order's
-- order.created was sent again, and when it is due next (NULL: not yet
-- re-driven; due ORDER_REDRIVE_AFTER_SECS after it was placed). The scan
-- reads pending orders in id order through orders_by_status.
ALTER TABLE orders
    ADD COLUMN redrives integer NOT NULL DEFAULT 0,
    ADD COLUMN redrive_at timestamptz;
