-- Renews the lease of the run $1 held by the owner $2 (NULL: no fence), for $3 or the
-- run's lease duration; returns the new expiry. A parked run (no owner) has none to renew.
UPDATE workflow.runs
   SET lease_expires_at = clock_timestamp() + COALESCE($3, lease_duration),
       updated_at = statement_timestamp()
 WHERE id = $1 AND status = 'running' AND owner IS NOT NULL
   -- The owner $2 (NULL: no fence) holds the lease: the condition of
   -- runs/guard/lock_run.sql, which explains it.
   AND ($2::text IS NULL OR (owner = $2 AND lease_expires_at > clock_timestamp()))
RETURNING lease_expires_at;
