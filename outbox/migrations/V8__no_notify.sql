-- Relays are no longer woken by NOTIFY. A NOTIFY is paid by every
-- transaction that inserts into the outbox, needed or not: its commit
-- takes a lock that serialises the notifying commits of the whole server
-- (every database) and writes to the notification queue, and each
-- listening session is woken to pass it on. At 1,000 orders/s that was
-- about 8% of the pipeline's CPU per order, for a relay that was busy
-- anyway. Rows committed in a relay's own process wake it there
-- (`outbox::relay::wake`); rows from other processes are found by polling.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
