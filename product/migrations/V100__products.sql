-- Products. `version` grows with every change of the row (including stock
-- changes), so caches and replicas can refuse to go backwards.
CREATE TABLE products (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CONSTRAINT products_name_length CHECK (char_length(name) BETWEEN 1 AND 199),
    price       bigint      NOT NULL CONSTRAINT products_price_range CHECK (price >= 0),
    -- Never negative, whatever a bug upstream tries.
    stock       bigint      NOT NULL CONSTRAINT products_stock_range CHECK (stock >= 0 AND stock <= 1000000000),
    version     bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One verdict per order: the audit trail of the stock loop, and what the
-- invariant check sums (initial stock - reserved quantities = stock).
CREATE TABLE reservations (
    order_id    uuid        PRIMARY KEY,
    message_id  uuid        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('reserved', 'rejected')),
    reason      text,
    items       jsonb       NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now()
);

-- Restocks and corrections, idempotent by the caller's key.
CREATE TABLE stock_adjustments (
    idempotency_key  text        PRIMARY KEY,
    product_id       bigint      NOT NULL,
    delta            bigint      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
