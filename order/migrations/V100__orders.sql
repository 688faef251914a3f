-- Orders. Ids are UUIDv7, made by the writer: time-ordered (pages come in
-- creation order, index inserts stay at the right edge) and known before
-- the insert, so a batch needs no round trip to learn them.
CREATE TABLE orders (
    id               uuid        PRIMARY KEY,
    status           text        NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED')),
    reason           text,
    total            bigint      NOT NULL CHECK (total >= 0),
    -- A retried Idempotency-Key finds its first order here.
    idempotency_key  text        CONSTRAINT orders_idempotency_key UNIQUE,
    -- The request in canonical form, to tell a retry from a different body.
    fingerprint      text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz
);
CREATE INDEX orders_by_status ON orders (status, id);

-- No foreign key to orders: the writer inserts an order's items in the
-- same transaction as the order, and the per-row check cost measurably
-- (order_items was the costliest insert of a batch).
CREATE TABLE order_items (
    order_id    uuid    NOT NULL,
    product_id  bigint  NOT NULL,
    quantity    integer NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price  bigint  NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, product_id)
);

-- The order service's copy of the product catalogue: what it needs to
-- price an order and to know a product exists. Fed by product.upserted /
-- product.deleted; `version` keeps an older event from overwriting a newer.
CREATE TABLE product_replica (
    id          bigint      PRIMARY KEY,
    name        text        NOT NULL,
    price       bigint      NOT NULL,
    version     bigint      NOT NULL,
    deleted     boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
