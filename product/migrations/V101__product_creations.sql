-- Creations by the caller's Idempotency-Key: a retried POST /products
-- finds the product its key created instead of creating a second one. The
-- key outlives the product, so a retry after a delete is told it is gone.
CREATE TABLE product_creations (
    idempotency_key  text        PRIMARY KEY,
    product_id       bigint      NOT NULL,
    -- The request in canonical form, to tell a retry from another body.
    fingerprint      text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
