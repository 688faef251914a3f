-- An order's status changes once, from PENDING to its verdict. With no
-- index on the status, that change is a HOT update: the new row version
-- stays on its page and no index entry is written (through the status
-- index it wrote two, and left a dead one for vacuum). Pages keep room
-- for it (fillfactor; pruning frees the old versions as pages are read).
--
-- Without that index, the re-drive finds orders left PENDING two ways: a
-- sweep from a low-water mark (every order before it is decided or was
-- re-driven at least once) up to orders old enough, by primary key; and,
-- for those re-driven before, the partial index on redrive_at, which the
-- status change does not touch.
CREATE TABLE order_redrive_cursor (
    single  boolean PRIMARY KEY DEFAULT true CHECK (single),
    low     uuid    NOT NULL
);
INSERT INTO order_redrive_cursor (low)
SELECT COALESCE(
    (SELECT id FROM orders WHERE status = 'PENDING' ORDER BY id LIMIT 1),
    '00000000-0000-0000-0000-000000000000');

DROP INDEX orders_by_status;
CREATE INDEX orders_redriven ON orders (redrive_at) WHERE redrive_at IS NOT NULL;
ALTER TABLE orders SET (fillfactor = 70);
