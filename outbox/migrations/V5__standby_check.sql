-- One row that relays (and the order writer) update to make a commit that
-- must come back from a synchronous standby before they go on: its record
-- follows every commit they saw, so once it returns the standby has those
-- too (outbox::standby). A transaction that writes nothing, or takes only
-- a transaction id, commits without waiting for a standby.
CREATE TABLE outbox_standby_check (
    id int PRIMARY KEY CHECK (id = 1),
    checked_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outbox_standby_check (id) VALUES (1);
