-- The inbox's BRIN index asked for a summary of each new block range
-- (autosummarize): where autovacuum is off nobody takes the request, and
-- the server logged a line for each one, with its statement, every couple
-- of seconds. A vacuum summarizes the new ranges instead (autovacuum's, or
-- the services' own where autovacuum is off); a range not yet summarized
-- is read by the purge, never skipped.
ALTER INDEX inbox_received_at SET (autosummarize = off);
