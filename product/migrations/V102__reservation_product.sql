-- The first product that could not be served, for a rejected order: with
-- it, a verdict can be sent again as it was decided (a duplicate or a
-- re-driven order.created is answered with the recorded verdict).
ALTER TABLE reservations ADD COLUMN product_id bigint;
