-- Locks up to $2 ready runs of the name $1 (a lease that expired, a sleep that ended, a
-- wait that was answered or timed out), oldest expiry first, skipping the runs another
-- claimer holds locked; hand_out.sql then hands them out.
SELECT id
  FROM workflow.runs
 WHERE name = $1 AND (status = 'running') IS TRUE
   AND lease_expires_at <= (SELECT clock_timestamp())
 ORDER BY lease_expires_at
 LIMIT $2
   FOR NO KEY UPDATE SKIP LOCKED;
