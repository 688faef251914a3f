-- Orders belong to the caller that placed them: the issuer and subject of
-- its access token. Orders placed before keep no owner; only a caller
-- allowed to read every order (orders.read_all) sees them. Adding the
-- columns rewrites nothing (no default); the check is NOT VALID so that
-- it reads no old row, and holds for every new one. IF NOT EXISTS: an
-- operator may have added the columns and built the indexes beforehand
-- (docs/OPERATIONS.md, "Upgrading to orders that belong to their caller").
ALTER TABLE orders
    ADD COLUMN IF NOT EXISTS owner_issuer text,
    ADD COLUMN IF NOT EXISTS owner_subject text,
    ADD CONSTRAINT orders_owner_whole
        CHECK ((owner_issuer IS NULL) = (owner_subject IS NULL)) NOT VALID;

-- A caller's orders, a page at a time in id (creation) order. The subject
-- alone: an issuer's name repeated in every entry would double the index,
-- and the rare subject two issuers share is told apart by the heap row.
-- The owner never changes, so the status change stays a HOT update.
--
-- On a large table this and the next index take a few seconds during
-- which orders wait; docs/OPERATIONS.md builds them CONCURRENTLY
-- beforehand, and IF NOT EXISTS then skips them.
CREATE INDEX IF NOT EXISTS orders_by_owner ON orders (owner_subject, id);

-- An Idempotency-Key is the caller's own: two callers may use the same
-- key. Old orders (no owner) keep their keys unique among themselves
-- (NULLS NOT DISTINCT). The order writer's ON CONFLICT names exactly
-- these columns and this predicate.
CREATE UNIQUE INDEX IF NOT EXISTS orders_idempotency_key_per_owner
    ON orders (owner_issuer, owner_subject, idempotency_key) NULLS NOT DISTINCT
    WHERE idempotency_key IS NOT NULL;
DROP INDEX IF EXISTS orders_idempotency_key;

ALTER TABLE orders
    ALTER COLUMN owner_issuer SET STATISTICS 10,
    ALTER COLUMN owner_subject SET STATISTICS 10;
