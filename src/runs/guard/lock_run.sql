-- Locks the run $1 for the rest of the transaction, as a checkpoint does; returns its
-- status, and whether the owner $2 holds its lease.
--
-- No owner named means no fence. An expired lease is held by no one, even before a claim
-- (G7). Leases are measured on the wall clock, not the statement's start: a recovery loop
-- in a procedure, or a long transaction, must see a lease expire while it runs.
--
-- The same condition is written in runs/guard/read_lease.sql, runs/signals/lock_run.sql,
-- runs/finish/finish.sql, api/workflows/heartbeat.sql, api/workflows/release.sql and
-- api/workflows/checkpoint.sql: change them together.
SELECT status,
       $2::text IS NULL OR (owner = $2 AND lease_expires_at > clock_timestamp()) AS holds_lease
  FROM workflow.runs
 WHERE id = $1
   FOR NO KEY UPDATE;
