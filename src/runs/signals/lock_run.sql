-- Locks the run $1 for a signal or a wait; returns its status, whether the owner $2
-- (NULL: no fence) holds the lease, its name, whether it is parked (no owner), and its
-- unresolved wait. Whether $2 holds the lease is the condition of runs/guard/lock_run.sql,
-- which explains it.
SELECT status,
       $2::text IS NULL OR (owner = $2 AND lease_expires_at > clock_timestamp()) AS holds_lease,
       name,
       owner IS NULL AS parked,
       wait_step,
       wait_signal,
       wait_deadline <= clock_timestamp() AS wait_timed_out
  FROM workflow.runs
 WHERE id = $1
   FOR NO KEY UPDATE;
