-- Releases the lease of the run $1 held by the owner $2 (NULL: no fence): no owner, ready
-- now (a parked run's readiness, which no claim counts as a recovery). Returns the run's
-- name.
UPDATE workflow.runs
   SET owner = NULL, session_pid = NULL, session_started = NULL,
       lease_expires_at = clock_timestamp(), updated_at = statement_timestamp()
 WHERE id = $1 AND status = 'running' AND owner IS NOT NULL
   -- The owner $2 (NULL: no fence) holds the lease: the condition of
   -- runs/guard/lock_run.sql, which explains it.
   AND ($2::text IS NULL OR (owner = $2 AND lease_expires_at > clock_timestamp()))
RETURNING name;
