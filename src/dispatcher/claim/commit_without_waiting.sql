-- Lets the current transaction's commit return before its WAL reaches disk.
--
-- For a transaction that only claims. If a crash loses its commit, its messages are due
-- and unleased again and are sent again at once: the at-least-once path of a lease that
-- runs out, a lease sooner (G2: a request in flight during a crash may be repeated). The
-- commit becomes durable with the next one that is waited for, since WAL is flushed in
-- order: the record of its outcomes at the latest. Recording always waits: a delivered
-- message must not turn pending, nor a durable step's checkpoint vanish, once seen.
SELECT pg_catalog.set_config('synchronous_commit', 'off', true);
