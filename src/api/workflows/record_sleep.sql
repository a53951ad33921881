-- Records the sleep step $2 of the run $1 until $3, releases the lease and makes the run
-- claimable from $3; a step recorded before (a replay) writes nothing. Returns the run's
-- name if the sleep is over already (the run is ready now).
WITH new_step AS (
    INSERT INTO workflow.checkpoints (workflow_id, step, output)
    VALUES ($1, $2, jsonb_build_object('sleep_until', $3::timestamptz))
    ON CONFLICT (workflow_id, step) DO NOTHING
    RETURNING output)
UPDATE workflow.runs
   SET owner = NULL, session_pid = NULL, session_started = NULL, lease_expires_at = $3,
       updated_at = statement_timestamp()
 WHERE id = $1 AND EXISTS (SELECT FROM new_step)
RETURNING CASE WHEN $3 <= clock_timestamp() THEN name END;
