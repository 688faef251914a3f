-- Only orders placed with an Idempotency-Key are in its unique index. As a
-- plain UNIQUE constraint every order (key NULL) had an entry, written
-- twice per order: when placed and again when its status changed (that
-- update is not HOT: orders_by_status holds the status). Lookups by key
-- (`idempotency_key = $1`) imply NOT NULL, so they use this index.
ALTER TABLE orders DROP CONSTRAINT orders_idempotency_key;
CREATE UNIQUE INDEX orders_idempotency_key ON orders (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
