-- What operators did to what the consumers get: `outbox replay`, `outbox
-- dead-letters requeue` and `purge`, each recorded when it changes
-- something (a dry run records nothing), in the same transaction as the
-- change where there is one (requeue, purge). Who: the database role
-- that ran it and the tool's own account (OS user and host), as the tool
-- says it. Only appended; an operator reads it with `outbox actions`.
CREATE TABLE operator_actions (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    action     text        NOT NULL CHECK (action IN ('replay', 'requeue', 'purge')),
    -- The selection as the operator gave it (`--type order.created`, …).
    selection  text        NOT NULL,
    -- Rows it touched: events sent, dead letters requeued or deleted.
    rows       bigint      NOT NULL CHECK (rows >= 0),
    by_role    text        NOT NULL DEFAULT current_user,
    by_account text        NOT NULL
);
